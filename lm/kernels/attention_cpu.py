"""The fused CPU attention kernel (attention_cpu.cc): built on first use, called through XLA FFI.

`cpu_attention` computes exactly what lm/attention.py's "blockwise" implementation does (the
prefix-LM rule, a backward from the saved log-sum-exp), in float32, with each 64-query tile's
scores, softmax and products kept in cache (see the .cc file). It is chosen with
`lm.attention_impl="cpu"` and runs only on CPU: lowering it for a TPU or GPU fails at compile
time with XLA's "no FFI handler" error, so a pod recipe keeps "blockwise".

The shared library is built on first use (lm/kernels/__init__.py: `build`).
"""
from __future__ import annotations

import ctypes
import functools

import jax
import jax.numpy as jnp
import numpy as np

from lm.kernels import build

_FORWARD, _BACKWARD = "kineto_attention_cpu_fwd", "kineto_attention_cpu_bwd"


@functools.cache
def _register() -> None:
  lib = ctypes.CDLL(str(build("attention_cpu.cc")))
  jax.ffi.register_ffi_target(_FORWARD, jax.ffi.pycapsule(lib.KinetoAttentionForward), platform="cpu")
  jax.ffi.register_ffi_target(_BACKWARD, jax.ffi.pycapsule(lib.KinetoAttentionBackward), platform="cpu")


def _operands(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt):
  f32 = lambda x: x.astype(jnp.float32)
  return f32(q_btnk), f32(k_btgk), f32(v_btgk), segment_ids_bt.astype(jnp.int32), prefix_bt.astype(jnp.int32)


def _forward(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt):
  _register()
  operands = _operands(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt)
  b, t, n, kd = q_btnk.shape
  o, lse = jax.ffi.ffi_call(_FORWARD, (jax.ShapeDtypeStruct(q_btnk.shape, jnp.float32),
                                       jax.ShapeDtypeStruct((b, n, t), jnp.float32)))(
      *operands, scale=np.float32(kd ** -0.5))
  return o.astype(q_btnk.dtype), (*operands, o, lse)


@jax.custom_vjp
def cpu_attention(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt):
  """Prefix-LM self-attention on CPU: q [B, T, N, K], k and v [B, T, G, K] -> [B, T, N, K]."""
  return _forward(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt)[0]


def _cpu_attention_bwd(residuals, do_btnk):
  q, k, v, seg, pre, o, lse = residuals
  shapes = [jax.ShapeDtypeStruct(x.shape, jnp.float32) for x in (q, k, v)]
  grads = jax.ffi.ffi_call(_BACKWARD, shapes)(q, k, v, seg, pre, o, lse, do_btnk.astype(jnp.float32),
                                              scale=np.float32(q.shape[-1] ** -0.5))
  # q, k and v share the activations' dtype in the model, which is also do's.
  return (*(g.astype(do_btnk.dtype) for g in grads), None, None)


cpu_attention.defvjp(_forward, _cpu_attention_bwd)
