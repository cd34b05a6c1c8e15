"""Batches of video clips for tokenizer training, addressed by step number.

The batch of step s is a pure function of (seed, s): epoch e = s*B // N visits the N clips
of the split in a seeded permutation, and each clip contributes a seeded window of
`frames` frames. So a resumed run sees exactly the batches an uninterrupted one would,
with no iterator state to save, and every process can cut its own rows from the same
global batch. Reads a dataset built by `kineto data build` / `kineto data demo` through
TFDS's random-access data source (no TensorFlow). A record that fails to read is
replaced by the next one in the permutation and counted in `bad_records`, never fatal.
"""
from __future__ import annotations

import numpy as np

from configs.schema import ConfigError
from train.data.pipeline import open_split


class ClipBatches:
  """uint8 batches [B, frames, H, W, 3] of one split; `batch(step)` is deterministic."""

  def __init__(self, data_dir: str, split: str, frames: int, batch_size: int, seed: int,
               shuffle: bool = True):
    self.source = open_split(str(data_dir), split)
    if len(self.source) == 0:
      raise ConfigError(f"the {split!r} split of {data_dir} is empty; rebuild it with more clips.")
    first = self.source[0]["video"]
    self.clip_frames, self.frame_size = first.shape[0], tuple(first.shape[1:3])
    if frames > self.clip_frames:
      raise ConfigError(f"train.frames={frames} exceeds the {self.clip_frames}-frame clips of "
                        f"{data_dir}; lower train.frames or rebuild with --frames {frames}.")
    self.frames, self.batch_size, self.seed, self.shuffle = frames, batch_size, seed, shuffle
    self.bad_records = 0

  def _order(self, epoch: int) -> np.ndarray:
    n = len(self.source)
    return np.random.default_rng((self.seed, epoch)).permutation(n) if self.shuffle else np.arange(n)

  def batch(self, step: int, rows: slice = slice(None)) -> np.ndarray:
    """Rows `rows` of the global batch of `step` (a process reads only its own rows)."""
    out = []
    for row in range(self.batch_size)[rows]:
      i = step * self.batch_size + row
      clip = self._read(i)
      start = np.random.default_rng((self.seed, i)).integers(0, self.clip_frames - self.frames + 1)
      out.append(clip[start:start + self.frames])
    return np.stack(out)

  def _read(self, i: int) -> np.ndarray:
    n = len(self.source)
    for j in range(i, i + n):
      try:
        return self.source[int(self._order(j // n)[j % n])]["video"]
      except Exception as e:  # a corrupt record: the next one of the permutation stands in
        self.bad_records += 1
        print(f"kineto: skipping unreadable clip ({type(e).__name__}: {e}); {self.bad_records} so far.")
    raise ConfigError("no clip of the dataset can be read; rebuild it.")
