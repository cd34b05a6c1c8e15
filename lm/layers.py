"""Small building blocks of the transformer: RMSNorm, rotary positions, the SwiGLU MLP.

Shape letters: B batch, T length, N heads, K head dim, D embed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sharding import param, shard


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
  """Rotates pairs (x[..., i], x[..., i + K/2]) by angle position * theta^(-2i/K).

  The pair swap (-x2, x1) is two half-slices and a concatenate; its backward is written
  out (`_rope_bwd`, the same swap with the sign flipped), because XLA's CPU backend runs
  the pads and slices that autodiff makes of it several times slower.
  """
  k = x_btnk.shape[-1]
  inv_freq_k = jnp.tile(theta ** (-jnp.arange(0, k // 2, dtype=jnp.float32) * 2.0 / k), 2)
  angle_btk = positions_bt.astype(jnp.float32)[..., None] * inv_freq_k
  sin, cos = jnp.sin(angle_btk)[:, :, None, :], jnp.cos(angle_btk)[:, :, None, :]
  return _rotate(x_btnk, cos, sin)


def _swap_halves(x):
  """(x1, x2) -> (-x2, x1) over the last axis: the rotation by 90 degrees of each pair."""
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


@jax.custom_vjp
def _rotate(x_btnk, cos_bt1k, sin_bt1k):
  return (x_btnk * cos_bt1k + _swap_halves(x_btnk) * sin_bt1k).astype(x_btnk.dtype)


def _rotate_fwd(x_btnk, cos_bt1k, sin_bt1k):
  return _rotate(x_btnk, cos_bt1k, sin_bt1k), (cos_bt1k, sin_bt1k)


def _rotate_bwd(residuals, dy_btnk):
  # The swap is a signed permutation S with S^T = -S: dx = dy * cos - S(dy * sin).
  # The angles are functions of the positions only: no gradient.
  cos_bt1k, sin_bt1k = residuals
  dx = dy_btnk * cos_bt1k - _swap_halves(dy_btnk * sin_bt1k)
  return dx.astype(dy_btnk.dtype), jnp.zeros_like(cos_bt1k), jnp.zeros_like(sin_bt1k)


_rotate.defvjp(_rotate_fwd, _rotate_bwd)


@jax.custom_vjp
def swiglu(x_btd, w_gate_df, w_up_df, w_out_fd):
  """(silu(x @ w_gate) * (x @ w_up)) @ w_out, with its backward written out.

  The hand-written backward saves the two pre-activations and spells out the six
  matmuls; XLA's CPU backend otherwise fuses the silu derivative into a transposed copy
  of a [B*T, F] tensor per layer, which made the MLP backward ~1.7x slower.
  """
  return _swiglu_fwd(x_btd, w_gate_df, w_up_df, w_out_fd)[0]


def _swiglu_hidden(gate_btf, up_btf):
  return shard(jax.nn.silu(gate_btf) * up_btf, "act_batch", "act_length", "act_mlp")


def _swiglu_fwd(x_btd, w_gate_df, w_up_df, w_out_fd):
  gate_btf = shard(x_btd @ w_gate_df, "act_batch", "act_length", "act_mlp")
  up_btf = shard(x_btd @ w_up_df, "act_batch", "act_length", "act_mlp")
  y_btd = _swiglu_hidden(gate_btf, up_btf) @ w_out_fd
  return y_btd, (x_btd, gate_btf, up_btf, w_gate_df, w_up_df, w_out_fd)


def _swiglu_bwd(residuals, dy_btd):
  x_btd, gate_btf, up_btf, w_gate_df, w_up_df, w_out_fd = residuals
  sig_btf = jax.nn.sigmoid(gate_btf)
  silu_btf = gate_btf * sig_btf
  h_btf = silu_btf * up_btf
  dh_btf = shard(jnp.einsum("btd,fd->btf", dy_btd, w_out_fd), "act_batch", "act_length", "act_mlp")
  d_up_btf = dh_btf * silu_btf
  d_gate_btf = dh_btf * up_btf * (sig_btf * (1 + gate_btf * (1 - sig_btf)))
  dx_btd = (jnp.einsum("btf,df->btd", d_gate_btf, w_gate_df)
            + jnp.einsum("btf,df->btd", d_up_btf, w_up_df))
  return (shard(dx_btd, "act_batch", "act_length", "act_embed"),
          jnp.einsum("btd,btf->df", x_btd, d_gate_btf),
          jnp.einsum("btd,btf->df", x_btd, d_up_btf),
          jnp.einsum("btf,btd->fd", h_btf, dy_btd))


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)
