"""Checkpoints: exact resume, resharding restore, kill -9 safety, refusals, and robustness."""
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import configs
import sharding
from kineto.cli import main
from train.checkpoint import Checkpointer
from train.lm_trainer import train_lm
from train.state import abstract_state, init_state, make_train_step

TINY = ["train.seq_len=64", "train.checkpoint_every=2"]


def restored_leaves(cfg, workdir, mesh_shape=(1, 1, 1)):
  mesh = sharding.make_mesh(mesh_shape, jax.devices()[:int(np.prod(mesh_shape))])
  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  step, state, meta = ckpt.restore(abstract_state(cfg, mesh).state)
  ckpt.close()
  return step, jax.tree.leaves(state), meta


@pytest.mark.slow
def test_resume_after_a_stop_equals_an_uninterrupted_run(tmp_path):
  cfg = configs.load("lm_tiny", TINY + ["train.steps=6"])
  train_lm(cfg, tmp_path / "straight", progress=False)
  stopped = train_lm(cfg, tmp_path / "resumed", progress=False, stop_after=3)
  assert stopped["stopped_early"] and stopped["step"] == 3
  summary = train_lm(cfg, tmp_path / "resumed", progress=False)
  assert summary["resumed_from"] == 3
  step_a, leaves_a, _ = restored_leaves(cfg, tmp_path / "straight")
  step_b, leaves_b, meta = restored_leaves(cfg, tmp_path / "resumed")
  assert step_a == step_b == 6 and meta["data_step"] == 6 and meta["code_version"]
  assert meta["vocab"]["text"] == [32, 288]  # the id layout travels with the weights
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


def test_restore_reshards_onto_other_meshes(tmp_path):
  cfg = configs.load("lm_tiny")
  ts = init_state(cfg, sharding.make_mesh((2, 2, 2)))
  ckpt = Checkpointer(tmp_path, cfg)
  ckpt.save(1, ts.state, force=True)
  ckpt.wait()
  saved = [np.asarray(x) for x in jax.tree.leaves(ts.state)]
  for shape in [(1, 4, 2), (1, 1, 1)]:
    mesh = sharding.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
    target = abstract_state(cfg, mesh)
    _, state, _ = ckpt.restore(target.state)
    for got, want, spec in zip(jax.tree.leaves(state), saved, jax.tree.leaves(target.shardings)):
      assert got.sharding == spec
      np.testing.assert_array_equal(np.asarray(got), want)
  ckpt.close()


def test_a_checkpoint_of_another_model_is_refused(tmp_path, capsys):
  cfg = configs.load("lm_tiny")
  ckpt = Checkpointer(tmp_path / "checkpoints", cfg)
  ckpt.save(1, init_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1])).state, force=True)
  ckpt.close()
  code = main(["lm", "train", "--config", "lm_tiny", "--workdir", str(tmp_path),
               "--set", "lm.layers=3", "--set", "lm.mlp=128", "--set", "vocab.special=64"])
  err = capsys.readouterr().err
  assert code == 2 and "lm.layers: checkpoint 2 vs run 3" in err and "lm.mlp" in err
  assert "vocab.special: checkpoint 32 vs run 64" in err


def test_a_checkpoint_resumes_under_other_kernels(tmp_path):
  # How the math runs (attention and matmul kernels, blocks, remat) is not the model.
  cfg = configs.load("lm_tiny")
  ckpt = Checkpointer(tmp_path / "checkpoints", cfg)
  ckpt.save(1, init_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1])).state, force=True)
  ckpt.close()
  other = configs.load("lm_tiny", ["lm.attention_impl=cpu", "lm.matmul_impl=cpu", "lm.remat_policy=none"])
  step, leaves, _ = restored_leaves(other, tmp_path)
  assert step == 1 and leaves


def test_a_corrupt_checkpoint_is_a_clear_error(tmp_path, capsys):
  (tmp_path / "checkpoints" / "7").mkdir(parents=True)
  (tmp_path / "checkpoints" / "7" / "junk").write_text("not a checkpoint")
  assert main(["lm", "train", "--config", "lm_tiny", "--workdir", str(tmp_path)]) == 2
  assert "cannot be read" in capsys.readouterr().err


def test_a_missing_token_dataset_is_a_clear_error_before_compile(tmp_path, capsys):
  missing = tmp_path / "no_tokens"
  code = main(["lm", "train", "--config", "lm_tiny", "--workdir", str(tmp_path / "work"),
               "--set", "data.source=tokens", "--set", f"data.tokens_dir={missing}"])
  err = capsys.readouterr().err
  assert code == 2 and str(missing) in err and "kineto tokenize" in err
  assert not (tmp_path / "work" / "checkpoints").exists()  # failed before any state existed


