"""The `kineto` command: a real training run has a pulse; bad input fails before work."""
import json
import os
import subprocess
import sys

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


def pod_recipe() -> list[list[str]]:
  """The README's pod recipe: each command of the fenced block after "A pod run is", as argv."""
  import pathlib
  import shlex
  text = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
  block = text[text.index("A pod run is"):].split("```")[1]
  return [shlex.split(line)[1:] for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def test_pod_recipe_commands_parse_and_their_configs_agree():
  import configs
  from kineto.cli import build_parser
  parser = build_parser()
  loaded = {}
  commands = pod_recipe()
  assert len(commands) == 6
  for argv in commands:
    args = parser.parse_args(argv)  # every flag exists (argparse exits on an unknown one)
    if getattr(args, "config", None):
      loaded[args.command] = configs.load(args.config, getattr(args, "set", []))
  lm, tok, audio = loaded["lm"], loaded["tokenizer"], loaded["audio"]
  assert loaded["text"].vocab == lm.vocab
  text = next(a for a in commands if a[0] == "text")
  assert int(text[text.index("--vocab") + 1]) == lm.vocab.text == 32_000
  assert tok.vidtok.bits == lm.vocab.video_bits == 18
  assert (audio.codec.levels, audio.codec.codebook_size) == (lm.vocab.audio_levels, lm.vocab.audio_codebook)
  assert tok.train.data_dir == audio.train.data_dir == "/mnt/data/clips"
  assert lm.data.source == "tokens" and lm.data.text_budget >= 64


def test_no_tpu_probe_where_no_tpu_is_attached(tmp_path):
  """libtpu (installed for AOT compiles) must not print its page of errors on a CPU machine."""
  from kineto import cli
  pci = tmp_path / "pci"
  (pci / "0000:00:01.0").mkdir(parents=True)
  (pci / "0000:00:01.0" / "vendor").write_text("0x8086\n")
  env = {}
  cli._skip_absent_tpu(env, str(pci))
  assert env == {"JAX_PLATFORMS": "cpu"}
  (pci / "0000:00:04.0").mkdir()
  (pci / "0000:00:04.0" / "vendor").write_text("0x1ae0\n")  # a TPU chip: JAX decides
  env = {}
  cli._skip_absent_tpu(env, str(pci))
  assert env == {}
  env = {"JAX_PLATFORMS": "tpu"}
  cli._skip_absent_tpu(env, str(pci / "none"))
  assert env == {"JAX_PLATFORMS": "tpu"}
  # End to end: the command, with JAX_PLATFORMS unset, queries devices without libtpu's noise.
  clean = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  out = subprocess.run([sys.executable, "-m", "kineto", "compile", "--config", "lm_tiny", "--topology", "cpu:1"],
                       env=clean, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert "TPU" not in out.stderr and "libtpu" not in out.stderr, out.stderr[-2000:]
