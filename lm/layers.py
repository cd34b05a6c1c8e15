"""Small building blocks of the transformer: RMSNorm, rotary positions, the SwiGLU MLP, and
`dense`, the matmul every projection goes through (XLA's, or BLAS on CPU: `lm.matmul_impl`).

Shape letters: B batch, T length, N heads, K head dim, D embed.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from sharding import param, shard


def dense(x, w, impl: str = "xla", *, trans_a: bool = False, trans_b: bool = False, contract: int = 1):
  """op(x) @ op(w), contracting `contract` axes, through XLA (impl "xla") or BLAS ("cpu").

  Without transposes: x [..., K] @ w [K, ...] -> [..., ...]. trans_a: x [K, M] (2-D) is read as
  x^T; trans_b: w [N, K] (2-D) as w^T. "cpu" is differentiable only without transposes (the
  transposed forms are for hand-written backward passes).
  """
  if impl == "cpu":
    from lm.kernels import matmul_cpu  # builds the kernel on first use
    if trans_a or trans_b:
      return matmul_cpu.gemm(x, w, trans_a, trans_b).astype(x.dtype)
    return matmul_cpu.matmul(x, w, contract)
  if impl != "xla":
    raise ValueError(f"matmul impl {impl!r} is not one of ('xla', 'cpu').")
  x = x.T if trans_a else x
  w = w.T if trans_b else w
  return jnp.tensordot(x, w, contract)


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


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def swiglu(x_btd, w_gate_df, w_up_df, w_out_fd, impl: str = "xla"):
  """(silu(x @ w_gate) * (x @ w_up)) @ w_out, with its backward written out.

  The hand-written backward saves the two pre-activations and spells out the six
  matmuls; XLA's CPU backend otherwise fuses the silu derivative into a transposed copy
  of a [B*T, F] tensor per layer, which made the MLP backward ~1.7x slower. `impl`: the
  matmuls' implementation (`dense`).
  """
  return _swiglu_fwd(x_btd, w_gate_df, w_up_df, w_out_fd, impl)[0]


def _swiglu_hidden(gate_btf, up_btf):
  return shard(jax.nn.silu(gate_btf) * up_btf, "act_batch", "act_length", "act_mlp")


def _swiglu_fwd(x_btd, w_gate_df, w_up_df, w_out_fd, impl="xla"):
  gate_btf = shard(dense(x_btd, w_gate_df, impl), "act_batch", "act_length", "act_mlp")
  up_btf = shard(dense(x_btd, w_up_df, impl), "act_batch", "act_length", "act_mlp")
  y_btd = dense(_swiglu_hidden(gate_btf, up_btf), w_out_fd, impl)
  return y_btd, (x_btd, gate_btf, up_btf, w_gate_df, w_up_df, w_out_fd)


def _swiglu_bwd(impl, residuals, dy_btd):
  x_btd, gate_btf, up_btf, w_gate_df, w_up_df, w_out_fd = residuals
  sig_btf = jax.nn.sigmoid(gate_btf)
  silu_btf = gate_btf * sig_btf
  h_btf = silu_btf * up_btf
  if impl == "xla":
    dh_btf = jnp.einsum("btd,fd->btf", dy_btd, w_out_fd)
  else:  # [B*T, ...] matrices, the transposes read in place by BLAS
    dh_btf = dense(_flat(dy_btd), w_out_fd, impl, trans_b=True).reshape(gate_btf.shape)
  dh_btf = shard(dh_btf, "act_batch", "act_length", "act_mlp")
  d_up_btf = dh_btf * silu_btf
  d_gate_btf = dh_btf * up_btf * (sig_btf * (1 + gate_btf * (1 - sig_btf)))
  if impl == "xla":
    dx_btd = (jnp.einsum("btf,df->btd", d_gate_btf, w_gate_df)
              + jnp.einsum("btf,df->btd", d_up_btf, w_up_df))
    dws = (jnp.einsum("btd,btf->df", x_btd, d_gate_btf), jnp.einsum("btd,btf->df", x_btd, d_up_btf),
           jnp.einsum("btf,btd->fd", h_btf, dy_btd))
  else:
    dx_btd = (dense(_flat(d_gate_btf), w_gate_df, impl, trans_b=True)
              + dense(_flat(d_up_btf), w_up_df, impl, trans_b=True)).reshape(x_btd.shape)
    dws = tuple(dense(_flat(a), _flat(b), impl, trans_a=True)
                for a, b in ((x_btd, d_gate_btf), (x_btd, d_up_btf), (h_btf, dy_btd)))
  return (shard(dx_btd, "act_batch", "act_length", "act_embed"), *dws)


def _flat(x_bt_):
  return x_bt_.reshape(-1, x_bt_.shape[-1])


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)