@pytest.mark.slow
def test_sigterm_then_kill_9_during_async_saves_then_resume_equals_an_uninterrupted_run(tmp_path, kineto_cli):
  """A preemption, then a crash. `kineto lm train` as a subprocess, SIGTERMed once its first
  checkpoint is written: exit 0, the saved-step line, no held-out evaluation yet. The same
  command resumes from that step (on 1 device) and is killed with SIGKILL while it saves every
  step (a save is almost surely in flight): the last complete checkpoint restores to finite
  weights, and the same run resumed here ends where an uninterrupted run does."""
  overrides = ["train.steps=60", "train.checkpoint_every=1", "train.seq_len=64"]
  work = tmp_path / "faulted"
  args = ["lm", "train", "--config", "lm_tiny", "--workdir", work] + [a for o in overrides for a in ("--set", o)]
  code, log, first = kineto_cli.sigterm(args, work)
  saved = re.search(kineto_cli.saved, log)
  assert code == 0 and first is not None and saved, log[-3000:]
  step = int(saved.group(1))
  assert first <= step < 60 and kineto_cli.checkpoints(work)[-1] == step
  assert not (work / "summary.json").exists()  # stopped: no held-out evaluation yet

  from conftest import NO_CACHE_WRITES
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  with open(tmp_path / "resumed.log", "w") as out:
    proc = subprocess.Popen([sys.executable, "-m", "kineto", *map(str, args)], env=dict(env, **NO_CACHE_WRITES),
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and kineto_cli.checkpoints(work)[-1] < step + 3:
      time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  assert f"starting at step {step}." in (tmp_path / "resumed.log").read_text()
  cfg = configs.load("lm_tiny", overrides)
  killed_at, leaves, _ = restored_leaves(cfg, work)
  assert step + 3 <= killed_at < 60, "the kill must land mid-run"
  assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)

  resumed = train_lm(cfg, work, progress=False)
  straight = train_lm(cfg, tmp_path / "straight", progress=False)
  assert resumed["resumed_from"] == killed_at and resumed["step"] == straight["step"] == 60
  np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-5)
  np.testing.assert_allclose(resumed["eval_loss"], straight["eval_loss"], rtol=1e-5)
  _, a, _ = restored_leaves(cfg, work)
  _, b, _ = restored_leaves(cfg, tmp_path / "straight")
  # The faulted run's steps ran on 8 fake devices, then 1 (the resumed subprocess), then 8
  # again (this process), whose sums reduce in other orders: 60 AdamW steps later weights of
  # ~2 differ by up to ~2e-6 (seen after the q/k/v projections became one matmul).
  for x, y in zip(a, b):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=1e-5)


def test_tensorboard_events_read_back(tmp_path):
  from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
  train_lm(configs.load("lm_tiny", TINY + ["train.steps=3", "train.log_every=1"]), tmp_path,
           progress=False)
  events = EventAccumulator(str(tmp_path / "tb"))
  events.Reload()
  tags = set(events.Tags()["scalars"])
  assert {"train/loss", "train/grad_norm", "train/learning_rate", "train/skipped_steps",
          "speed/tokens_per_second", "speed/mfu", "eval/loss"} <= tags
  assert len(events.Scalars("train/loss")) == 3


def one_step_setup(overrides=()):
  cfg = configs.load("lm_tiny", ["train.warmup_steps=1", *overrides])
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  ts = init_state(cfg, mesh)
  return cfg, ts, make_train_step(cfg, mesh, ts)


def test_a_non_finite_step_leaves_the_state_unchanged():
  cfg, ts, step = one_step_setup()
  before = [np.asarray(x) for x in jax.tree.leaves(ts.state)]
  tokens = jnp.full((8, 65), cfg.lm.vocab + 7, jnp.int32)  # out of range: NaN embeddings
  prefix = jnp.zeros((8, 65), bool)
  state, metrics = step(ts.state, {"tokens": tokens, "input_mask": prefix, "loss_mask": ~prefix})
  assert not bool(metrics["finite"])
  for got, want in zip(jax.tree.leaves(state), before):
    np.testing.assert_array_equal(np.asarray(got), want)


def test_gradient_accumulation_equals_one_big_batch():
  rng = np.random.RandomState(0)
  batch = {"tokens": jnp.asarray(rng.randint(0, 512, (8, 65)), jnp.int32),
           "input_mask": jnp.zeros((8, 65), bool).at[:, :9].set(True),
           "loss_mask": jnp.asarray(rng.rand(8, 65) > 0.3)}  # uneven token counts per row
  losses = {}
  for m in (1, 4):
    _, ts, step = one_step_setup([f"train.microbatches={m}"])
    state, out = ts.state, []
    for _ in range(3):
      state, metrics = step(state, batch)
      out.append(float(metrics["loss"]))
    losses[m] = out
  np.testing.assert_allclose(losses[4], losses[1], rtol=1e-5)


