"""Video files -> frames at a clip's size: PyAV decoding, resampling by time, resize and crop.

The one way pixels come in, for the dataset builder (`train/data/build.py`) and for
generation's prompts (`kineto/media.py`):
  decode_video(path)       (seconds, av.VideoFrame) in time order
  decode_audio(path, rate) the first audio track, float32 mono at `rate`, and its start time
  at_fps(frames, fps)      (t0 + k / fps, the frame on screen at that time) for k = 0, 1, ...
  Resizer(h, w, crop)      a frame (turned upright by its display matrix, as phones record
                           portrait video) -> uint8 [h', w', 3] covering h x w with swscale's
                           area filter, or exactly h x w for crop "none" (squashed)
  crop_clip(clip, h, w, crop, rng_key)  the center (or, for "random", a seeded) h x w window
"""
from __future__ import annotations

import pathlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

EPS = 1e-6  # seconds: timestamps that agree to a microsecond are the same instant


def decode_video(path: pathlib.Path) -> Iterator[tuple[float, Any]]:
  import av
  with av.open(str(path)) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    for i, frame in enumerate(container.decode(stream)):
      yield (frame.time if frame.time is not None else i / rate), frame


def decode_audio(path: pathlib.Path, rate: int) -> tuple[np.ndarray | None, float]:
  """The whole first audio track as float32 mono at `rate`, and its start time."""
  import av
  with av.open(str(path)) as container:
    if not container.streams.audio:
      return None, 0.0
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    chunks, start = [], None
    for frame in container.decode(audio=0):
      if start is None:
        start = frame.time or 0.0
      chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
  if not chunks:
    return None, 0.0
  return np.concatenate(chunks).astype(np.float32), start


def at_fps(frames: Iterable[tuple[float, Any]], fps: float) -> Iterator[tuple[float, Any]]:
  """Yields (t0 + k / fps, frame on screen at that time) for k = 0, 1, ... to the end."""
  prev_t, prev = None, None
  t0, k, interval = None, 0, 1.0 / fps
  for t, frame in frames:
    if prev_t is not None and t <= prev_t:  # a repeated or backwards timestamp: keep the first
      continue
    if t0 is None:
      t0 = t
    while prev is not None and t0 + k / fps < t - EPS:
      yield t0 + k / fps, prev
      k += 1
    if prev_t is not None:
      interval = t - prev_t
    prev_t, prev = t, frame
  if prev is not None:  # the last frame stays on screen for one source frame interval
    while t0 + k / fps < prev_t + interval - EPS:
      yield t0 + k / fps, prev
      k += 1


class Resizer:
  """Frame -> uint8 [h, w, 3] covering height x width (or exactly that for crop "none")."""

  def __init__(self, height: int, width: int, crop: str):
    from av.video.reformatter import VideoReformatter
    self.height, self.width, self.crop = height, width, crop
    self._reformatter = VideoReformatter()  # keeps its swscale context across frames: ~2x faster
    self._last_in, self._last_out = None, None

  def __call__(self, frame) -> np.ndarray:
    if frame is self._last_in:  # resampling up repeats a frame: resize it once
      return self._last_out
    import av
    if isinstance(frame, av.VideoFrame):
      src, quarter_turns = frame, round((frame.rotation or 0) / 90) % 4  # phones store it sideways
    else:
      src, quarter_turns = av.VideoFrame.from_ndarray(
          np.ascontiguousarray(frame, dtype=np.uint8), format="rgb24"), 0
    turned = quarter_turns % 2
    shown_h, shown_w = (src.width, src.height) if turned else (src.height, src.width)
    H, W = self.height, self.width
    if self.crop == "none":
      h, w = H, W
    else:
      scale = max(H / shown_h, W / shown_w)
      h, w = max(H, round(shown_h * scale)), max(W, round(shown_w * scale))
    out = self._reformatter.reformat(src, width=h if turned else w, height=w if turned else h,
                                     format="rgb24", interpolation="AREA").to_ndarray()
    if quarter_turns:  # the display matrix turns the stored picture counterclockwise
      out = np.ascontiguousarray(np.rot90(out, quarter_turns))
    self._last_in, self._last_out = frame, out
    return out


def crop_clip(clip_thwc: np.ndarray, height: int, width: int, crop: str,
              rng_key: list[int]) -> np.ndarray:
  h, w = clip_thwc.shape[1:3]
  dh, dw = h - height, w - width
  if crop == "random":
    rng = np.random.default_rng(rng_key)
    y, x = int(rng.integers(0, dh + 1)), int(rng.integers(0, dw + 1))
  else:
    y, x = dh // 2, dw // 2
  return np.ascontiguousarray(clip_thwc[:, y:y + height, x:x + width])
