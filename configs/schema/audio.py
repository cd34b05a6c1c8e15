"""The audio codec's configs: the SoundStream-style causal 1-D conv codec with residual VQ
(vidtok/audio), its training (train/audio_trainer.py), and `AudioConfig`, one codec run."""
from __future__ import annotations

import dataclasses

from configs.schema.checks import ConfigError, _check_choice, _check_positive
from configs.schema.mesh import MeshConfig

CODEBOOK_MODES = ("ema", "straight_through")
ACTIVATIONS = ("elu", "silu")
ADVERSARIAL_LOSSES = ("hinge", "least_squares")


@dataclasses.dataclass(frozen=True)
class AudioCodecConfig:
  """The causal audio codec (vidtok/audio): waveform [B, S] <-> RVQ codes [B, levels, frames].

  The encoder downsamples by prod(strides) (hop; 2*4*5*8 = 320 -> 50 latent frames per
  second at 16 kHz); encoder block b maps `channels * mult[b-1]` to `channels * mult[b]`
  channels (mult[-1] = 1). Named configs: `configs/audio_*.py`.
  """
  sample_rate: int = 16_000               # Hz of the waveforms the codec reads and writes (mono)
  channels: int = 32                      # base width C of the first conv
  channel_mults: tuple[int, ...] = (2, 4, 8, 16)  # block widths / channels, one per stride
  strides: tuple[int, ...] = (2, 4, 5, 8)         # encoder downsampling factors, in order
  residual_units: int = 3                 # residual units per block, dilations 1, 3, 9, ...
  kernel_size: int = 7                    # taps of the residual and input/output convs
  activation: str = "elu"                 # nonlinearity of encoder and decoder: "elu" or "silu"
  latent_dim: int = 128                   # D of the quantized latent
  levels: int = 4                         # RVQ levels L (VideoPoet: 4)
  codebook_size: int = 1024               # K codes per level (VideoPoet: 1024)
  commitment_weight: float = 0.25         # weight of the encoder's pull toward its codes
  codebook_mode: str = "ema"              # "ema" updates or "straight_through" (learned by gradient)
  ema_decay: float = 0.99                 # decay of the EMA codebook updates (codebook_mode="ema")
  dead_code_threshold: float = 0.5        # restart codes whose EMA usage (hits/step) falls below this
  quantizer_dropout: float = 0.5          # prob. an example trains with a random number of levels
  stft_windows: tuple[int, ...] = (1024, 512, 256, 128, 64)  # multi-scale spectral loss windows
  mel_bins: int = 64                      # largest mel filterbank of the mel loss (0: no mel loss)
  stft_weight: float = 1.0                # weight of spectral convergence + log-magnitude L1
  mel_weight: float = 1.0                 # weight of the log-mel L1
  waveform_weight: float = 0.0            # weight of the L1 on samples
  discriminator: bool = False             # adversarial training with a multi-scale waveform D
  disc_channels: int = 16                 # first-layer width of each discriminator scale
  disc_scales: int = 3                    # discriminators: on the waveform, /2, /4 average-pooled
  disc_downsamples: int = 3               # strided (x4) layers per scale
  adversarial_loss: str = "hinge"         # GAN objective: "hinge" or "least_squares"
  adversarial_weight: float = 1.0         # weight of the codec's adversarial loss (discriminator=True)
  feature_matching_weight: float = 2.0    # L1 between discriminator features of real and decoded audio
  clip_seconds: float = 2.125             # one LM clip: 17 frames at 8 fps -> 34000 samples -> 106 frames

  def __post_init__(self):
    _check_positive(self, "sample_rate", "channels", "residual_units", "kernel_size", "latent_dim",
                    "levels", "codebook_size", "clip_seconds", "disc_channels", "disc_scales")
    if not self.strides or any(not isinstance(s, int) or s < 1 for s in self.strides):
      raise ConfigError(f"audio.strides={self.strides} must be a non-empty tuple of integers >= 1, "
                        "e.g. (2, 4, 5, 8).")
    if len(self.channel_mults) != len(self.strides) or any(m < 1 for m in self.channel_mults):
      raise ConfigError(f"audio.channel_mults={self.channel_mults} needs one multiplier >= 1 per "
                        f"stride in audio.strides={self.strides}.")
    _check_choice("audio.codebook_mode", self.codebook_mode, CODEBOOK_MODES)
    _check_choice("audio.activation", self.activation, ACTIVATIONS)
    _check_choice("audio.adversarial_loss", self.adversarial_loss, ADVERSARIAL_LOSSES)
    if not 0 <= self.ema_decay < 1:
      raise ConfigError(f"audio.ema_decay={self.ema_decay} must be in [0, 1), e.g. 0.99.")
    if not 0 <= self.quantizer_dropout <= 1:
      raise ConfigError(f"audio.quantizer_dropout={self.quantizer_dropout} is a probability: "
                        "use a value in [0, 1] (0: always train with all levels).")
    for name in ("commitment_weight", "dead_code_threshold", "stft_weight", "mel_weight",
                 "waveform_weight", "adversarial_weight", "feature_matching_weight", "mel_bins",
                 "disc_downsamples"):
      if not getattr(self, name) >= 0:
        raise ConfigError(f"audio.{name}={getattr(self, name)} must be >= 0.")
    if any(w < 16 or w & (w - 1) for w in self.stft_windows):
      raise ConfigError(f"audio.stft_windows={self.stft_windows}: every window must be a power of "
                        "two >= 16 (the STFT hop is a quarter window).")
    if not self.stft_weight + self.mel_weight + self.waveform_weight > 0:
      raise ConfigError("audio.stft_weight, audio.mel_weight and audio.waveform_weight are all 0: "
                        "the codec would have no reconstruction loss; set at least one > 0.")
    if self.mel_weight > 0 and (self.mel_bins == 0 or not self.stft_windows):
      raise ConfigError(f"audio.mel_weight={self.mel_weight} needs audio.mel_bins > 0 and "
                        "audio.stft_windows; set audio.mel_weight=0 to drop the mel loss.")
    if self.stft_weight > 0 and not self.stft_windows:
      raise ConfigError("audio.stft_weight > 0 needs at least one window in audio.stft_windows.")
    if self.clip_samples < self.hop:
      raise ConfigError(f"audio.clip_seconds={self.clip_seconds} gives {self.clip_samples} samples, "
                        f"fewer than one latent frame (hop {self.hop}); use a longer clip.")

  @property
  def hop(self) -> int:
    """Samples per latent frame (the product of the strides)."""
    hop = 1
    for s in self.strides:
      hop *= s
    return hop

  @property
  def frame_rate(self) -> float:
    return self.sample_rate / self.hop

  @property
  def clip_samples(self) -> int:
    return round(self.clip_seconds * self.sample_rate)

  @property
  def clip_frames(self) -> int:
    """Latent frames of one clip: a trailing partial frame is not encoded."""
    return self.clip_samples // self.hop


