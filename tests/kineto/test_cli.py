"""The `kineto` command: a real training run has a pulse; bad input fails before work."""
import json

import pytest

from kineto.cli import main


def test_lm_train_runs_and_writes_its_outputs(tmp_path, capsys):
  workdir = tmp_path / "run"
  assert main(["lm", "train", "--config", "configs/lm_tiny.py", "--workdir", str(workdir),
               "--set", "train.steps=3", "--set", "train.seq_len=64"]) == 0
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["step"] == 3 and summary["devices"] == 8
  for key in ("loss", "eval_loss", "tokens_per_second", "mfu"):
    assert summary[key] > 0, key
  assert list((workdir / "tb").glob("events.out.tfevents.*"))
  assert "GREEDY CONTINUATION" in (workdir / "sample.txt").read_text()


@pytest.mark.parametrize("args, message", [
    (["--set", "lm.heads=5"], "does not divide lm.embed"),
    (["--set", "lm.layerz=5"], "valid fields are"),
    (["--set", "mesh.data=3"], "do not divide the 8 available devices"),
    (["--set", "train.batch_size=4"], "act_batch=4 is not divisible"),
    (["--set", "lm.vocab=100"], "smaller than the vocabulary layout"),
    (["--set", "vocab.text=100"], "cannot hold the byte corpus"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
  code = main(["lm", "train", "--config", "lm_tiny", "--workdir", str(tmp_path), *args])
  assert code == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "summary.json").exists()
