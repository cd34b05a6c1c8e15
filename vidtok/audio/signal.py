"""Audio in the codec's format: mono float32 in [-1, 1] at its sample rate (no file I/O here;
reading and writing audio files is `train/data/audio.py`).

- `prepare(wave, rate, target_rate, resample=..., downmix=...)` converts one recording.
  Conversions happen only when asked for: a wrong rate without `resample=True` or
  several channels without `downmix=True` is an error, not a silent guess.
  Resampling is polyphase FIR filtering in numpy (the method of scipy's
  `resample_poly`, without scipy): upsample by `up`, low-pass with a Kaiser-windowed
  sinc (cutoff at the lower Nyquist, 16 zero crossings per side, beta 8.6, about 80 dB
  stopband), downsample by `down`, computing only the kept outputs. Downmixing is the
  equal-weight mean of all channels (for 5.1 this includes the LFE channel).
- `peak_normalize(wave)`: an explicit gain to a fixed peak.
"""
from __future__ import annotations

import functools
import math

import numpy as np

_MAX_CHANNELS = 64


def _to_float(wave: np.ndarray) -> np.ndarray:
  """Integer PCM -> float in [-1, 1] (int16 / 32768, int32 / 2**31, uint8 (x - 128) / 128)."""
  if np.issubdtype(wave.dtype, np.floating):
    return wave.astype(np.float32)
  if wave.dtype == np.uint8:
    return (wave.astype(np.float32) - 128.0) / 128.0
  if np.issubdtype(wave.dtype, np.signedinteger):
    return (wave / float(2 ** (8 * wave.dtype.itemsize - 1))).astype(np.float32)
  raise ValueError(f"audio of dtype {wave.dtype}: expected float or integer PCM samples.")


@functools.lru_cache(maxsize=16)
def _polyphase_filter(up: int, down: int, zero_crossings: int = 16,
                      beta: float = 8.6) -> tuple[np.ndarray, int]:
  """Kaiser-windowed sinc low-pass at the lower Nyquist: polyphase taps [up, J] and its delay."""
  max_rate = max(up, down)
  half_len = zero_crossings * max_rate
  n = np.arange(-half_len, half_len + 1)
  h = np.sinc(n / max_rate) * np.kaiser(2 * half_len + 1, beta)
  h *= up / h.sum()  # unit DC gain after zero-stuffing by `up`
  taps = math.ceil(h.size / up)
  h_pad = np.zeros(taps * up)
  h_pad[:h.size] = h
  # Phase p, tap j multiplies input sample (n // up - j) for an output at upsampled index n.
  return h_pad.reshape(taps, up).T.copy(), half_len


def resample_poly(wave_s: np.ndarray, rate: int, target_rate: int) -> np.ndarray:
  """Polyphase resampling of a 1-D signal; output length ceil(S * target / rate)."""
  if rate == target_rate:
    return wave_s.astype(np.float32)
  g = math.gcd(int(rate), int(target_rate))
  up, down = target_rate // g, rate // g
  h_pj, delay = _polyphase_filter(up, down)
  taps = h_pj.shape[1]
  out_len = -(-len(wave_s) * up // down)
  x_pad = np.concatenate([np.zeros(taps), wave_s.astype(np.float64), np.zeros(taps + 1)])
  out = np.empty(out_len, np.float32)
  chunk = max(1, 2 ** 22 // taps)  # bounds the [chunk, taps] gather's memory
  j = np.arange(taps)
  for start in range(0, out_len, chunk):
    n_m = np.arange(start, min(start + chunk, out_len)) * down + delay  # upsampled index, centered
    base_m, phase_m = n_m // up, n_m % up
    idx_mj = np.clip(base_m[:, None] - j[None, :] + taps, 0, len(x_pad) - 1)
    out[start:start + len(n_m)] = np.einsum("mj,mj->m", h_pj[phase_m], x_pad[idx_mj])
  return out


def prepare(wave, rate: int, target_rate: int = 16_000, *, resample: bool = False,
            downmix: bool = False) -> np.ndarray:
  """One recording -> mono float32 [S'] at `target_rate`, in the codec's format.

  wave: [S] mono, or [S, C] with channels last (soundfile's layout; transpose PyAV's
  planar [C, S]). Integer PCM is scaled to [-1, 1]. resample: convert `rate` to
  `target_rate` (polyphase FIR, see the module docstring); without it a different rate
  is an error. downmix: average the C channels to mono; without it C > 1 is an error.
  """
  wave = np.asarray(wave)
  if wave.ndim == 2 and wave.shape[1] == 1:
    wave = wave[:, 0]
  if wave.ndim == 2:
    if wave.shape[1] > _MAX_CHANNELS:
      raise ValueError(f"audio of shape {wave.shape}: expected [samples, channels] with channels last; "
                       "if channels come first (PyAV's planar frames) pass wave.T.")
    if not downmix:
      raise ValueError(f"audio of shape {wave.shape} has {wave.shape[1]} channels but the codec takes "
                       "mono; pass downmix=True to average the channels (or select one channel).")
    wave = _to_float(wave).mean(axis=1)
  elif wave.ndim != 1:
    raise ValueError(f"audio of shape {wave.shape}: expected [samples] or [samples, channels].")
  if wave.size == 0:
    raise ValueError("audio is empty (0 samples); nothing to encode.")
  wave = _to_float(wave)
  if not np.isfinite(wave).all():
    raise ValueError(f"audio has {int((~np.isfinite(wave)).sum())} non-finite samples (first at "
                     f"{int(np.argmax(~np.isfinite(wave)))}); clean or drop this recording.")
  if rate != target_rate:
    if not resample:
      raise ValueError(f"audio at {rate} Hz but {target_rate} Hz is expected; pass resample=True "
                       f"to convert it (polyphase FIR), or give the right sample rate.")
    wave = resample_poly(wave, rate, target_rate)
  return wave


def peak_normalize(wave, peak: float = 0.9) -> np.ndarray:
  """Scales a recording so its largest |sample| is `peak` (silence is returned unchanged).

  Real soundtracks can be very quiet (bigbuckbunny's peaks at -26 dBFS after the
  downmix); a gain is the one level change applied before training, and it is explicit.
  """
  wave = np.asarray(wave, np.float32)
  top = float(np.abs(wave).max()) if wave.size else 0.0
  return wave if top == 0.0 else wave * np.float32(peak / top)
