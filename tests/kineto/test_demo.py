"""The main job end to end (`kineto demo --quick`, killed and resumed), its report pieces, and
the zero-shot notebook executed against its outputs."""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from kineto.demo import report
from kineto.demo.recognize import GRID, GameClassifier, frame_features
from kineto.demo.run import QUICK, DemoError, Stages
from kineto.eval.recognition import RecognitionEvaluator
from kineto.eval.sprites import NONE, SpriteReader
from train.data import demo as demo_data

ROOT = pathlib.Path(__file__).resolve().parents[2]


# --- pieces -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def games(tmp_path_factory):
  out = tmp_path_factory.mktemp("games") / "data"
  demo_data.build_demo(out, size=32, frames=5, games=("Pong", "Freeway", "Boxing"), train_episodes=1,
                       train_clips=4, val_clips=2, videos=False, progress=False)
  from train.data.pipeline import open_split

  def split(name):
    src = open_split(out, name)
    recs = [src[i] for i in range(len(src))]
    return np.stack([r["video"] for r in recs]), [demo_data.game_of(r) for r in recs]
  return split("train"), split("validation")


def test_game_classifier_recognizes_held_out_episodes(games):
  (x, y), (xv, yv) = games
  clf = GameClassifier.fit(x, y)
  assert clf.labels == ("boxing", "freeway", "pong")
  assert clf.accuracy(xv, yv) == 1.0  # other episodes of the same games
  noise = np.random.default_rng(0).integers(0, 256, xv.shape, dtype=np.uint8)
  assert clf.accuracy(noise, yv) < 1.0  # it reads the picture, not a constant
  with pytest.raises(ValueError, match="one caption per clip"):
    GameClassifier.fit(x, y[:-1])
  with pytest.raises(ValueError, match="uint8"):
    clf.predict(xv.astype(np.float32))


