"""The MAGVIT/MaskGIT masked-token objective of the SR stage (train/sr_trainer.py).

Each training example hides a cosine-scheduled share of its high-res codes: r ~ U(0, 1),
ceil(N * cos(pi/2 * r)) positions (at least one) chosen uniformly, so small and large
masking ratios both occur, weighted towards heavy masking as at the start of MaskGIT
sampling. The cross-entropy counts the hidden positions only: a known token is given in
the input and predicting it teaches nothing. Drawn on the host with numpy (seeded by the
step), so a resumed run draws the same masks.

Shape letters: B batch, N positions, V codes.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np


def cosine_mask_counts(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
  """int [B]: positions to hide per example, ceil(n * cos(pi/2 * r)) in [1, n]."""
  r = rng.uniform(size=batch)
  return np.clip(np.ceil(n * np.cos(math.pi / 2 * r)), 1, n).astype(np.int64)


def cosine_mask(rng: np.random.Generator, batch: int, n: int) -> np.ndarray:
  """bool [B, N]: True at the hidden positions (counts from `cosine_mask_counts`)."""
  counts = cosine_mask_counts(rng, batch, n)
  rank = np.argsort(np.argsort(rng.uniform(size=(batch, n)), axis=1), axis=1)
  return rank < counts[:, None]


def masked_loss(logits_bnv: jax.Array, targets_bn: jax.Array, masked_bn: jax.Array):
  """(mean cross-entropy over the masked positions, metrics); unmasked positions count for
  nothing, in the loss or its gradient."""
  logp_bnv = jax.nn.log_softmax(logits_bnv.astype(jnp.float32), axis=-1)
  ce_bn = -jnp.take_along_axis(logp_bnv, targets_bn[..., None], axis=-1)[..., 0]
  weight_bn = masked_bn.astype(jnp.float32)
  count = jnp.sum(weight_bn)
  loss = jnp.sum(ce_bn * weight_bn) / jnp.maximum(count, 1.0)
  correct = jnp.sum((jnp.argmax(logits_bnv, axis=-1) == targets_bn) * weight_bn)
  return loss, {"loss": loss, "tokens": count, "accuracy": correct / jnp.maximum(count, 1.0)}
