"""Fault injection on the command line: bad flags, kill -9 at seeded random moments, a full
disk, read-only folders, two writers at once, corrupted checkpoints and files in the way.

Each numbered finding of issue 15 has its test here (named in the docstrings). What every
case asserts: exit code 2 with one line on stderr and no traceback, or the correct result;
never a silently wrong result, never a lost or overwritten file. Costs are kept down by one
finished lm_tiny run shared by the module (`finished`), in-process re-runs (JAX and its
compiled programs are already loaded) and the session's token-shard chain (conftest.py).
"""
from __future__ import annotations

import json
import os
import pathlib
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from conftest import NO_CACHE_WRITES

import configs
import sharding
from kineto.cli import main
from train.checkpoint import CHECKSUM_FILE, Checkpointer
from train.state import abstract_state

LM = ["lm", "train", "--config", "lm_tiny", "--set", "train.steps=4", "--set", "train.seq_len=64",
      "--set", "train.checkpoint_every=2"]
LM_OVERRIDES = ["train.steps=4", "train.seq_len=64", "train.checkpoint_every=2"]
PROGRESS = re.compile(r"\d+%\||\d+it \[")  # a tqdm bar (on stderr by design)
SEED = 15  # the seed of every "random moment" below: a failure replays


def env(devices: int = 8) -> dict:
  # Processes this suite kills or starves never write the shared compilation cache (conftest).
  out = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES=str(devices),
             PYTHONPATH=str(pathlib.Path(__file__).parents[1]), **NO_CACHE_WRITES)
  out.pop("XLA_FLAGS", None)
  return out


def kineto(args, **kw) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, "-m", "kineto", *map(str, args)], env=env(), text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def one_line_error(code: int, err: str, before_work: bool = True) -> str:
  """Asserts the CLI's failure shape: exit 2, no traceback, one error line, the last; returns
  it. A fault during work (`before_work=False`) may follow its progress bar and log lines."""
  lines = [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not PROGRESS.search(ln)]
  assert code == 2, err[-3000:]
  assert "Traceback" not in err and "ERROR" not in err, err[-3000:]
  errors = [ln for ln in lines if "error" in ln.lower()]
  assert errors == lines[-1:] and lines[-1].startswith("kineto: error: "), err[-3000:]
  assert len(lines) == 1 or not before_work, err[-3000:]
  return lines[-1]


def leaves(workdir, step=None):
  cfg = configs.load("lm_tiny", LM_OVERRIDES)
  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  got, state, _ = ckpt.restore(abstract_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1])).state,
                               step)
  ckpt.close()
  return got, [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """An uninterrupted 4-step lm_tiny run of the CLI (checkpoints 2 and 4): the reference."""
  work = tmp_path_factory.mktemp("faults") / "finished"
  proc = kineto(LM + ["--workdir", work])
  out, err = proc.communicate(timeout=600)
  assert proc.returncode == 0, err[-3000:]
  return work


def copy_run(finished, tmp_path, name="run"):
  work = tmp_path / name
  shutil.copytree(finished, work, symlinks=True)
  return work


# --- 1. a re-run never downgrades the results; 7. writes replace symlinks ------------------

def test_rerun_of_a_finished_run_keeps_its_figures_and_never_writes_through_a_symlink(finished, tmp_path, capsys):
  """Findings 1 and 7: the summary is lost (a kill between the last checkpoint and the summary)
  and sample.txt is a symlink to a file elsewhere; the re-run recomputes the whole run's figures
  from the checkpoint and replaces the link, leaving the other file alone."""
  work = copy_run(finished, tmp_path)
  before = json.loads((work / "summary.json").read_text())
  (work / "summary.json").unlink()
  outside = tmp_path / "precious.txt"
  outside.write_text("not kineto's")
  (work / "sample.txt").unlink()
  (work / "sample.txt").symlink_to(outside)
  assert main(LM + ["--workdir", str(work)]) == 0
  after = json.loads((work / "summary.json").read_text())
  for key in ("loss", "tokens_per_second", "step_seconds", "skipped_steps", "eval_loss"):
    assert after[key] == pytest.approx(before[key], rel=1e-6), key
  assert after["mfu"] > 0 and after["resumed_from"] == 4
  assert outside.read_text() == "not kineto's"
  assert not (work / "sample.txt").is_symlink() and "GREEDY" in (work / "sample.txt").read_text()


def test_atomic_writer_replaces_a_symlink_and_leaves_nothing_behind(tmp_path):
  from train.files import atomic_path, write_json
  from train.tokenizer_trainer import save_side_by_side
  target = tmp_path / "elsewhere.gif"
  target.write_bytes(b"keep")
  (tmp_path / "reconstructions.gif").symlink_to(target)
  save_side_by_side(tmp_path / "reconstructions.gif", np.zeros((1, 2, 4, 4, 3), np.uint8),
                    np.zeros((1, 2, 4, 4, 3), np.uint8))
  assert target.read_bytes() == b"keep" and not (tmp_path / "reconstructions.gif").is_symlink()
  dead = subprocess.Popen(["true"])
  dead.wait()
  (tmp_path / f".a.json.tmp-{dead.pid}.json").write_text("a killed writer's")
  write_json(tmp_path / "a.json", {"x": 1})
  with pytest.raises(RuntimeError), atomic_path(tmp_path / "a.json") as tmp:
    tmp.write_text("torn")
    raise RuntimeError("killed mid-write")
  assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "elsewhere.gif", "reconstructions.gif"]


