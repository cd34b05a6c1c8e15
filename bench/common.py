"""Shared helpers for bench/ scripts: timing, machine info and the JSON result line.

The matmul peak lives in train/flops.py, so training summaries and benchmarks agree."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax


def time_fn(fn, *, warmup: int = 1, repeats: int = 5) -> float:
  """Median wall time in seconds of `fn()` (which must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def machine_info() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": jax.device_count()}


def emit(figures: dict) -> None:
  """Prints the figures as the last output line: one JSON object."""
  print(json.dumps(figures, sort_keys=True))
