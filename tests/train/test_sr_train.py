"""The SR stage's data and trainer: `kineto tokenize --lowres` pairs, `kineto sr train` through
the one loop (checkpoints, resume, TensorBoard, held-out loss) and its bad-input errors."""
from __future__ import annotations

import json

import numpy as np

from kineto import cli
from train.data.shards import open_token_shards, read_manifest
from train.data.tokenize import downsample


def test_tokenize_lowres_writes_pairs_of_the_same_clip(atari32_sr_tokens):
  manifest = read_manifest(atari32_sr_tokens)
  assert manifest["lowres"] == {"factor": 2, "height": 16, "width": 16, "latents": [5, 2, 2]}
  record = open_token_shards(atari32_sr_tokens)[0]
  assert record["video"].shape == (5, 4, 4) and record["video_lowres"].shape == (5, 2, 2)
  clip = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
  np.testing.assert_array_equal(downsample(clip, 2)[0, 0, 0], clip[0, :2, :2].reshape(-1, 3).mean(0).round())


def _train(workdir, tokens, *extra):
  return cli.main(["sr", "train", "--config", "sr_tiny", "--workdir", str(workdir),
                   "--set", f"data.tokens_dir={tokens}", *extra])


def test_sr_train_checkpoints_resumes_and_reports_held_out_loss(tmp_path, atari32_sr_tokens, kineto_cli):
  work = tmp_path / "sr"
  assert _train(work, atari32_sr_tokens, "--stop_after", "2") == 0
  assert kineto_cli.checkpoints(work) == [2] and not (work / "summary.json").exists()
  assert _train(work, atari32_sr_tokens) == 0
  summary = json.loads((work / "summary.json").read_text())
  assert summary["resumed_from"] == 2 and summary["step"] == 4 and summary["objective"] == "masked"
  assert np.isfinite(summary["eval_loss"]) and summary["eval_loss"] < np.log(256) + 1
  assert kineto_cli.checkpoints(work)[-1] == 4 and any((work / "tb").iterdir())


def test_sr_train_refuses_bad_pairs_before_compiling(tmp_path, atari32_sr_tokens, atari32_tokens, capsys):
  assert _train(tmp_path / "a", atari32_sr_tokens, "--set", "sr.height=8", "--set", "sr.width=8") == 2
  err = capsys.readouterr().err
  assert "--set sr.height=4" in err and err.count("\n") == 1
  assert _train(tmp_path / "b", atari32_tokens[0]) == 2
  assert "--lowres 2" in capsys.readouterr().err
  assert cli.main(["sr", "train", "--config", "lm_tiny", "--workdir", str(tmp_path / "c")]) == 2
  assert "not a super-resolution config" in capsys.readouterr().err
