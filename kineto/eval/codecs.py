"""Real video codecs at a bit budget: H.264 (libx264), H.265 (libx265) and AV1 (libsvtav1).

  coded = code_clip("h264", clip_thwc, quality=40, scale=0.5)   # bits, reconstruction
  best = best_at_budget("av1", clip_thwc, budget_bits=1920)     # the best PSNR that fits

All three encoders and their decoders ship in the PyAV wheel. A clip is coded at `scale` of
its size (libswscale's area filter), decoded, and scaled back with a bilinear filter: at a
few bits per frame a codec does best on a smaller picture. Only the bits a decoder needs
count: `decoder_stream` drops what the decoders ignore (x264's and x265's SEI messages, where
each writes a 5-20 kbit banner of its settings; AV1's temporal delimiters, metadata and
padding OBUs), and the reconstruction is decoded from that stripped stream, so a stripped
part the decoder needed would show as a failed decode rather than as a free bit.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fractions
import os

import av
import numpy as np

# SVT-AV1 prints its banner to stderr for every encoder it opens (hundreds per evaluation);
# its log level is read from the environment only. 1 keeps errors and warnings.
os.environ.setdefault("SVT_LOG", "1")

SCALES = (1.0, 0.5, 0.25)  # picture sizes tried by the budget search (coded size >= 16 pixels)


class CodecError(ValueError):
  """A clip a codec cannot code (size) or an unknown codec name."""


@dataclasses.dataclass(frozen=True)
class Codec:
  name: str                   # the key in CODECS and in eval.json
  encoder: str                # the FFmpeg encoder in the PyAV wheel
  decoder: str
  quality: tuple[int, int]    # the (best, worst) quality parameter (CRF) the encoder takes
  options: tuple[tuple[str, str], ...]  # encoder options besides the CRF: its strongest settings


# One thread each: a clip codes in milliseconds either way, and threaded x264 gave PSNRs that
# differed in the 4th digit between two runs of the same evaluation.
CODECS = {
    "h264": Codec("h264", "libx264", "h264", (0, 51), (("preset", "veryslow"), ("threads", "1"))),
    "h265": Codec("h265", "libx265", "hevc", (0, 51),
                  (("preset", "slower"), ("x265-params", "log-level=none:pools=1:frame-threads=1"))),
    "av1": Codec("av1", "libsvtav1", "libdav1d", (1, 63), (("preset", "4"), ("svtav1-params", "lp=1"))),
}


def _codec(name: str) -> Codec:
  if name not in CODECS:
    raise CodecError(f"codec {name!r} is not one of {list(CODECS)}.")
  return CODECS[name]


# --- the bits a decoder needs ----------------------------------------------------------------

def _annexb_units(stream: bytes) -> list[bytes]:
  """NAL units of an Annex-B stream, each with its start code."""
  starts, i = [], stream.find(b"\x00\x00\x01")
  while i >= 0:
    starts.append(i - 1 if i > 0 and stream[i - 1] == 0 else i)  # 4-byte start codes
    i = stream.find(b"\x00\x00\x01", i + 3)
  return [stream[a:b] for a, b in zip(starts, starts[1:] + [len(stream)])]


def _nal_type(unit: bytes, hevc: bool) -> int:
  header = unit[unit.index(b"\x00\x00\x01") + 3]
  return (header >> 1) & 0x3F if hevc else header & 0x1F


def _leb128(data: bytes, i: int) -> tuple[int, int]:
  value, shift = 0, 0
  while True:
    byte = data[i]
    value |= (byte & 0x7F) << shift
    i += 1
    if not byte & 0x80:
      return value, i
    shift += 7


def _av1_obus(stream: bytes) -> list[tuple[int, bytes]]:
  """(type, bytes) of each OBU of a low-overhead AV1 stream (every OBU carries its size)."""
  obus, i = [], 0
  while i < len(stream):
    header = stream[i]
    if not header & 0x02:
      raise CodecError("an AV1 OBU without obu_has_size_field; cannot split the stream.")
    start = i
    i += 2 if header & 0x04 else 1  # the extension byte
    size, i = _leb128(stream, i)
    i += size
    obus.append(((header >> 3) & 0x0F, stream[start:i]))
  return obus


_DROP_NAL = {"h264": (6,), "h265": (39, 40)}  # SEI (H.264), prefix/suffix SEI (H.265)
_DROP_OBU = (2, 5, 15)                        # temporal delimiter, metadata, padding


def decoder_stream(codec: str, packet: bytes) -> bytes:
  """The part of one coded packet a decoder needs (module docstring)."""
  if codec == "av1":
    return b"".join(data for kind, data in _av1_obus(packet) if kind not in _DROP_OBU)
  hevc = codec == "h265"
  return b"".join(u for u in _annexb_units(packet) if _nal_type(u, hevc) not in _DROP_NAL[codec])


# --- coding a clip ---------------------------------------------------------------------------

@dataclasses.dataclass
class Coded:
  codec: str
  quality: int
  scale: float
  bits: int             # what a decoder needs (`decoder_stream`), the figure that is budgeted
  raw_bits: int         # everything the encoder wrote (banners included)
  recon_thwc: np.ndarray
  psnr: float | None = None  # against the original, once measured


def coded_size(height: int, width: int, scale: float) -> tuple[int, int]:
  """Even dimensions (4:2:0 chroma) of a picture coded at `scale`."""
  return max(16, 2 * round(height * scale / 2)), max(16, 2 * round(width * scale / 2))


@contextlib.contextmanager
def _same_scheduling():
  """Puts the calling thread's scheduling policy back as it was. SVT-AV1, run as root, moves the
  thread that opens an encoder to real-time SCHED_FIFO priority 99, and every process that
  thread starts afterwards inherits it: two such processes busy-waiting on each other's
  collectives starved all else on 2 cores, the suite's watchdogs included (CI hung for an hour)."""
  if not hasattr(os, "sched_getscheduler"):  # not Linux: no such interface, nothing to undo
    yield
    return
  policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
  try:
    yield
  finally:
    if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
      os.sched_setscheduler(0, policy, param)  # lowering a priority needs no privilege


