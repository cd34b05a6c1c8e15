"""Shared measurement helpers for bench/ scripts: the machine's matmul peak and timing."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp


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


def matmul_flops_per_second(n: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
  """Practical peak: FLOP/s of a square n x n matmul chain on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype) / n ** 0.5
  chain = 4

  @jax.jit
  def f(a):
    for _ in range(chain):
      a = a @ b
    return a

  seconds = time_fn(lambda: f(a).block_until_ready(), warmup=2, repeats=repeats)
  return chain * 2 * n ** 3 / seconds


def machine_info() -> dict:
  return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
          "cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": jax.device_count()}


def emit(figures: dict) -> None:
  """Prints the figures as the last output line: one JSON object."""
  print(json.dumps(figures, sort_keys=True))
