"""Small building blocks of the transformer: RMSNorm and rotary position embeddings.

Shape letters: B batch, T length, N heads, K head dim, D embed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sharding import param


class RMSNorm(nnx.Module):
  """Root-mean-square norm over the last axis, computed in float32, with a learned scale."""

  def __init__(self, dim: int, *, eps: float = 1e-6, axis_name: str = "norm"):
    self.eps = eps
    self.scale = param(jnp.ones((dim,), jnp.float32), (axis_name,))

  def __call__(self, x: jax.Array) -> jax.Array:
    x32 = x.astype(jnp.float32)
    inv = jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * inv * self.scale[...]).astype(x.dtype)


def rope(x_btnk: jax.Array, positions_bt: jax.Array, theta: float) -> jax.Array:
  """Rotates pairs (x[..., i], x[..., i + K/2]) by angle position * theta^(-2i/K)."""
  k = x_btnk.shape[-1]
  inv_freq_h = theta ** (-jnp.arange(0, k // 2, dtype=jnp.float32) * 2.0 / k)
  angle_bth = positions_bt.astype(jnp.float32)[..., None] * inv_freq_h
  sin, cos = jnp.sin(angle_bth)[:, :, None, :], jnp.cos(angle_bth)[:, :, None, :]
  x1, x2 = jnp.split(x_btnk.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_btnk.dtype)
