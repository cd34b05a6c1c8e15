"""`kineto tokenizer train|eval` end to end on real (Atari) clips: stop, resume, evaluate,
inflate an image tokenizer into a video tokenizer."""
from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

import configs
from kineto.cli import main
from train.tokenizer_trainer import load_tokenizer, train_tokenizer

FAST = ["train.perceptual_weight=0", "train.gan_weight=0", "train.batch_size=2", "train.frames=5",
        "mesh.fsdp=2", "mesh.tensor=-1"]  # 8 fake devices: batch 2 over fsdp, tensor replicates


@pytest.fixture(scope="module")
def clips_dir(atari32):
  """The session's shared demo clips (tests/conftest.py): 32x32, 6 train, 4 validation."""
  return str(atari32)


@pytest.mark.slow
def test_stop_resume_evaluate(clips_dir, tmp_path, capsys):
  cfg = configs.load("vidtok_tiny", FAST + [f"train.data_dir={clips_dir}", "train.steps=3"])
  first = train_tokenizer(cfg, tmp_path, progress=False, stop_after=2)
  assert first == {"config": "vidtok_tiny", "step": 2, "stopped_early": True}
  summary = train_tokenizer(cfg, tmp_path, progress=False)
  assert summary["resumed_from"] == 2 and summary["step"] == 3
  held = summary["held_out"]
  assert held["clips"] == 4 and held["tokens"] == 4 * 5 * 4 * 4  # whole 17-frame clips: 5x4x4
  assert 0 < held["psnr"] < 60 and 0 < held["usage_fraction"] <= 1
  assert json.loads((tmp_path / "summary.json").read_text())["step"] == 3
  assert (tmp_path / "reconstructions.gif").stat().st_size > 0
  assert list((tmp_path / "tb").glob("events.*"))

  saved_cfg, model = load_tokenizer(tmp_path)
  assert saved_cfg.vidtok == cfg.vidtok
  capsys.readouterr()  # only the eval's own output below
  assert main(["tokenizer", "eval", "--workdir", str(tmp_path), "--clips", "2"]) == 0
  report = json.loads(capsys.readouterr().out)
  assert report["clips"] == 2 and report["psnr"] > 0 and report["lpips"] > 0
  assert (tmp_path / "eval_validation.gif").is_file()


@pytest.mark.slow
def test_image_tokenizer_inflates_to_video(clips_dir, tmp_path):
  image = configs.load("vidtok_tiny", FAST + [f"train.data_dir={clips_dir}", "train.frames=1",
                                              "train.steps=1"])
  train_tokenizer(image, tmp_path / "image", progress=False)
  video_cfg = configs.load("vidtok_tiny", FAST + [f"train.data_dir={clips_dir}", "train.steps=1",
                                                  f"train.init_from={tmp_path / 'image'}",
                                                  "train.learning_rate=1e-9"])
  train_tokenizer(video_cfg, tmp_path / "video", progress=False)
  _, image_model = load_tokenizer(tmp_path / "image", ema=False)
  _, video_model = load_tokenizer(tmp_path / "video", ema=False)
  frame = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 1, 32, 32, 3)), jnp.float32)
  # After one step at a negligible learning rate the inflated model still encodes images as
  # the image tokenizer did.
  np.testing.assert_array_equal(video_model.encode(frame), image_model.encode(frame))


def test_missing_dataset_names_the_fix(tmp_path):
  cfg = configs.load("vidtok_tiny", [f"train.data_dir={tmp_path / 'nowhere'}"])
  with pytest.raises(ValueError, match="kineto data demo --out"):
    train_tokenizer(cfg, tmp_path / "work", progress=False)
