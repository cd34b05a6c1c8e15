"""I3D features cached on disk, so an interrupted evaluation resumes without recomputing them.

A cache file `DIR/NAME.npz` holds the features and the sha256 of the clips and protocol
they came from; it is used only when both match, and written atomically (train/files.py).
Real held-out clips are read by every evaluation of a split: their features are computed once.
"""
from __future__ import annotations

import hashlib
import io
import json
import pathlib

import numpy as np

from kineto.eval import fvd
from train.files import write_bytes


def clips_key(clips_nthwc: np.ndarray, protocol: dict) -> str:
  h = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode())
  h.update(f"{clips_nthwc.shape}".encode())
  h.update(np.ascontiguousarray(clips_nthwc).tobytes())
  return h.hexdigest()


def cached_features(clips_nthwc: np.ndarray, cache_dir: str | pathlib.Path, name: str, *,
                    size: int = fvd.SIZE, desc: str | None = None) -> np.ndarray:
  """`fvd.i3d_features` of the clips, read from `cache_dir/name.npz` when it holds them."""
  path = pathlib.Path(cache_dir) / f"{name}.npz"
  key = clips_key(clips_nthwc, fvd.protocol(size))
  if path.is_file():
    with np.load(path) as saved:
      if str(saved["key"]) == key:
        return saved["features"]
  feats = fvd.i3d_features(clips_nthwc, size=size, desc=desc or f"I3D features: {name}")
  path.parent.mkdir(parents=True, exist_ok=True)
  buf = io.BytesIO()
  np.savez(buf, features=feats, key=np.asarray(key))
  write_bytes(path, buf.getvalue())
  return feats
