"""Two real processes on 127.0.0.1 (gloo collectives) train like one process on the same mesh.

Each process runs the real `kineto` entry point with 2 fake CPU devices, so the global mesh
has 4 devices; a single process with 4 fake devices is the reference.
"""
import json
import os
import sys

import pytest
from conftest import free_port, run_together

TRAIN = ["lm", "train", "--config", "lm_tiny", "--set", "train.steps=4", "--set", "train.seq_len=64"]


def kineto(args, workdir):
  return [sys.executable, "-m", "kineto", *args, *TRAIN, "--workdir", str(workdir)]


def cpu_env(devices):
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  port = free_port()
  # The reference runs beside the two: their compiles, each on one thread, share the cores.
  done = run_together([*(kineto(["--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
                                 "--process_id", str(i)], tmp_path / "two") for i in range(2)),
                       kineto([], tmp_path / "one")], tmp_path / "logs", env=[cpu_env(2), cpu_env(2), cpu_env(4)])
  for code, out in done:
    assert code == 0, out[-3000:]
  two = json.loads((tmp_path / "two" / "summary.json").read_text())
  one = json.loads((tmp_path / "one" / "summary.json").read_text())
  assert two["devices"] == one["devices"] == 4 and two["mesh"] == one["mesh"]
  assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
  assert two["eval_loss"] == pytest.approx(one["eval_loss"], rel=1e-5)
