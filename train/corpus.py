"""A real text corpus as prefix-LM training sequences (bytes as token ids).

Python's own documentation (`pydoc_data.topics`, ~466k bytes, always installed) is cut
into sequences of `seq_len + 1` bytes; the first `prefix` bytes of each are the
bidirectional prefix and the loss runs on the rest. This is the LM's data until token
shards of video (the data/tasks issue) exist; it exercises the same batch layout
(`tokens`, `input_mask`, `loss_mask`). The last 5% of the bytes are held out for eval.
"""
from __future__ import annotations

import numpy as np

BYTE_VOCAB = 256


def corpus_bytes() -> np.ndarray:
  from pydoc_data.topics import topics
  text = "\n\n".join(topics[k] for k in sorted(topics))
  return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)


def split(data: np.ndarray, held_out: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
  cut = int(len(data) * (1 - held_out))
  return data[:cut], data[cut:]


def batches(data: np.ndarray, batch_size: int, seq_len: int, prefix: int, seed: int,
            start_step: int = 0, rows: slice = slice(None)):
  """Yields `rows` of the global batch {tokens, input_mask, loss_mask} [B, seq_len + 1].

  The global batch of step s depends only on (seed, s); each process takes the rows its
  devices hold. Any number of processes, and a run resumed at `start_step`, see exactly
  the data of one uninterrupted single-process run.
  """
  n = seq_len + 1
  if len(data) <= n:
    raise ValueError(f"corpus of {len(data)} tokens is shorter than one sequence of {n}.")
  if not 0 <= prefix < seq_len:
    raise ValueError(f"prefix={prefix} must be in [0, seq_len={seq_len}).")
  input_mask = np.zeros((len(range(batch_size)[rows]), n), bool)
  input_mask[:, :prefix] = True
  step = start_step
  while True:
    offsets = np.random.default_rng([seed, step]).integers(0, len(data) - n, batch_size)[rows]
    tokens = np.stack([data[o:o + n] for o in offsets])
    yield {"tokens": tokens, "input_mask": input_mask, "loss_mask": ~input_mask}
    step += 1
