"""Hand-written CPU kernels that XLA calls through FFI, compiled on first use.

`build` compiles one .cc file of this folder with the system's C++ compiler (`$CXX`, else g++)
for this machine's CPU (-march=native), once per source (and this folder's headers), compiler,
CPU and jax version. The
library is cached under `$KINETO_CACHE` (default ~/.cache/kineto)/kernels, written to a
temporary name and renamed, so concurrent processes never load a half-written file.
`$KINETO_KERNEL_FLAGS` adds compiler flags (e.g. `-fsanitize=address -g` to check the kernels'
memory accesses under AddressSanitizer); they are part of the cache key.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import tempfile

import jax


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


def build(source_name: str) -> pathlib.Path:
  """Compiles lm/kernels/`source_name` (or finds it compiled) and returns the shared library's path."""
  source = pathlib.Path(__file__).with_name(source_name)
  cxx = os.environ.get("CXX", "g++")
  if shutil.which(cxx) is None:
    raise KernelBuildError(f"the CPU kernels (lm.attention_impl=cpu, lm.matmul_impl=cpu) need a C++ compiler, "
                           f"and {cxx!r} was not found: install g++ (or set CXX), or use "
                           "lm.attention_impl=blockwise and lm.matmul_impl=xla.")
  flags = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC",
           f"-I{jax.ffi.include_dir()}", *os.environ.get("KINETO_KERNEL_FLAGS", "").split()]
  headers = [h.read_text() for h in sorted(source.parent.glob("*.h"))]
  key = hashlib.sha256("\n".join([source.read_text(), *headers, cxx, *flags, _cpu_signature(),
                                  jax.__version__]).encode()).hexdigest()[:16]
  out = _cache_dir() / f"{source.stem}-{key}.so"
  if out.exists():
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
    tmp_so = pathlib.Path(tmp) / out.name
    done = subprocess.run([cxx, *flags, str(source), "-o", str(tmp_so)], capture_output=True, text=True)
    if done.returncode != 0:
      lines = done.stderr.strip().splitlines() or ["(no output)"]
      first = next((l for l in lines if "error" in l), lines[0])
      raise KernelBuildError(f"compiling {source.name} with {cxx} failed: {first} (use "
                             "lm.attention_impl=blockwise and lm.matmul_impl=xla, or fix the compiler)")
    os.replace(tmp_so, out)  # atomic: another process sees the old state or the whole file
  return out
