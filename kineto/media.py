"""Media files for generation: write MP4 (with AAC audio) and GIF, read video/image/audio.

Writers put the file under a temporary name next to the target and rename it, so a crash
never leaves a half-written MP4 where a finished one is expected. Readers return the
float conventions the models use: video/images float32 [T, H, W, 3] in [-1, 1] (resized to
cover H x W, then center-cropped: the same decoding and resizing as `kineto data build`,
`train/data/decode.py`), audio float32 mono at the requested rate (`train/data/audio.py`).
Unreadable files raise `MediaError` naming the file and the problem.
"""
from __future__ import annotations

import pathlib
from fractions import Fraction

import numpy as np

from train.data import decode
from train.data.audio import load_audio
from train.files import atomic_path
from vidtok.pixels import to_float


class MediaError(ValueError):
  """A media file that cannot be read or written as asked; the message says which and why."""


def _check_frames(frames_thwc) -> np.ndarray:
  frames = np.asarray(frames_thwc)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
    raise MediaError(f"frames of shape {frames.shape} and dtype {frames.dtype}: expected uint8 "
                     "[T, H, W, 3] with T >= 1.")
  return frames


def write_video(path, frames_thwc, fps: float, audio=None, sample_rate: int | None = None) -> pathlib.Path:
  """Writes an H.264 (yuv420p) MP4; `audio` (float32 mono [S] in [-1, 1]) is muxed as AAC.

  yuv420p needs even sizes: an odd height or width is padded by one edge row/column.
  """
  import av
  path = pathlib.Path(path)
  frames = _check_frames(frames_thwc)
  if fps <= 0:
    raise MediaError(f"fps={fps} must be > 0.")
  if audio is not None and not sample_rate:
    raise MediaError("audio given without sample_rate; pass the waveform's sample rate.")
  h, w = frames.shape[1:3]
  if h % 2 or w % 2:
    frames = np.pad(frames, [(0, 0), (0, h % 2), (0, w % 2), (0, 0)], mode="edge")
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic_path(path) as tmp:
    with av.open(str(tmp), mode="w", format="mp4") as container:
      video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
      video.width, video.height = frames.shape[2], frames.shape[1]
      video.pix_fmt = "yuv420p"
      video.options = {"crf": "18"}
      sound = None
      if audio is not None:
        wave = np.clip(np.asarray(audio, np.float32).reshape(-1), -1.0, 1.0)
        sound = container.add_stream("aac", rate=int(sample_rate))
        sound.layout = "mono"
      for frame in frames:
        for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
          container.mux(packet)
      for packet in video.encode():
        container.mux(packet)
      if sound is not None:
        chunk = 1024
        for start in range(0, len(wave), chunk):
          piece = av.AudioFrame.from_ndarray(wave[None, start:start + chunk], format="fltp", layout="mono")
          piece.sample_rate, piece.pts = int(sample_rate), start
          for packet in sound.encode(piece):
            container.mux(packet)
        for packet in sound.encode():
          container.mux(packet)
  return path


def write_gif(path, frames_thwc, fps: float) -> pathlib.Path:
  """Writes a looping GIF (PIL)."""
  from PIL import Image
  path = pathlib.Path(path)
  frames = _check_frames(frames_thwc)
  path.parent.mkdir(parents=True, exist_ok=True)
  images = [Image.fromarray(f) for f in frames]
  with atomic_path(path) as tmp:
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, round(1000 / fps)), loop=0)
  return path


def _existing(path) -> pathlib.Path:
  path = pathlib.Path(path)
  if not path.is_file():
    raise MediaError(f"{path} does not exist or is not a file.")
  return path


def _resize_crop(frames_u8, height: int, width: int) -> np.ndarray:
  resize = decode.Resizer(height, width, "center")
  return decode.crop_clip(np.stack([resize(f) for f in frames_u8]), height, width, "center", [0])


def read_video(path, frames: int, height: int, width: int, fps: float | None = None,
               min_frames: int | None = None) -> np.ndarray:
  """The first `frames` frames (resampled to `fps` when given) as float32 [T, H, W, 3] in
  [-1, 1], each resized to cover H x W and center-cropped. A shorter video is an error,
  unless it has at least `min_frames` (then all of its frames are returned)."""
  path = _existing(path)
  out = []
  try:
    decoded = decode.decode_video(path)
    if fps is not None:
      decoded = decode.at_fps(decoded, fps)
    resize = decode.Resizer(height, width, "center")
    for _, frame in decoded:
      out.append(resize(frame))
      if len(out) == frames:
        break
  except MediaError:
    raise
  except Exception as e:  # PyAV raises many kinds for garbage; all mean "unreadable"
    raise MediaError(f"cannot read video {path}: {type(e).__name__}: {e}") from e
  need = frames if min_frames is None else min(min_frames, frames)
  if len(out) < need:
    raise MediaError(f"video {path} has {len(out)} frames{'' if fps is None else f' at {fps:g} fps'}; "
                     f"{need} are needed.")
  return to_float(decode.crop_clip(np.stack(out), height, width, "center", [0]))


def read_image(path, height: int, width: int) -> np.ndarray:
  """An image file as float32 [1, H, W, 3] in [-1, 1] (resized to cover, center-cropped)."""
  from PIL import Image
  path = _existing(path)
  try:
    with Image.open(path) as image:
      rgb = np.asarray(image.convert("RGB"), np.uint8)
  except Exception as e:
    raise MediaError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
  return to_float(_resize_crop(rgb[None], height, width))


def read_audio(path, sample_rate: int, seconds: float | None = None) -> np.ndarray:
  """The first audio stream as float32 mono [S] at `sample_rate` (the first `seconds`)."""
  path = _existing(path)
  try:
    return np.asarray(load_audio(path, sample_rate, max_seconds=seconds), np.float32)
  except Exception as e:
    raise MediaError(f"cannot read audio {path}: {type(e).__name__}: {e}") from e
