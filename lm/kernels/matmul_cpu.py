"""Dense float32 matmuls on CPU through numpy's BLAS (matmul_cpu.cc), chosen with `lm.matmul_impl=cpu`.

On this project's CPU, XLA's own matmul reaches 0.75-0.9x of an optimized BLAS on the dense
layers' shapes, and less on their gradients, whose transposed operands it first copies
(bench/NOTES.md). numpy's wheels carry OpenBLAS; `matmul` hands it the same products, forward
and backward (its VJP is two more calls with transposed operands, read in place). CPU only:
a pod recipe keeps `lm.matmul_impl=xla` (`kineto compile` refuses the CPU kernels for TPUs).
A process that uses it runs numpy's own BLAS calls on one thread (see `_register`).
"""
from __future__ import annotations

import ctypes
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from lm.kernels import KernelBuildError, build

_TARGET = "kineto_matmul_cpu"
_SGEMM = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")  # ILP64 cblas_sgemm, as numpy ships it
_SET_THREADS = ("scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_", "openblas_set_num_threads")


def openblas_function(names: tuple[str, ...]) -> ctypes._CFuncPtr:
  """The first of `names` exported by numpy's OpenBLAS: the loaded library that exports its
  ILP64 cblas_sgemm (so every function comes from the library the kernel calls)."""
  paths = {line.split()[-1] for line in pathlib.Path("/proc/self/maps").read_text().splitlines()
           if "openblas" in line.lower() and line.split()[-1].startswith("/")}
  for path in sorted(paths):
    lib = ctypes.CDLL(path)
    if any(hasattr(lib, name) for name in _SGEMM):
      for name in names:
        if hasattr(lib, name):
          return getattr(lib, name)
  raise KernelBuildError(f"lm.matmul_impl=cpu needs numpy's bundled OpenBLAS and its {names[0]} (numpy "
                         f"{np.__version__} loaded {sorted(paths) or 'none'}): install a numpy>=2 wheel, "
                         "or use lm.matmul_impl=xla.")


@functools.cache
def _register() -> None:
  lib = ctypes.CDLL(str(build("matmul_cpu.cc")))
  sgemm, set_num_threads = openblas_function(_SGEMM), openblas_function(_SET_THREADS)
  # One BLAS thread, set here, once, from Python: the kernel splits rows over XLA's pool itself.
  # OpenBLAS's pthreads build keeps one process-wide count (its `_local` setter sets that same
  # count), so numpy's own BLAS calls run on one thread from here on in this process. Setting it
  # from XLA's threads at every call, as a first version did, wrote that global from many
  # threads at once and, after each fork (whose handler stops OpenBLAS's thread server),
  # restarted the server from inside a running XLA program.
  set_num_threads.argtypes = [ctypes.c_int]
  set_num_threads(1)
  lib.KinetoSetBlas(ctypes.c_void_p(ctypes.cast(sgemm, ctypes.c_void_p).value))
  jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.KinetoMatmul), platform="cpu")


def gemm(a, b, trans_a: bool = False, trans_b: bool = False):
  """op(a) @ op(b) in float32 (op: transpose when asked), one BLAS call; not differentiable."""
  _register()
  m = a.shape[1] if trans_a else a.shape[0]
  n = b.shape[0] if trans_b else b.shape[1]
  out = jax.ShapeDtypeStruct((m, n), jnp.float32)
  return jax.ffi.ffi_call(_TARGET, out)(a.astype(jnp.float32), b.astype(jnp.float32),
                                        trans_a=np.int32(trans_a), trans_b=np.int32(trans_b))


@jax.custom_vjp
def _matmul_2d(a_mk, b_kn):
  return gemm(a_mk, b_kn, False, False)


def _matmul_2d_fwd(a_mk, b_kn):
  return _matmul_2d(a_mk, b_kn), (a_mk, b_kn)


def _matmul_2d_bwd(residuals, dc_mn):
  a_mk, b_kn = residuals
  dc_mn = dc_mn.astype(jnp.float32)
  da_mk = gemm(dc_mn, b_kn, False, True)   # dc b^T
  db_kn = gemm(a_mk, dc_mn, True, False)   # a^T dc
  return da_mk.astype(a_mk.dtype), db_kn.astype(b_kn.dtype)


_matmul_2d.defvjp(_matmul_2d_fwd, _matmul_2d_bwd)


def matmul(x, w, contract: int = 1):
  """x [..., K] @ w [K, ...], contracting x's last `contract` axes with w's first ones.

  The leading axes of x and the trailing axes of w are flattened for one BLAS call (free
  reshapes); the result has x's leading and w's trailing shape, in x's dtype.
  """
  lead, k_shape, tail = x.shape[:-contract], x.shape[-contract:], w.shape[contract:]
  assert w.shape[:contract] == k_shape, (x.shape, w.shape)
  k = int(np.prod(k_shape))
  y = _matmul_2d(x.reshape(-1, k), w.reshape(k, -1))
  return y.reshape(*lead, *tail).astype(x.dtype)