EXTRA_AUDIO = ("sonic_pi", "espeak")


@dataclasses.dataclass(frozen=True)
class AudioTrainConfig:
  """Audio codec training (train/audio_trainer.py): data, optimizer, schedule, checkpoints.

  Training audio: the `audio` tracks of the `has_audio` clips of `data_dir`'s train split,
  plus the bundled sources named in `extra_audio` (comma-separated: "sonic_pi" = Debian's
  sonic-pi-samples FLACs, "espeak" = espeak-ng speech). Held out: the validation split's
  clips with sound, never trained on.
  """
  data_dir: str = "outputs/data/demo"  # a dataset built by `kineto data build` / `kineto data demo`
  extra_audio: str = ""        # e.g. "sonic_pi,espeak"; "" = the dataset's audio only
  extra_max_seconds: float = 4.0  # each extra recording is cut to this many seconds
  steps: int = 20              # optimizer steps in all (the cosine schedule ends here)
  batch_size: int = 8          # global batch, in crops
  crop_seconds: float = 0.4    # training crops (rounded down to whole latent frames)
  gain_db: float = 30.0        # crops are peak-normalized, then attenuated by U[0, gain_db] dB
  learning_rate: float = 1e-3  # peak AdamW learning rate, after warmup; decays to 10% by `steps`
  warmup_steps: int = 20       # linear warmup from 0, in steps
  b1: float = 0.8              # Adam first-moment decay
  b2: float = 0.99             # Adam second-moment decay
  weight_decay: float = 0.0    # AdamW decoupled weight decay
  clip_norm: float = 1.0       # global gradient-norm clip (0: no clipping)
  seed: int = 0                # parameter init, crops and gains
  log_every: int = 10          # steps between logged metrics
  audio_every: int = 0         # steps between audio/spectrogram summaries (0: at the end only)
  checkpoint_every: int = 100  # steps between checkpoints (0: only at the end and on SIGTERM)
  keep_last: int = 2           # checkpoints kept: the last N ...
  keep_every: int = 0          # ... plus every M-th step (0: none)
  eval_clips: int = 16         # held-out clips scored at the end (at most this many)

  def __post_init__(self):
    _check_positive(self, "steps", "batch_size", "crop_seconds", "learning_rate", "log_every",
                    "keep_last", "eval_clips", "extra_max_seconds")
    for f in ("warmup_steps", "audio_every", "checkpoint_every", "keep_every", "clip_norm",
              "weight_decay", "gain_db"):
      if not getattr(self, f) >= 0:
        raise ConfigError(f"train.{f}={getattr(self, f)} must be >= 0.")
    for f in ("b1", "b2"):
      if not 0 <= getattr(self, f) < 1:
        raise ConfigError(f"train.{f}={getattr(self, f)} must be in [0, 1).")
    unknown = [s for s in self.extra_sources if s not in EXTRA_AUDIO]
    if unknown:
      raise ConfigError(f"train.extra_audio={self.extra_audio!r}: unknown sources {unknown}; "
                        f"use a comma-separated subset of {list(EXTRA_AUDIO)} or ''.")

  @property
  def extra_sources(self) -> tuple[str, ...]:
    return tuple(s.strip() for s in self.extra_audio.split(",") if s.strip())


@dataclasses.dataclass(frozen=True)
class AudioConfig:
  """Everything one audio codec run needs (`kineto audio train`)."""
  name: str = "unnamed"        # the config's name (its file's stem for shipped configs)
  codec: AudioCodecConfig = AudioCodecConfig()   # the codec and its losses
  mesh: MeshConfig = MeshConfig()                # devices and sharding rules
  train: AudioTrainConfig = AudioTrainConfig()   # data, optimizer, schedule, checkpoints

  def __post_init__(self):
    crop = int(self.train.crop_seconds * self.codec.sample_rate)
    if crop < self.codec.hop:
      raise ConfigError(f"train.crop_seconds={self.train.crop_seconds} gives {crop} samples, fewer "
                        f"than one latent frame (hop {self.codec.hop}); use a longer crop.")
    if crop < max(self.codec.stft_windows, default=0):
      raise ConfigError(f"train.crop_seconds={self.train.crop_seconds} ({crop} samples) is shorter "
                        f"than the largest STFT window {max(self.codec.stft_windows)}; lengthen the crop.")