def test_a_resumed_loop_reports_the_whole_runs_figures():
  """Finding 1 for every trainer: the running figures travel in the checkpoint (run_loop)."""
  from train.loop import Timing, _progress, _resumed_progress
  saved = _progress(Timing(steps=3, seconds=1.5, work={"tokens": 300}, skipped=1),
                    {"loss": np.float32(2.5), "snr_db": np.float32(7.0), "finite": np.bool_(True)})

  class Restored:
    restored_meta = {"data_step": 4, "progress": saved}
  timing, metrics = _resumed_progress(Restored, 4)
  assert timing.rate("tokens") == 200 and timing.skipped == 1
  assert float(metrics["loss"]) == 2.5 and float(metrics["snr_db"]) == 7.0
  assert _resumed_progress(Restored, 2) == (Timing(), {})  # another step's figures are not this run's


# --- 2. two writers; kill -9 at a seeded random moment; a stale lock -----------------------

def test_second_writer_is_refused_and_a_kill_9_resumes_to_the_uninterrupted_run(finished, tmp_path, capsys):
  """Finding 2, and kill -9 during `lm train`: a second `lm train` on the same workdir (another
  learning rate) fails at once naming the holder; the first is killed at a seeded random moment;
  the same command takes over the stale lock and ends where the uninterrupted run did."""
  work = tmp_path / "killed"
  first = kineto(LM + ["--workdir", work])
  lock = tmp_path / ".killed.lock"
  deadline = time.time() + 120
  while not lock.exists():
    assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
    time.sleep(0.01)
  code = main(LM + ["--workdir", str(work), "--set", "train.learning_rate=1e-3"])
  line = one_line_error(code, capsys.readouterr().err)
  assert f"in use by `kineto lm train` (pid {first.pid} on" in line
  while not (work / "checkpoints").exists():  # the state is being built: the moment is counted from here
    assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
    time.sleep(0.01)
  time.sleep(random.Random(SEED).uniform(0.0, 2.0))  # compile, steps, async saves
  first.send_signal(signal.SIGKILL)
  first.communicate()
  assert first.returncode == -signal.SIGKILL, "the run ended before the kill: move the moment earlier"
  assert not (work / "summary.json").exists()
  assert main(LM + ["--workdir", str(work)]) == 0
  assert "taking over a stale lock" in capsys.readouterr().err
  assert not lock.exists()
  step, got = leaves(work)
  _, want = leaves(finished)
  assert step == 4
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
  resumed, straight = (json.loads((w / "summary.json").read_text()) for w in (work, finished))
  assert resumed["loss"] == pytest.approx(straight["loss"], rel=1e-5)
  assert resumed["eval_loss"] == pytest.approx(straight["eval_loss"], rel=1e-5)


# --- 3. corrupted checkpoints --------------------------------------------------------------

