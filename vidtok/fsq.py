"""Finite scalar quantization (FSQ, Mentzer et al. 2023): each latent channel rounds to one
of a few evenly spaced levels.

A token has d channels with L_1 .. L_d levels. Channel i is squashed into (-1, 1) by tanh,
stretched to (0, L_i - 1) and rounded to the nearest integer digit j_i; the token's code is
the mixed-radix number sum_i j_i prod_{k<i} L_k. Here every L_i is a power of two, so the
product is 2**bits and a code is a `bits`-bit integer like an LFQ code: the LM's vocabulary,
the token shards and the rate accounting do not change with the quantizer. The decoder sees
the digits mapped back to [-1, 1]; gradients pass straight through the rounding. FSQ needs
no auxiliary loss: its grid has no codebook to collapse, and the tanh keeps latents in range.
(configs/schema/tokenizer.py checks the levels.)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _radix(levels: tuple[int, ...]) -> np.ndarray:
  return np.cumprod((1,) + tuple(levels[:-1])).astype(np.int32)


def quantize(z: jax.Array, levels: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
  """z [..., d] -> (the level values in [-1, 1] with straight-through gradients, int32 codes [...])."""
  half = (np.asarray(levels, np.float32) - 1) / 2
  stretched = jnp.tanh(z.astype(jnp.float32)) * half + half       # in (0, L - 1)
  digits = jnp.clip(jnp.round(stretched), 0, 2 * half)
  soft, hard = stretched / half - 1, digits / half - 1
  q = (soft + jax.lax.stop_gradient(hard - soft)).astype(z.dtype)
  codes = jnp.sum(digits.astype(jnp.int32) * _radix(levels), axis=-1)
  return q, codes


def index_to_latent(index: jax.Array, levels: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """int codes [...] -> the code's level values [..., d] in [-1, 1] (the inverse of `quantize`)."""
  n = np.asarray(levels, np.int32)
  digits = (jnp.asarray(index, jnp.int32)[..., None] // _radix(levels)) % n
  half = (n.astype(np.float32) - 1) / 2
  return (digits / half - 1).astype(dtype)
