"""FLOP accounting for MFU: the model's analytic FLOPs and the machine's measured peak.

Model FLOPs per training step = 6 x (matmul parameters) x tokens + 12 x heads x head_dim
x (query, visible key) pairs per layer. Only pairs the prefix-LM mask lets attend are
counted, so work a kernel skips (or wastes) on masked pairs is never credited.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from configs.schema import LmConfig


def visible_pairs(input_mask_bt: np.ndarray) -> int:
  """(query, key) pairs visible under the prefix-LM mask, summed over a batch.

  Assumes one segment per row with its prefix at the start, as in un-packed sequences.
  """
  input_mask_bt = np.asarray(input_mask_bt, bool)
  t = input_mask_bt.shape[1]
  prefix_b = input_mask_bt.sum(axis=1)
  q = np.arange(t)
  return int(np.sum(np.maximum(q[None, :] + 1, prefix_b[:, None])))


def matmul_params(lm: LmConfig) -> int:
  """Parameters that take part in a matmul per token (all but the embedding lookup)."""
  lookup = 0 if lm.tie_embeddings else lm.vocab * lm.embed
  return lm.param_count() - lookup


def train_step_flops(lm: LmConfig, input_mask_bt: np.ndarray) -> float:
  """Model FLOPs of one training step (forward + backward) on a batch with this mask."""
  b, t = np.shape(input_mask_bt)
  attention = 12 * lm.heads * lm.head_size * visible_pairs(input_mask_bt) * lm.layers
  return 6.0 * matmul_params(lm) * b * t + attention


def measure_matmul_flops_per_second(n: int = 2048, repeats: int = 5, dtype=jnp.float32) -> float:
  """The device's practical peak: FLOP/s of a chain of n x n matmuls in `dtype`."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = (jax.random.normal(jax.random.key(1), (n, n)) / n ** 0.5).astype(dtype)
  chain = 4

  @jax.jit
  def f(a):
    for _ in range(chain):
      a = a @ b
    return a

  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return chain * 2 * n ** 3 / best