def test_retention_keeps_the_last_n_and_every_mth(tmp_path):
  cfg = configs.load("lm_tiny", ["train.checkpoint_every=1", "train.keep_last=2", "train.keep_every=4"])
  state = init_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1])).state
  ckpt = Checkpointer(tmp_path, cfg)
  for step in range(1, 11):
    ckpt.save(step, state)
    ckpt.wait()
  ckpt.close()
  assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [4, 8, 9, 10]


class _NoCheckpoints:
  directory = "nowhere"

  def __init__(self):
    self.saved = []

  def save(self, step, state, force=False, progress=None):
    self.saved.append(step)

  def wait(self):
    pass

  def close(self):
    pass

  def latest_step(self):
    return self.saved[-1] if self.saved else None


def test_max_skipped_steps_is_the_number_of_non_finite_steps_tolerated():
  from train.loop import run_loop
  bad = {2, 3, 5}

  def step_fn(state, step):
    return state + 1, {"loss": np.float32(np.nan if step in bad else 1.0)}, {}

  kw = dict(name="t", start_step=0, steps=8, nonfinite_hint="hint.", log=lambda *a: None,
            postfix=lambda *a: {}, progress=False)
  result = run_loop(0, step_fn, ckpt=_NoCheckpoints(), max_skipped=3, **kw)
  assert result.step == 8 and result.timing.skipped == 3
  ckpt = _NoCheckpoints()
  with pytest.raises(FloatingPointError, match=r"3 steps had a non-finite .*last: step 5.*max_skipped_steps=2"):
    run_loop(0, step_fn, ckpt=ckpt, max_skipped=2, **kw)
  assert ckpt.saved == [1, 2, 5]  # only finite steps were offered to the checkpointer


@pytest.mark.slow
def test_lm_ema_is_kept_evaluated_and_loaded(tmp_path):
  from train.lm_trainer import load_lm
  cfg = configs.load("lm_tiny", TINY + ["train.steps=3", "train.ema_decay=0.5"])
  summary = train_lm(cfg, tmp_path, progress=False)
  assert summary["eval_loss_ema"] is not None and summary["eval_loss_ema"] != summary["eval_loss"]
  _, raw, _, not_used = load_lm(tmp_path, ema=False)
  _, ema, _, used = load_lm(tmp_path)
  assert used and not not_used
  from flax import nnx
  a, b = jax.tree.leaves(nnx.state(raw, nnx.Param)), jax.tree.leaves(nnx.state(ema, nnx.Param))
  assert any(not np.allclose(np.asarray(x), np.asarray(y)) for x, y in zip(a, b))


def _three_steps(overrides=()):
  """Training losses of 3 steps on one fixed batch (warmup 1: the first step's rate is 0)."""
  cfg, ts, step = one_step_setup(["train.seq_len=64", *overrides])
  rng = np.random.RandomState(0)
  batch = {"tokens": jnp.asarray(rng.randint(0, 512, (8, 65)), jnp.int32),
           "input_mask": jnp.zeros((8, 65), bool).at[:, :8].set(True),
           "loss_mask": jnp.ones((8, 65), bool).at[:, :8].set(False)}
  state, losses = ts.state, []
  for _ in range(3):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return losses, state


@pytest.fixture(scope="module")
def float32_losses():
  return _three_steps()[0]


@pytest.mark.slow
def test_remat_policy_changes_memory_not_the_math(float32_losses):
  losses, _ = _three_steps(["lm.remat_policy=dots_saveable"])
  np.testing.assert_allclose(losses, float32_losses, rtol=1e-5)


@pytest.mark.slow
def test_cpu_kernels_change_speed_not_the_math(float32_losses):
  losses, _ = _three_steps(["lm.attention_impl=cpu", "lm.matmul_impl=cpu"])
  np.testing.assert_allclose(losses, float32_losses, rtol=1e-5)


@pytest.mark.slow
def test_bfloat16_training_step_tracks_float32_and_keeps_float32_params(float32_losses):
  losses, state = _three_steps(["lm.dtype=bfloat16"])
  assert all(np.isfinite(losses)) and losses[2] < losses[0] - 0.1, losses  # it learns the batch
  np.testing.assert_allclose(losses, float32_losses, rtol=2e-2)
  floats = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)]
  assert floats and all(x.dtype == jnp.float32 for x in floats)