def test_corrupted_latest_checkpoint_is_set_aside_and_the_previous_one_used(finished, tmp_path, capsys):
  """Finding 3: 4 KB overwritten inside the state of the latest checkpoint. The re-run warns,
  keeps the bad one under another name, resumes from step 2 and ends where the uninterrupted
  run did."""
  work = copy_run(finished, tmp_path)
  state_file = max((p for p in (work / "checkpoints" / "4" / "state").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
  with open(state_file, "r+b") as f:
    f.seek(min(64, state_file.stat().st_size // 2))
    f.write(os.urandom(4096))
  (work / "summary.json").unlink()
  assert main(LM + ["--workdir", str(work)]) == 0
  err = capsys.readouterr().err
  assert f"{work}/checkpoints/4 fails its checksum" in err and f"{work}/checkpoints/2 instead" in err
  summary = json.loads((work / "summary.json").read_text())
  assert summary["resumed_from"] == 2 and summary["skipped_steps"] == 0
  assert summary["loss"] == pytest.approx(json.loads((finished / "summary.json").read_text())["loss"], rel=1e-5)
  assert [p.name.split("-")[0] for p in (work / "checkpoints").glob("4.bad-*")] == ["4.bad"]
  for a, b in zip(leaves(work)[1], leaves(finished)[1]):
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_checkpointer_falls_back_and_never_saves_non_finite_state(tmp_path, capsys):
  """Finding 3 without a checksum (a kill between orbax's rename and ours) and with NaN values."""
  import jax.numpy as jnp
  cfg = configs.load("lm_tiny", ["train.keep_last=2"])
  state = {"w": jnp.arange(8.0), "b": jnp.ones(3)}
  ckpt = Checkpointer(tmp_path, cfg)
  for step in (1, 2):
    assert ckpt.save(step, jax.tree.map(lambda x, s=step: x * s, state), force=True)
  ckpt.wait()
  assert not ckpt.save(3, {"w": jnp.full(8, jnp.nan), "b": jnp.ones(3)}, force=True)
  assert "not saving step 3" in capsys.readouterr().err
  ckpt.wait()
  assert ckpt.latest_step() == 2 and (tmp_path / "1").is_dir()  # keep_last=2 pruned nothing good
  # Step 2's arrays truncated and its checksums lost: it cannot restore; step 1 is used.
  (tmp_path / "2" / CHECKSUM_FILE).unlink()
  for p in (tmp_path / "2" / "state").rglob("*"):
    if p.is_file() and p.stat().st_size > 100:
      p.write_bytes(p.read_bytes()[:50])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
  step, restored, _ = ckpt.restore(abstract)
  assert step == 1 and np.array_equal(np.asarray(restored["w"]), np.arange(8.0))
  err = capsys.readouterr().err
  assert f"checkpoint {tmp_path}/2 cannot be read" in err and f"resuming from {tmp_path}/1 instead" in err
  assert [p.name.split("-")[0] for p in tmp_path.glob("2.bad-*")] == ["2.bad"]
  ckpt.close()


# --- 5. an LM never resumes on another tokenizer's codes --------------------------------------

def test_lm_resume_on_shards_of_another_tokenizer_is_refused(atari32_tokens, tmp_path, capsys):
  from train.data.shards import read_manifest
  from train.lm_data import data_fingerprint
  from train.state import init_state
  tokens, _ = atari32_tokens
  other = tmp_path / "other_tokens"
  shutil.copytree(tokens, other)
  manifest = json.loads((other / "manifest.json").read_text())
  manifest["tokenizer"]["fingerprint"] = "0123456789abcdef"  # what another tokenizer's shards say
  (other / "manifest.json").write_text(json.dumps(manifest))
  overrides = ["data.source=tokens", f"data.tokens_dir={tokens}", "lm.vocab=704", "lm.max_len=256",
               "lm.attention_block=64", "vocab.video_bits=8", "train.steps=6"]
  cfg = configs.load("lm_tiny", overrides)
  ckpt = Checkpointer(tmp_path / "lm" / "checkpoints", cfg, data_fingerprint=data_fingerprint(read_manifest(tokens)))
  ckpt.save(3, init_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1])).state, force=True)
  ckpt.wait()
  ckpt.close()
  code = main(["lm", "train", "--config", "lm_tiny", "--workdir", str(tmp_path / "lm")]
              + [a for o in overrides + [f"data.tokens_dir={other}"] for a in ("--set", o)])  # the last wins
  line = one_line_error(code, capsys.readouterr().err)
  assert "tokenizer: checkpoint" in line and "vs now 0123456789abcdef" in line
  assert not (tmp_path / "lm" / "summary.json").exists()


def test_lm_on_shards_of_clips_too_short_is_one_line_and_leaves_no_workdir(atari32_tokens, tmp_path, capsys):
  """Finding 6: token shards of 5-frame clips (2 latent frames: no room for continuation). The
  manifest of a copy of the session's shards says so, as `tokenize` of 5-frame clips writes it."""
  tokens, _ = atari32_tokens
  short = tmp_path / "short_tokens"
  shutil.copytree(tokens, short)
  manifest = json.loads((short / "manifest.json").read_text())
  manifest["clip"]["frames"], manifest["clip"]["latents"][0] = 5, 2
  (short / "manifest.json").write_text(json.dumps(manifest))
  code = main(["lm", "train", "--config", "lm_tiny", "--workdir", str(tmp_path / "lm")]
              + [a for o in ["data.source=tokens", f"data.tokens_dir={short}", "lm.vocab=704", "lm.max_len=256",
                             "lm.attention_block=64", "vocab.video_bits=8"] for a in ("--set", o)])
  line = one_line_error(code, capsys.readouterr().err)
  assert "clips of 5 frames" in line and "--frames 9" in line
  assert not (tmp_path / "lm").exists() and not (tmp_path / ".lm.lock").exists()


# --- 4 and 6. bad input: one line, exit 2, no traceback, nothing written ---------------------

BAD = [
    # (argv with {tmp} for the test's folder, what the line must say)
    (["data", "build", "--src", "{tmp}", "--out", "{tmp}/ds", "--fps", "inf"], "--fps: inf must be a finite"),
    (["data", "build", "--src", "{tmp}", "--out", "{tmp}/ds", "--fps", "nan"], "--fps: nan must be a finite"),
    (["data", "build", "--src", "{tmp}", "--out", "{tmp}/ds", "--frames", "0"], "--frames: 0 must be"),
    (["data", "build", "--src", "{tmp}", "--out", "{tmp}/ds", "--val_fraction", "1"], "--val_fraction: 1"),
    (["data", "build", "--src", "{tmp}", "--out", "{tmp}/ds", "--size", "big"], "'big' is not an integer"),
    (["data", "demo", "--out", "{tmp}/ds", "--fps", "-8"], "--fps: -8 must be"),
    (["generate", "--lm", "{tmp}", "--out", "{tmp}/a.mp4", "--cfg", "nan"], "--cfg: nan must be a finite"),
    (["generate", "--lm", "{tmp}", "--out", "{tmp}/a.mp4", "--seconds", "inf"], "--seconds: inf"),
    (["generate", "--lm", "{tmp}", "--out", "{tmp}/a.mp4", "--top_p", "0"], "--top_p: 0 must be"),
    (["generate", "--lm", "{tmp}", "--out", "{tmp}/a.mp4", "--temperature", "-1"], "--temperature: -1"),
    (["generate", "--lm", "{tmp}", "--out", "{tmp}/a.mp4", "--samples", "0"], "--samples: 0"),
    (["generate", "--lm", "{tmp}", "--out", "{tmp}/a.mp4", "--prompt", " "], "--prompt is empty"),
    (["lm", "train", "--config", "lm_tiny", "--workdir", "{tmp}/w", "--set", "train.learning_rate=inf"],
     "train.learning_rate='inf': expected a finite number"),
    (["lm", "train", "--config", "lm_tiny", "--workdir", "{tmp}/w", "--set", "train.learning_rate=nan"],
     "expected a finite number"),
    (["lm", "train", "--config", "lm_tiny", "--workdir", "{tmp}/w", "--stop_after", "0"], "--stop_after: 0"),
    (["lm", "train", "--config", "{tmp}/broken.py", "--workdir", "{tmp}/w"], "broken.py:2: "),
    (["lm", "train", "--config", "vidtok_tiny", "--workdir", "{tmp}/w"], "not an LM config"),
    (["tokenizer", "train", "--config", "lm_tiny", "--workdir", "{tmp}/w"], "not a video tokenizer config"),
    (["audio", "train", "--config", "vidtok_tiny", "--workdir", "{tmp}/w"], "not an audio codec config"),
    (["lm", "train", "--config", "lm_tiny", "--workdir", "{tmp}/file"], "is a file, not a directory"),
    (["tokenizer", "train", "--config", "vidtok_tiny", "--workdir", "{tmp}/file"], "is a file"),
    (["audio", "train", "--config", "audio_tiny", "--workdir", "{tmp}/file"], "is a file"),
    (["data", "build", "--src", "{tmp}", "--out", "{tmp}/file"], "is a file"),
    (["tokenize", "--tokenizer", "{tmp}", "--data", "{tmp}", "--out", "{tmp}/file"], "is a file"),
    (["tokenize", "--tokenizer", "{tmp}", "--data", "{tmp}", "--out", "{tmp}/t", "--batch", "0"], "--batch: 0"),
    (["tokenizer", "eval", "--workdir", "{tmp}", "--clips", "-1"], "--clips: -1"),
    (["text", "train", "--corpus", "{tmp}/c.txt", "--vocab", "0", "--out", "{tmp}/m"], "--vocab: 0"),
    (["compile", "--config", "lm_tiny", "--topology", "cpu:8", "--batch", "0"], "--batch: 0"),
    (["lm", "trian"], "invalid choice: 'trian'"),
]


@pytest.mark.parametrize("argv, says", BAD, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, says, tmp_path, capsys):
  """Findings 4 and 6 (and the rest of the table): in-process, so a traceback fails the test."""
  (tmp_path / "file").write_text("in the way")
  (tmp_path / "broken.py").write_text("def get_config():\n  return Config(name='x'\n")
  before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
  code = main([a.format(tmp=tmp_path) for a in argv])
  line = one_line_error(code, capsys.readouterr().err)
  assert says in line, line
  assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_truncated_tokenizer_metadata_is_one_line(random_tokenizer, atari32, tmp_path, capsys):
  """Finding 6: `tokenize` with a tokenizer whose checkpoint metadata is truncated."""
  tok = tmp_path / "tok"
  shutil.copytree(random_tokenizer(0), tok)
  meta = next((tok / "checkpoints").glob("*/meta/metadata"))
  meta.write_text(meta.read_text()[:40])
  code = main(["tokenize", "--tokenizer", str(tok), "--data", str(atari32), "--out", str(tmp_path / "t")])
  line = one_line_error(code, capsys.readouterr().err)
  assert "unreadable metadata" in line and "move that step folder away" in line


# --- read-only folders and a full disk (a tmpfs inside `unshare -m`) -----------------------

def can_mount() -> bool:
  return (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("unshare") is not None
          and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0)


def tiny_videos(src, count=3):
  from kineto import media
  rng = np.random.default_rng(0)
  for i in range(count):
    media.write_video(src / f"v{i}.mp4", rng.integers(0, 255, (12, 16, 16, 3), dtype=np.uint8), fps=8)
  return src


@pytest.mark.skipif(not can_mount(), reason="needs root and unshare -m for a private tmpfs")
def test_read_only_and_full_disk_are_one_line_for_every_command(tmp_path, random_tokenizer, atari32):
  """Finding 6: a read-only file system, a read-only work directory on a writable one and a full
  disk, for every trainer, `data build`, `tokenize` and `generate --out`; a full disk during
  `lm train` is refused before its save starts: no summary, no checkpoint folder."""
  (tmp_path / "src").mkdir()
  src = tiny_videos(tmp_path / "src")
  ro, rw, full, small = tmp_path / "ro", tmp_path / "rw", tmp_path / "full", tmp_path / "small"
  k = f"{sys.executable} -m kineto"
  commands = {
      "lm": f"lm train --config lm_tiny --workdir {ro}/lm",
      "tokenizer": f"tokenizer train --config vidtok_tiny --workdir {ro}/tok",
      "audio": f"audio train --config audio_tiny --workdir {ro}/audio",
      "build": f"data build --src {src} --out {ro}/data --frames 5 --size 16",
      "demo": f"data demo --out {ro}/demo",
      "tokenize": f"tokenize --tokenizer {random_tokenizer(0)} --data {atari32} --out {ro}/tokens",
      "generate": f"generate --lm {random_tokenizer(0)} --prompt pong --out {ro}/a.mp4",
      "rw-lm": f"lm train --config lm_tiny --workdir {rw}/lm",
      "rw-build": f"data build --src {src} --out {rw}/data --frames 5 --size 16",
      "full-lm": f"lm train --config lm_tiny --workdir {full}/lm " + " ".join(f"--set {o}" for o in LM_OVERRIDES),
      "full-build": f"data build --src {src} --out {small}/data --frames 5 --size 16 --val_fraction 0.34",
  }
  script = textwrap.dedent(f"""\
      set -u
      mkdir -p {ro} {rw}/lm {rw}/data {full} {small}
      mount -t tmpfs -o size=64k tmpfs {ro} && mount -o remount,ro {ro}
      mount --bind {rw}/lm {rw}/lm && mount -o remount,bind,ro {rw}/lm
      mount --bind {rw}/data {rw}/data && mount -o remount,bind,ro {rw}/data
      mount -t tmpfs -o size=1200k tmpfs {full}
      mount -t tmpfs -o size=12k tmpfs {small}
      """)
  for name, cmd in commands.items():
    script += f"{k} {cmd} >{tmp_path}/{name}.out 2>{tmp_path}/{name}.err; echo $? >{tmp_path}/{name}.rc &\n"
  script += f"wait\nfind {full} {small} -mindepth 1 > {tmp_path}/full.files\n"
  done = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env(), capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  for name in commands:
    code = int((tmp_path / f"{name}.rc").read_text())
    err = (tmp_path / f"{name}.err").read_text()
    line = one_line_error(code, err, before_work=not name.startswith("full"))
    want = "the disk is full" if name.startswith("full") else "read-only"
    assert want in line, (name, line)
    if name == "full-lm":  # refused before orbax starts writing (train/checkpoint.py check_space)
      assert re.search(r"step 2 needs [\d.]+ [KM]iB here, [\d.]+ [KM]iB are free", line), line
  files = (tmp_path / "full.files").read_text().split()
  assert not [f for f in files if f.endswith("summary.json")], files
  assert not [f for f in files if f.rstrip("/").split("/")[-1].isdigit() and "/checkpoints/" in f], files


# --- kill -9 during `data build` and `tokenize` ---------------------------------------------

def test_killed_data_build_leaves_nothing_and_the_rerun_equals_an_uninterrupted_one(tmp_path, capsys):
  """Finding 8 and kill -9 during `data build`: a kill at a seeded random moment, plus a
  leftover of an earlier killed build; the re-run removes both and builds what an
  uninterrupted build does."""
  src = tmp_path / "src"
  src.mkdir()
  tiny_videos(src)
  args = ["data", "build", "--src", src, "--frames", "5", "--size", "16", "--val_fraction", "0.34"]
  assert main([str(a) for a in args + ["--out", tmp_path / "straight"]]) == 0
  straight = json.loads(capsys.readouterr().out)
  build = kineto(args + ["--out", tmp_path / "killed"])
  time.sleep(random.Random(SEED).uniform(0.5, 6.0))
  build.send_signal(signal.SIGKILL)
  build.communicate()
  dead = subprocess.Popen(["true"])
  dead.wait()
  (tmp_path / f".killed.building-{dead.pid}").mkdir()  # one more killed build's leftover
  if (tmp_path / "killed" / "dataset_info.json").exists():  # the kill came after the rename
    args.append("--overwrite")
  assert main([str(a) for a in args + ["--out", tmp_path / "killed"]]) == 0
  resumed = json.loads(capsys.readouterr().out)
  assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
  for key in ("examples", "skipped", "sources", "spec", "captions", "bytes"):
    assert resumed[key] == straight[key], key


def test_killed_tokenize_resumes_to_the_uninterrupted_bytes(atari32_tokens, atari32, caption_model,
                                                            random_tokenizer, tmp_path):
  """kill -9 during `tokenize` at a seeded random moment; the same command completes the shards,
  byte for byte those of the uninterrupted run (conftest's atari32_tokens)."""
  from conftest import TOKEN_SHARD
  reference, _ = atari32_tokens
  out = tmp_path / "tokens"
  args = ["tokenize", "--tokenizer", random_tokenizer(0), "--data", atari32, "--out", out, "--batch", "8",
          "--shard_size", TOKEN_SHARD, "--text_model", caption_model]
  run = kineto(args)
  rng = random.Random(SEED)
  after_shards = rng.randint(1, 3)  # of 5: the moment is a seeded point in the work, then a jitter
  while len(list(out.glob("*.arrayrecord"))) < after_shards:
    assert run.poll() is None, run.communicate()[1][-3000:]
    time.sleep(0.002)
  time.sleep(rng.uniform(0.0, 0.05))
  run.send_signal(signal.SIGKILL)
  run.communicate()
  assert run.returncode == -signal.SIGKILL, "the run ended before the kill: move the moment earlier"
  assert len(list(out.glob("*.arrayrecord"))) < 5
  rerun = kineto(args)
  _, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0, err[-3000:]
  shard = lambda d: {p.name: p.read_bytes() for p in sorted(d.glob("*.arrayrecord"))}
  assert shard(out) == shard(reference)
  assert (out / "manifest.json").read_text() == (reference / "manifest.json").read_text()
  assert not list(out.glob(".*tmp*")) and not (tmp_path / ".tokens.lock").exists()