def code_clip(codec: str, clip_thwc: np.ndarray, quality: int, scale: float = 1.0, fps: int = 8) -> Coded:
  """Encodes uint8 [T, H, W, 3] at `quality` (CRF) and `scale`, decodes the stripped stream and
  scales it back to H x W."""
  with _same_scheduling():
    return _code_clip(codec, clip_thwc, quality, scale, fps)


def _code_clip(codec: str, clip_thwc: np.ndarray, quality: int, scale: float, fps: int) -> Coded:
  spec = _codec(codec)
  t, h, w, _ = clip_thwc.shape
  ch, cw = coded_size(h, w, scale)
  enc = av.CodecContext.create(spec.encoder, "w")
  enc.width, enc.height, enc.pix_fmt = cw, ch, "yuv420p"
  enc.time_base, enc.framerate = fractions.Fraction(1, fps), fps
  enc.options = {"crf": str(quality), **dict(spec.options)}
  packets = []
  for i, frame in enumerate(clip_thwc):
    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    vf = vf.reformat(width=cw, height=ch, format="yuv420p", interpolation="AREA")
    vf.pts = i
    packets += [bytes(p) for p in enc.encode(vf)]
  packets += [bytes(p) for p in enc.encode(None)]
  needed = [decoder_stream(codec, p) for p in packets]

  dec = av.CodecContext.create(spec.decoder, "r")
  frames = []
  for data in needed + [None]:
    for f in dec.decode(av.Packet(data) if data is not None else None):
      frames.append(f.reformat(width=w, height=h, format="rgb24", interpolation="BILINEAR").to_ndarray())
  if len(frames) != t:
    raise CodecError(f"{codec}: decoded {len(frames)} of {t} frames from the stripped stream.")
  recon = np.stack(frames)
  return Coded(codec, int(quality), float(scale), 8 * sum(map(len, needed)), 8 * sum(map(len, packets)),
               recon, psnr_u8(recon, clip_thwc))


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
  """PSNR in dB of two uint8 clips, the mean over frames (as vidtok.metrics.psnr)."""
  err = ((a.astype(np.float64) - b.astype(np.float64)) / 255.0) ** 2
  mse = err.reshape(len(a), -1).mean(1)
  return float(np.mean(10 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def best_at_budget(codec: str, clip_thwc: np.ndarray, budget_bits: float, scales=SCALES) -> Coded | None:
  """The highest-PSNR coding of the clip whose decoder bits fit `budget_bits`: at each scale,
  a bisection for the best quality parameter that fits (bits fall as the CRF rises); None if
  even the worst quality at the smallest scale does not fit."""
  spec = _codec(codec)
  best = None
  for scale in scales:
    lo, hi = spec.quality  # lo: best quality; hi: worst
    fit = None
    worst = code_clip(codec, clip_thwc, hi, scale)
    if worst.bits > budget_bits:
      continue
    fit = worst
    while hi - lo > 1:  # invariant: quality `hi` fits
      mid = (lo + hi) // 2
      coded = code_clip(codec, clip_thwc, mid, scale)
      if coded.bits <= budget_bits:
        hi, fit = mid, coded
      else:
        lo = mid
    if lo == spec.quality[0]:
      coded = code_clip(codec, clip_thwc, lo, scale)
      fit = coded if coded.bits <= budget_bits else fit
    if best is None or fit.psnr > best.psnr:
      best = fit
  return best