def test_a_save_that_cannot_fit_is_refused_before_it_starts(tmp_path, monkeypatch):
  """check_space: the need is this process's shards once (a replicated array counts once), or
  the previous checkpoint's size on disk when there is one; short of it, ENOSPC naming both."""
  import errno
  import shutil
  from collections import namedtuple

  from train import checkpoint
  from train.workdir import io_problem
  mesh = sharding.make_mesh((1, 8, 1))
  sharded = jax.device_put(jnp.zeros((8, 1024), jnp.float32), sharding.named_sharding(mesh, "fsdp", None,
                                                                                     rules=[("fsdp", "fsdp")]))
  replicated = jax.device_put(jnp.zeros((256,), jnp.float32), sharding.named_sharding(mesh, None))
  state = {"w": sharded, "b": replicated, "key": jax.random.key(0), "n": np.zeros(4, np.int64)}
  assert checkpoint.bytes_to_write(state) == 8 * 1024 * 4 + 256 * 4 + 8 + 32
  usage = namedtuple("usage", "total used free")
  monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(0, 0, 20_000))
  with pytest.raises(OSError) as e:
    checkpoint.check_space(tmp_path / "ckpt", 4, state)  # not created yet: its parent's disk
  assert e.value.errno == errno.ENOSPC
  line = io_problem(e.value)
  assert "the disk is full" in line and "step 4 needs 33 KiB here, 20 KiB are free" in line, line
  previous = tmp_path / "ckpt" / "2"
  previous.mkdir(parents=True)
  (previous / "data").write_bytes(b"x" * 15_000)  # compressed on disk: what the next save needs
  checkpoint.check_space(tmp_path / "ckpt", 4, state, previous)


def test_the_checksum_thread_reports_its_failure_at_the_next_call(tmp_path, monkeypatch):
  """save() returns while a thread waits for the write and hashes it; what the thread raised
  comes out of the next call on the Checkpointer, once, and the checkpoint is sealed later."""
  from train import checkpoint

  def full_disk(step_dir):
    raise OSError(28, "No space left on device", str(step_dir))

  ckpt = Checkpointer(tmp_path / "c", configs.load("lm_tiny", TINY))
  monkeypatch.setattr(checkpoint, "checksums", full_disk)
  assert ckpt.save(2, {"w": jnp.ones(4)}, force=True)
  with pytest.raises(OSError, match="No space left"):
    ckpt.latest_step()
  monkeypatch.undo()
  assert ckpt.latest_step() == 2
  ckpt.seal()
  assert (tmp_path / "c" / "2" / checkpoint.CHECKSUM_FILE).is_file()
  ckpt.close()


def test_a_checksum_list_left_half_written_by_a_kill_does_not_fail_the_checkpoint(tmp_path):
  """A kill while sealing leaves `.kineto_checksum.json.tmp-PID.json` in the step and no list.
  Sealing again must list the checkpoint's own files only: the write removes the dead writer's
  temporary file, and a list that counted it failed a good checkpoint (seen in a suite run)."""
  from train import checkpoint
  ckpt = Checkpointer(tmp_path / "c", configs.load("lm_tiny", TINY))
  assert ckpt.save(2, {"w": jnp.ones(4)}, force=True)
  ckpt.seal()
  step_dir = tmp_path / "c" / "2"
  (step_dir / checkpoint.CHECKSUM_FILE).unlink()
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  stale = step_dir / f".{checkpoint.CHECKSUM_FILE}.tmp-{int(dead.stdout)}.json"
  stale.write_text('{"half": ')
  ckpt.seal()
  assert not stale.exists() and (step_dir / checkpoint.CHECKSUM_FILE).is_file()
  assert checkpoint.checksum_mismatch(step_dir) is None
  ckpt.close()


def test_a_field_added_after_a_checkpoint_matches_only_its_default():
  """A checkpoint written before `vidtok.quantizer` existed holds an LFQ model: it loads into
  a run with the default ("lfq") and is refused by one that asks for FSQ."""
  from train.checkpoint import incompatible_fields
  defaults = {"bits": 8, "quantizer": "lfq", "fsq_levels": [], "inner": {"new": 1}}
  old = {"bits": 10, "inner": {}}
  assert incompatible_fields(old, {"bits": 10, "quantizer": "lfq", "fsq_levels": [], "inner": {"new": 1}},
                             "vidtok", defaults) == []
  fsq = {"bits": 10, "quantizer": "fsq", "fsq_levels": [8, 8, 4, 4], "inner": {"new": 2}}
  assert incompatible_fields(old, fsq, "vidtok", defaults) == [
      "vidtok.fsq_levels: checkpoint None vs run [8, 8, 4, 4]", "vidtok.inner.new: checkpoint None vs run 2",
      "vidtok.quantizer: checkpoint None vs run 'fsq'"]
  assert incompatible_fields({"bits": 10}, {"bits": 12}, "vidtok", defaults) == ["vidtok.bits: checkpoint 10 vs run 12"]
