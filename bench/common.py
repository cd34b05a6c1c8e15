"""Shared helpers for bench/ scripts: timing, machine info and the JSON result line.

The matmul peak lives in train/flops.py, so training summaries and benchmarks agree."""
from __future__ import annotations

import json
import os
import platform

import jax
from timing import time_fn  # noqa: F401 (re-exported: bench scripts call common.time_fn)


def machine_info() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": jax.device_count()}


def emit(figures: dict) -> None:
  """Prints the figures as the last output line: one JSON object."""
  print(json.dumps(figures, sort_keys=True))