def _shuffled_in_grid_cells(clips_nthwc, seed=0):
  """Each frame's pixels shuffled inside the cells of the colour classifier's GRID x GRID grid:
  its features (cell means, colour histogram) are kept exactly, the shapes are gone."""
  n, t, h, w, c = clips_nthwc.shape
  cells = clips_nthwc.reshape(n, t, GRID, h // GRID, GRID, w // GRID, c).transpose(0, 1, 2, 4, 3, 5, 6)
  cells = cells.reshape(n, t, GRID, GRID, -1, c)
  order = np.random.default_rng(seed).permuted(np.broadcast_to(np.arange(cells.shape[4]), cells.shape[:5]), axis=-1)
  cells = np.take_along_axis(cells, order[..., None], axis=4)
  cells = cells.reshape(n, t, GRID, GRID, h // GRID, w // GRID, c)
  return cells.transpose(0, 1, 2, 4, 3, 5, 6).reshape(clips_nthwc.shape)


@pytest.fixture(scope="module")
def evaluator(games):
  """Both readers fit on the training episodes, scored on the held-out ones."""
  (x, y), (xv, yv) = games
  return RecognitionEvaluator.fit(x, y, xv, yv)


@pytest.mark.slow
def test_sprite_reader_recognizes_held_out_episodes_in_any_colours(games, evaluator):
  (x, y), (xv, yv) = games
  reader = evaluator.sprites
  assert reader.labels == ("boxing", "freeway", "pong") and reader.readings[-1] == NONE
  assert reader.accuracy(xv, yv) == 1.0  # other episodes of the same games
  # Channels permuted and inverted: the colour classifier loses its footing, the sprite reader does not.
  recoloured = 255 - xv[..., [2, 0, 1]]
  assert reader.accuracy(recoloured, yv) == 1.0
  assert evaluator.classifier.accuracy(recoloured, yv) <= 0.5
  logp = reader.log_probs(xv)
  assert logp.shape == (6, 4) and np.all(logp <= 0)
  # deterministic for a seed: two short fits give the same weights
  a, b = (SpriteReader.fit(x, y, steps=2, seed=3) for _ in range(2))
  np.testing.assert_array_equal(a.log_probs(xv[:2]), b.log_probs(xv[:2]))
  with pytest.raises(ValueError, match="one caption per clip"):
    SpriteReader.fit(x, y[:-1])
  with pytest.raises(ValueError, match="uint8"):
    reader.predict(xv.astype(np.float32))
  with pytest.raises(ValueError, match="multiples of one of them"):
    SpriteReader.fit(x[:, :, :30, :30], y)


@pytest.mark.slow
def test_a_palette_forgery_passes_the_colour_classifier_not_the_sprite_reader(games, evaluator):
  """Held-out clips with their pixels shuffled inside the colour classifier's grid cells carry
  exactly its evidence: it reads them as before; the sprite reader sees no game in them. So
  does a clip reduced to each cell's mean colour, or to each frame's mean colour."""
  _, (xv, yv) = games
  clf, reader = evaluator.classifier, evaluator.sprites
  shuffled = _shuffled_in_grid_cells(xv)
  flat = xv.reshape(-1, *xv.shape[2:])
  np.testing.assert_allclose(frame_features(shuffled.reshape(flat.shape)), frame_features(flat), atol=1e-6)
  n, t, h, w, c = xv.shape
  grid = xv.reshape(n, t, GRID, h // GRID, GRID, w // GRID, c)
  mosaic = np.broadcast_to(grid.mean((3, 5), keepdims=True), grid.shape).reshape(xv.shape).round().astype(np.uint8)
  mean_colour = np.broadcast_to(xv.mean((2, 3), keepdims=True), xv.shape).round().astype(np.uint8)
  assert clf.accuracy(shuffled, yv) == clf.accuracy(xv, yv) == 1.0
  assert clf.accuracy(mosaic, yv) == 1.0
  chance = 1 / len(reader.labels)
  for forgery in (shuffled, mosaic, mean_colour):
    assert reader.accuracy(forgery, yv) <= chance
    assert reader.predict(forgery).count(NONE) >= 4  # of 6: read as no game, not as another one
  rate = evaluator.rate(shuffled, yv)
  assert rate["rate"] == 1.0 and rate["sprite_rate"] <= chance and rate["sprite_none"] >= 4 / 6


@pytest.mark.slow
def test_recognition_evaluator_reports_both_readers(evaluator, games):
  _, (xv, yv) = games
  summary = evaluator.summary()
  assert summary["held_out_real_accuracy"] == 1.0 and summary["sprite_held_out_real_accuracy"] == 1.0
  assert summary["held_out_real_clips"] == 6 and summary["chance"] == pytest.approx(1 / 3)
  assert "GameClassifier" in summary["classifier"] and "SpriteReader" in summary["sprite_reader"]
  rate = evaluator.rate(xv, [*yv[:-1], "enduro"])  # a caption the readers never saw is left out
  assert rate == {"rate": 1.0, "sprite_rate": 1.0, "sprite_none": 0.0, "clips": 5, "unknown_captions": 1}
  assert evaluator.rate(xv[:1], ["enduro"])["sprite_rate"] is None


def test_scalars_round_trip_through_tensorboard_files(tmp_path):
  from tensorboardX import SummaryWriter
  writer = SummaryWriter(str(tmp_path / "tb"))
  for step in range(5):
    writer.add_scalar("train/loss", 1.0 / (step + 1), step)
  writer.add_scalar("eval/loss", 0.25, 4)
  writer.close()
  scalars = report.read_scalars(tmp_path / "tb")
  assert [s for s, _ in scalars["train/loss"]] == list(range(5))
  np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5], rtol=1e-6)
  assert scalars["eval/loss"] == [(4, 0.25)]
  events = next((tmp_path / "tb").glob("events.*"))
  events.write_bytes(events.read_bytes()[:-7])  # a crash mid-write: earlier records still read
  assert len(report.read_scalars(tmp_path / "tb")["train/loss"]) == 5
  with pytest.raises(FileNotFoundError, match="no TensorBoard directory"):
    report.read_scalars(tmp_path / "missing")


def test_contact_sheet_and_curves_are_pictures(tmp_path, games):
  from PIL import Image
  (x, _), _ = games
  path = report.contact_sheet([("pong", [x[0], x[1]]), ("two\nlines", [x[2]])], tmp_path / "sheet.png",
                              frames=3, scale=2, label_width=100)
  w, h = Image.open(path).size
  assert (w, h) == (100 + 2 * (3 * 32 * 2 + 6), 2 * (32 * 2 + 6) + 6)
  curves = report.plot_curves({"lm": {"train/loss": [(0, 2.0), (1, 1.0)]}}, [("LM", "lm", ["train/loss"])],
                              tmp_path / "curves.png")
  assert Image.open(curves).size[0] > 100


def test_sound_matching_finds_each_clips_own_sound(tmp_path):
  from kineto.demo.run import sound_matching
  rng = np.random.default_rng(0)
  t = np.arange(16000) / 16000
  real = {g: np.sin(2 * np.pi * f * t).astype(np.float32) for g, f in (("a", 220), ("b", 880), ("c", 3000))}
  arrays = {f"held_out_audio/{g}": w for g, w in real.items()}
  arrays |= {f"v2a/{g}": w[:15000] + 0.01 * rng.standard_normal(15000).astype(np.float32) for g, w in real.items()}
  (tmp_path / "samples").mkdir()
  np.savez(tmp_path / "samples" / "samples.npz", **arrays)
  m = sound_matching({"samples": tmp_path / "samples"})
  assert m["clips"] == 3 and m["matched_rate"] == 1.0 and m["chance"] == pytest.approx(1 / 3)
  assert m["matched_distance_db"] < m["mismatched_distance_db"]
  arrays |= {"v2a/a": arrays["v2a/b"], "v2a/b": arrays["v2a/a"]}  # swapped tracks: 1 of 3 right
  np.savez(tmp_path / "samples" / "samples.npz", **arrays)
  assert sound_matching({"samples": tmp_path / "samples"})["matched_rate"] == pytest.approx(1 / 3)


def test_a_stage_stopped_by_sigterm_is_not_recorded(tmp_path):
  stages = Stages(tmp_path, QUICK)
  with pytest.raises(DemoError, match="vidtok stage stopped at step 7 .* run the same command again"):
    stages.run("vidtok", lambda: {"step": 7, "stopped_early": True})
  assert not Stages(tmp_path, QUICK).done("vidtok")
  stages.run("vidtok", lambda: {"step": 30})
  assert Stages(tmp_path, QUICK).done("vidtok")


def test_a_demo_directory_of_another_plan_is_refused(tmp_path):
  Stages(tmp_path, QUICK).run("data", lambda: None)
  from kineto.demo.run import FULL
  with pytest.raises(DemoError, match="'quick' plan with other settings .*name.* than this 'full' one"):
    Stages(tmp_path, FULL)


# --- the quick demo, interrupted and resumed ----------------------------------------------

def _demo(out: pathlib.Path) -> subprocess.Popen:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=1")
  return subprocess.Popen([sys.executable, "-m", "kineto", "demo", "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_the_demo_lm_takes_the_cpu_kernels_only_on_one_cpu_device(monkeypatch, capsys):
  """One CPU device: the kernels' overrides (they build here); more devices: XLA's kernels;
  no C++ compiler: XLA's kernels, and the demo says why."""
  import jax

  from kineto.demo import run
  assert jax.device_count() == 8 and run.cpu_kernels() == ()  # the suite's fake mesh
  monkeypatch.setattr(jax, "device_count", lambda: 1)
  assert run.cpu_kernels() == ("lm.attention_impl=cpu", "lm.matmul_impl=cpu")
  monkeypatch.setenv("CXX", "no-such-compiler")
  assert run.cpu_kernels() == ()
  assert "the LM runs on XLA's kernels" in capsys.readouterr().out


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory):
  """`kineto demo --quick`, SIGTERMed (a preemption) inside the tokenizer stage once that stage's
  first checkpoint is written, then run again: (out, the second run's log, the saved step)."""
  out = tmp_path_factory.mktemp("demo") / "demo"
  first = _demo(out)
  ckpts = out / "vidtok" / "checkpoints"
  deadline = time.time() + 900
  while time.time() < deadline and first.poll() is None:
    if ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
      break
    time.sleep(0.05)
  assert first.poll() is None, first.communicate()[0][-3000:]
  first.send_signal(signal.SIGTERM)
  log = first.communicate(timeout=600)[0]
  saved = re.search(r"kineto: SIGTERM: saved step (\d+) to \S+; run the same command to resume\.", log)
  assert first.returncode == 0 and saved, log[-3000:]
  assert "vidtok stage stopped at step" in log
  step = int(saved.group(1))
  assert 0 < step < 30  # inside the stage (QUICK trains the tokenizer 30 steps)
  assert "vidtok" not in json.loads((out / "stages.json").read_text())["seconds"]
  second = _demo(out)
  log = second.communicate(timeout=1800)[0]
  assert second.returncode == 0, log[-3000:]
  return out, log, step


def test_quick_demo_resumes_and_writes_every_output(quick_demo):
  out, log, step = quick_demo
  assert "data: done" in log  # finished stages are not redone
  vidtok = json.loads((out / "vidtok" / "summary.json").read_text())
  assert vidtok["resumed_from"] == step and vidtok["step"] == 30  # the stage went on from its checkpoint
  for name in ("report.md", "report.json", "contact_sheet.png", "loss_curves.png", "stages.json"):
    assert (out / name).is_file(), name
  for game in ("pong", "freeway", "breakout"):
    for kind in ("t2v", "i2v", "continuation", "inpaint"):
      assert (out / "samples" / f"{kind}_{game}.mp4").stat().st_size > 0
  assert list((out / "lm" / "tb").glob("events.*")) and list((out / "vidtok" / "tb").glob("events.*"))
  r = json.loads((out / "report.json").read_text())
  rec = r["recognition"]
  assert rec["chance"] == pytest.approx(1 / 3) and rec["t2v_samples"] == 3 * QUICK.samples_per_game
  hits = sum(p == g for g, predicted in rec["t2v_predictions"].items() for p in predicted)
  assert rec["t2v_recognition_rate"] == pytest.approx(hits / rec["t2v_samples"])
  assert rec["held_out_real_accuracy"] > rec["chance"]
  # the sprite reader's reading beside the colour classifier's
  assert rec["sprite_held_out_real_accuracy"] > rec["chance"]
  assert 0 <= rec["sprite_held_out_reconstruction_accuracy"] <= 1
  assert set(rec["sprite_t2v_predictions"]) == set(rec["t2v_predictions"])
  sprite_hits = sum(p == g for g, predicted in rec["sprite_t2v_predictions"].items() for p in predicted)
  assert rec["sprite_t2v_recognition_rate"] == pytest.approx(sprite_hits / rec["t2v_samples"])
  assert rec["sprite_t2v_none"] == pytest.approx(
      sum(p == NONE for ps in rec["sprite_t2v_predictions"].values() for p in ps) / rec["t2v_samples"])
  assert 0 < rec["sprite_reader_fit_seconds"] < 120
  assert all(np.isfinite(v) for v in (r["tokenizer"]["psnr"], r["lm"]["held_out_loss"],
                                       r["audio_codec"]["spectral_distance_db"]))
  v2a = r["video_to_audio"]
  assert v2a["clips"] == 3 and v2a["chance"] == pytest.approx(1 / 3)
  assert v2a["matched_rate"] * 3 == pytest.approx(round(v2a["matched_rate"] * 3))  # k of 3 clips
  for game in ("pong", "freeway", "breakout"):
    assert (out / "samples" / f"v2a_{game}.mp4").stat().st_size > 0
  # The quick plan trains no pieces-only baseline (lm_pieces): the full plan does. Its eval stage
  # is recorded but evaluates nothing (FVD needs 32 held-out clips; it has 6).
  assert set(r["stage_seconds"]) == {"data", "vidtok", "audio", "text", "tokens", "lm", "samples", "eval",
                                     "sr_data", "sr_tokens", "sr", "sr_eval"}
  sr = r["superres"]  # SR vs bicubic on the held-out clips at 2x the size, measured in the run
  assert sr["clips"] == 6 and sr["size"] == [64, 64] and sr["train"]["objective"] == "masked"
  assert all(np.isfinite(sr[k][m]) for k in ("sr", "bicubic", "ceiling") for m in ("psnr", "lpips"))
  assert sr["sr_beats_bicubic"]["psnr"] == (sr["sr"]["psnr"] > sr["bicubic"]["psnr"])
  assert (out / "superres.png").is_file() and list((out / "sr" / "tb").glob("events.*"))
  # per game: t2v, i2v, continuation, inpaint, v2a; then 2 held-out paraphrases
  assert r["sampling_calls"] == 3 * (1 + 3 + 1) + 3 * 2
  para = rec["paraphrase_recognition"]
  assert set(para) == {"minilm"} and para["minilm"]["samples"] == 3 * 2 * QUICK.paraphrase_samples
  hits = sum(p == key.split(" <- ")[0] for key, ps in para["minilm"]["readings"].items() for p in ps)
  assert para["minilm"]["rate"] == pytest.approx(hits / para["minilm"]["samples"])
  assert r["lm"]["text_encoder"] == "minilm"
  md = (out / "report.md").read_text()
  assert f"{rec['t2v_recognition_rate']:.1%}" in md and f"{r['tokenizer']['psnr']:.3g}" in md
  assert f"| SR | {sr['sr']['psnr']:.3g} | {sr['sr']['lpips']:.3g} |" in md
  assert f"**{para['minilm']['rate']:.1%}** of 6 | {para['minilm']['sprite_rate']:.1%} |" in md
  assert f"It recognizes the prompted game in **{rec['sprite_t2v_recognition_rate']:.1%}**" in md
  assert f"reads {rec['sprite_held_out_real_accuracy']:.1%} of held-out real clips" in md


def test_zero_shot_notebook_runs_on_the_quick_demo(quick_demo):
  import nbformat
  from nbclient import NotebookClient
  out, _, _ = quick_demo
  nb = nbformat.read(ROOT / "notebooks" / "zero_shot.ipynb", as_version=4)
  os.environ["KINETO_DEMO"] = str(out)  # the notebook's kernel inherits it
  try:
    # Run where Jupyter runs it: in notebooks/.
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
  finally:
    del os.environ["KINETO_DEMO"]
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
  assert not [o for o in outputs if o.output_type == "error"]
  assert any("image/png" in o.get("data", {}) for o in outputs)  # the plots
  assert any("text/html" in o.get("data", {}) for o in outputs)  # mediapy videos
