"""The fused CPU attention kernel (attention_cpu.cc): built on first use, called through XLA FFI.

`cpu_attention` computes exactly what lm/attention.py's "blockwise" implementation does (the
prefix-LM rule, a backward from the saved log-sum-exp), in float32, with each 64-query tile's
scores, softmax and products kept in cache (see the .cc file). It is chosen with
`lm.attention_impl="cpu"` and runs only on CPU: lowering it for a TPU or GPU fails at compile
time with XLA's "no FFI handler" error, so a pod recipe keeps "blockwise".

The shared library is compiled with the system's C++ compiler (`$CXX`, else g++) for this
machine's CPU (-march=native), once per source, compiler and CPU: it is cached under
`$KINETO_CACHE` (default ~/.cache/kineto)/kernels, written to a temporary name and renamed,
so concurrent processes never load a half-written file.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

SOURCE = pathlib.Path(__file__).with_name("attention_cpu.cc")
_FORWARD, _BACKWARD = "kineto_attention_cpu_fwd", "kineto_attention_cpu_bwd"


class KernelBuildError(RuntimeError):
  """The C++ compiler is missing or failed; the message says what to do."""


def _cpu_signature() -> str:
  try:
    flags = [l for l in pathlib.Path("/proc/cpuinfo").read_text().splitlines() if l.startswith("flags")]
    return flags[0] if flags else platform.processor()
  except OSError:
    return platform.processor()


def _cache_dir() -> pathlib.Path:
  root = os.environ.get("KINETO_CACHE") or pathlib.Path.home() / ".cache" / "kineto"
  return pathlib.Path(root) / "kernels"


def build() -> pathlib.Path:
  """Compiles attention_cpu.cc (or finds it compiled) and returns the shared library's path."""
  cxx = os.environ.get("CXX", "g++")
  if shutil.which(cxx) is None:
    raise KernelBuildError(f"lm.attention_impl=cpu needs a C++ compiler, and {cxx!r} was not found: "
                           "install g++ (or set CXX), or use lm.attention_impl=blockwise.")
  flags = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
           f"-I{jax.ffi.include_dir()}"]
  key = hashlib.sha256("\n".join([SOURCE.read_text(), cxx, *flags, _cpu_signature(),
                                  jax.__version__]).encode()).hexdigest()[:16]
  out = _cache_dir() / f"attention_cpu-{key}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
    tmp_so = pathlib.Path(tmp) / out.name
    done = subprocess.run([cxx, *flags, str(SOURCE), "-o", str(tmp_so)], capture_output=True, text=True)
    if done.returncode != 0:
      lines = done.stderr.strip().splitlines() or ["(no output)"]
      first = next((l for l in lines if "error" in l), lines[0])
      raise KernelBuildError(f"compiling {SOURCE.name} with {cxx} failed: {first} "
                             "(use lm.attention_impl=blockwise, or fix the compiler)")
    os.replace(tmp_so, out)  # atomic: another process sees the old state or the whole file
  return out


@functools.cache
def _register() -> None:
  lib = ctypes.CDLL(str(build()))
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
