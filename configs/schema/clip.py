"""`ClipSpec`: what one example is, for the dataset builder and for the LM's task layouts.

The dataset builder (`train/data/build.py`) cuts every video into clips of `frames` frames
of `height` x `width` at `fps`, with the audio of the same span at `audio_rate`; the LM's
task layouts (`lm/tasks.py`) turn such a clip's codes into one sequence: a clip of `frames`
(1 + 4k) pixel frames becomes latents [1 + (frames - 1) / 4, height / 8, width / 8]
(MAGVIT-v2 compression 4x8x8); its audio lasts frames / fps seconds and becomes
floor(seconds * audio_hz) RVQ frames (VideoPoet: 17 frames at 8 fps = 2.125 s -> 106
frames at 50 Hz). Defaults are the demo's clips.

The builder reads the clip and dataset fields (`DATASET_FIELDS`, written to the dataset's
summary.json), the layouts the clip and layout fields; neither sets the other's.
"""
from __future__ import annotations

import dataclasses
import math

from configs.schema.checks import ConfigError

CROPS = ("center", "random", "none")
AUDIO_ORDERS = ("level", "time")
# The fields of a dataset's clips, in the order its summary.json records them.
DATASET_FIELDS = ("frames", "fps", "height", "width", "crop", "stride", "audio_rate", "seed")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClipSpec:
  """The shapes every example of a dataset or an LM run has (see the module docstring)."""
  # --- the clip ---
  frames: int = 17                 # pixel frames per clip, 1 + 4k (the first is encoded alone)
  fps: float = 8.0                 # frames per second the clip is resampled to
  height: int = 64                 # pixels
  width: int = 64                  # pixels
  # --- the dataset builder ---
  crop: str = "center"             # center, random (per clip, from `seed`) or none (squash)
  stride: int | None = None        # frames between window starts; None: `frames` (no overlap)
  audio_rate: int = 16000          # Hz of the stored mono waveform
  seed: int = 0                    # random crops and the held-out choice of files
  # --- the LM's task layouts ---
  compression: tuple[int, int, int] = (4, 8, 8)  # tokenizer compression: time, height, width
  audio_hz: float = 50.0           # audio codec frames per second
  text_budget: int = 16            # longest caption, in pieces
  continuation_frames: int = 2     # latent frames of condition in continuation tasks
  res: bool = False                # emit <res> before the outputs
  audio_order: str = "level"       # RVQ flattening: "level" (VideoPoet) or "time"

  def __post_init__(self):
    ct, ch, cw = self.compression
    if min(ct, ch, cw) < 1:
      raise ConfigError(f"ClipSpec.compression={self.compression} must be positive.")
    if not isinstance(self.frames, int) or self.frames < 1 or (self.frames - 1) % ct:
      raise ConfigError(
          f"ClipSpec.frames={self.frames!r} must be 1 + {ct}k: {self.frames!r} is not of the form "
          f"1 + {ct}k, which the causal video tokenizer needs (the first frame is encoded alone, "
          f"then {ct}x time compression); use {1 + 4 * ct}, or "
          f"{', '.join(str(1 + i * ct) for i in (0, 1, 2, 3, 5))}, ...")
    for name in ("fps", "height", "width", "audio_rate"):
      value = getattr(self, name)
      if not isinstance(value, (int, float)) or not 0 < value < math.inf:  # inf would loop forever
        raise ConfigError(f"{name}={value!r} must be a positive finite number.")
    if self.crop not in CROPS:
      raise ConfigError(f"crop={self.crop!r} is not one of {CROPS}.")
    if self.stride is not None and (not isinstance(self.stride, int) or self.stride < 1):
      raise ConfigError(f"stride={self.stride!r} must be a positive number of frames (or None "
                        f"for {self.frames}, no overlap).")
    if self.height % ch or self.width % cw:
      raise ConfigError(f"ClipSpec {self.height}x{self.width} pixels is not divisible by the "
                        f"spatial compression {ch}x{cw}.")
    t = self.video_shape[0]
    # The default is not checked against clips of 1 or 2 latent frames, which have no
    # continuation (a dataset of such clips is fine); laying out a continuation task from
    # them raises this error (`check_continuation`).
    if self.continuation_frames != ClipSpec.continuation_frames or t > ClipSpec.continuation_frames:
      self.check_continuation(self.continuation_frames)
    if self.text_budget < 1 or not 0 < self.audio_hz < math.inf:
      raise ConfigError("ClipSpec.text_budget, fps and audio_hz must be > 0.")
    if self.audio_order not in AUDIO_ORDERS:
      raise ConfigError(f"ClipSpec.audio_order={self.audio_order!r}: expected 'level' or 'time'.")

  def check_continuation(self, frames: int) -> None:
    """Raises unless `frames` latent frames of condition leave some to continue."""
    t = self.video_shape[0]
    if not 1 <= frames < t:
      raise ConfigError(f"ClipSpec.continuation_frames={frames} must be in [1, {t}) for clips of "
                        f"{t} latent frames.")

  def dataset_fields(self) -> dict:
    """The clip and dataset-builder fields, as a dataset's summary.json records them."""
    return {name: getattr(self, name) for name in DATASET_FIELDS}

  # --- the clip ---

  @property
  def seconds(self) -> float:
    return self.frames / self.fps

  # --- the dataset builder ---

  @property
  def step(self) -> int:
    """Frames between window starts."""
    return self.stride or self.frames

  @property
  def audio_samples(self) -> int:
    """Waveform samples per clip at `audio_rate`: exactly the clip's time span."""
    return round(self.frames * self.audio_rate / self.fps)

  # --- the LM's task layouts ---

  @property
  def video_shape(self) -> tuple[int, int, int]:
    """Latent frames, height, width of the clip's video codes."""
    ct, ch, cw = self.compression
    return (1 + (self.frames - 1) // ct, self.height // ch, self.width // cw)

  @property
  def audio_frames(self) -> int:
    """Audio codec frames per clip."""
    return int(self.seconds * self.audio_hz + 1e-9)

  def audio_split(self, latent_frames: int) -> int:
    """Audio frames that play during the first `latent_frames` latent frames.

    Latent frame 0 is pixel frame 0; latent frame j > 0 covers pixel frames 4j-3 .. 4j.
    """
    pixel_frames = 1 + self.compression[0] * (latent_frames - 1)
    return round(self.audio_frames * pixel_frames / self.frames)
