"""The unified id space the LM reads and writes (docs/design.md 4.4).

Contiguous ranges fixed by `configs.VocabConfig` and recorded with every checkpoint:

  [0, S)              special and task tokens (<pad>, <bos>, <task:t2v>, <bov_o>, <mask>, ...)
  [S, S+T)            text pieces (SentencePiece ids)
  [S+T, S+T+V)        video codes (LFQ, V = 2**bits)
  [S+T+V, ... + L*K)  audio codes: level l, code c -> its own range (RVQ, L levels x K codes)

`describe(ids)` renders a sequence readably, e.g.
`<bos> <task:t2v> <bot_i> "a cat" <eot_i> <bov_o> [video 5x16x16] <eov_o> <eos>`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

from configs.schema import ConfigError, VocabConfig

# Boundary tokens after VideoPoet's Table 4, plus padding and the inpainting mask.
SPECIAL_TOKENS = ("pad", "bos", "eos", "bot_i", "eot_i", "bov_i", "eov_i", "boa_i", "eoa_i",
                  "source", "res", "bov_o", "eov_o", "boa_o", "eoa_o", "mask")
TASKS = ("unconditional", "t2v", "t2i", "i2v", "continuation", "inpaint", "outpaint", "v2a", "a2v",
         "av_continuation")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Offsets and names of the unified vocabulary, built from a `VocabConfig`."""
  cfg: VocabConfig

  def __post_init__(self):
    needed = len(SPECIAL_TOKENS) + len(TASKS)
    if self.cfg.special < needed:
      raise ConfigError(f"vocab.special={self.cfg.special} cannot hold the {needed} special and "
                        f"task tokens; use vocab.special >= {needed}.")

  # --- ranges -----------------------------------------------------------------------
  @property
  def text_offset(self) -> int:
    return self.cfg.special

  @property
  def video_offset(self) -> int:
    return self.text_offset + self.cfg.text

  @property
  def video_size(self) -> int:
    return 2 ** self.cfg.video_bits

  @property
  def audio_offset(self) -> int:
    return self.video_offset + self.video_size

  @property
  def size(self) -> int:
    return self.cfg.size

  def ranges(self) -> dict[str, tuple[int, int]]:
    """[start, stop) of every modality; saved with checkpoints."""
    return {"special": (0, self.cfg.special), "text": (self.text_offset, self.video_offset),
            "video": (self.video_offset, self.audio_offset), "audio": (self.audio_offset, self.size)}

  # --- named tokens -------------------------------------------------------------------
  def special(self, name: str) -> int:
    if name not in SPECIAL_TOKENS:
      raise KeyError(f"unknown special token {name!r}; known: {list(SPECIAL_TOKENS)}.")
    return SPECIAL_TOKENS.index(name)

  def task(self, name: str) -> int:
    if name not in TASKS:
      raise KeyError(f"unknown task {name!r}; known: {list(TASKS)}.")
    return len(SPECIAL_TOKENS) + TASKS.index(name)

  # --- modality ids -------------------------------------------------------------------
  def text_ids(self, pieces: Sequence[int] | np.ndarray) -> np.ndarray:
    return self.text_offset + _check_range(pieces, self.cfg.text, "text piece")

  def video_ids(self, codes: np.ndarray) -> np.ndarray:
    """LFQ codes (any shape, time-major order kept) -> flat vocabulary ids."""
    return self.video_offset + _check_range(codes, self.video_size, "video code").reshape(-1)

  def audio_ids(self, codes_lt: np.ndarray, order: str = "level") -> np.ndarray:
    """RVQ codes [levels, frames] -> flat ids, level-major ("level") or time-major ("time")."""
    codes_lt = np.asarray(codes_lt)
    if codes_lt.ndim != 2 or codes_lt.shape[0] > self.cfg.audio_levels:
      raise ValueError(f"audio codes of shape {codes_lt.shape}: expected [levels <= "
                       f"{self.cfg.audio_levels}, frames].")
    level_offset = self.audio_offset + self.cfg.audio_codebook * np.arange(codes_lt.shape[0])[:, None]
    ids = level_offset + _check_range(codes_lt, self.cfg.audio_codebook, "audio code")
    if order not in ("level", "time"):
      raise ValueError(f"audio order {order!r}: expected 'level' or 'time'.")
    return ids.reshape(-1) if order == "level" else ids.T.reshape(-1)

  def modality(self, token_id: int) -> str:
    for name, (lo, hi) in self.ranges().items():
      if lo <= token_id < hi:
        return name
    raise ValueError(f"id {token_id} is outside the vocabulary [0, {self.size}).")

  # --- rendering ----------------------------------------------------------------------
  def token_name(self, token_id: int) -> str:
    if token_id < len(SPECIAL_TOKENS):
      return f"<{SPECIAL_TOKENS[token_id]}>"
    if token_id < len(SPECIAL_TOKENS) + len(TASKS):
      return f"<task:{TASKS[token_id - len(SPECIAL_TOKENS)]}>"
    return f"<special:{token_id}>"

  def describe(self, ids: Sequence[int] | np.ndarray, *,
               decode_text: Callable[[list[int]], str] | None = None,
               video_shape: tuple[int, ...] | None = None) -> str:
    """Special tokens by name, runs of text decoded (or counted), video and audio summarized.

    decode_text maps text pieces (without the offset) to a string, e.g. a SentencePiece
    model's `decode`; video_shape (t, h, w) names the video runs' shape when it fits.
    """
    parts, ids = [], [int(i) for i in np.asarray(ids).reshape(-1)]
    i = 0
    while i < len(ids):
      kind = self.modality(ids[i])
      j = i
      while j < len(ids) and kind != "special" and self.modality(ids[j]) == kind:
        j += 1
      if kind == "special":
        parts.append(self.token_name(ids[i]))
        i += 1
        continue
      run = ids[i:j]
      if kind == "text":
        pieces = [t - self.text_offset for t in run]
        parts.append(f'"{decode_text(pieces)}"' if decode_text else f"[text {len(run)}]")
      elif kind == "video":
        fits = video_shape is not None and int(np.prod(video_shape)) == len(run)
        parts.append(f"[video {'x'.join(map(str, video_shape))}]" if fits else f"[video {len(run)}]")
      else:
        parts.append(f"[audio {len(run)}]")
      i = j
    return " ".join(parts)


def _check_range(values, size: int, what: str) -> np.ndarray:
  values = np.asarray(values, np.int64)
  if values.size and (values.min() < 0 or values.max() >= size):
    raise ValueError(f"{what} {int(values.min() if values.min() < 0 else values.max())} is outside "
                     f"[0, {size}); check the tokenizer matches the vocab config.")
  return values
