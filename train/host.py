"""Host memory: keep what the process frees for reuse instead of returning it to the OS.

XLA's CPU runtime allocates each step's temporary buffers afresh (~2.4 GB at lm_bench's shape)
and glibc's malloc hands large blocks back to the kernel when they are freed, so every step
page-faults its whole working set in again: ~600k faults, ~1 s of system time per 5 s step on
2 cores (bench/NOTES.md). `keep_freed_memory` sets glibc to one arena, no mmap'd blocks and no
trimming: after the first step, buffers come back from the heap with no faults (lm_bench's
step: 4.4 s instead of 4.9). The cost is that the process keeps its peak heap until it exits.
The `kineto` command and the bench scripts call it first, before any import that starts a
thread: a thread started earlier has an arena of its own, which XLA's threads would then share.
glibc only (elsewhere it does nothing).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8  # mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
  """Applies the settings above; True where glibc took them. Call it before any import that
  starts threads (orbax, grain, ...) and before JAX starts its own."""
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  # One arena: threads share the heap, so a block one thread frees is reused by any other.
  # No mmap: large blocks come from that heap too. Trim threshold -1: never give it back.
  return all(mallopt(param, value) == 1 for param, value in
             ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1)))
