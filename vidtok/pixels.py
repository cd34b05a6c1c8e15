"""The video tokenizer's pixel convention: uint8 frames <-> float32 in [-1, 1].

  to_float(video_u8)  x / 127.5 - 1, float32 (numpy or JAX arrays, inside jit too)
  to_uint8(video)     round((x + 1) * 127.5) clipped to [0, 255], a numpy uint8 array
"""
from __future__ import annotations

import numpy as np


def to_float(video_u8):
  """uint8 frames -> float32 in [-1, 1] (the array's own kind: numpy stays numpy)."""
  return video_u8.astype(np.float32) / 127.5 - 1.0


def to_uint8(video) -> np.ndarray:
  """Frames in [-1, 1] (numpy or JAX, any float dtype) -> numpy uint8; out-of-range values clip."""
  return np.clip(np.round((np.asarray(video, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)
