"""Timing shared by every bench script, the PyTorch peers included: no JAX or torch import."""
from __future__ import annotations

import statistics
import time


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
