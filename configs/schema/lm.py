"""The multi-task LM's configs: the transformer (lm/model.py), the unified vocabulary
(lm/vocab.py), what it trains on (train/lm_data.py), and `Config`, one LM run."""
from __future__ import annotations

import dataclasses

import jax

from configs.schema.checks import ConfigError, _check_choice, _check_positive
from configs.schema.mesh import MeshConfig
from configs.schema.train import TrainConfig

# auto: float32 on CPU, bfloat16 elsewhere. No float16: the loss has no loss scaling.
DTYPES = ("auto", "float32", "bfloat16")
ATTENTION_IMPLS = ("blockwise", "dot_product_attention", "cpu")
MATMUL_IMPLS = ("xla", "cpu")
# `none` runs layers without rematerialization; every other name is a policy without
# arguments from `jax.checkpoint_policies` (`nothing_saveable` = full remat).
REMAT_POLICIES = ("none",) + tuple(
    name for name in ("nothing_saveable", "everything_saveable", "dots_saveable",
                      "dots_with_no_batch_dims_saveable")
    if hasattr(jax.checkpoint_policies, name))


@dataclasses.dataclass(frozen=True)
class LmConfig:
  """The decoder-only prefix-LM transformer (lm/model.py)."""
  vocab: int = 512             # V: rows of the embedding and logits (>= the vocab layout's size)
  embed: int = 64              # D: model width
  layers: int = 2              # transformer blocks
  heads: int = 4               # N: query heads
  kv_heads: int = 2            # key/value heads (grouped-query attention; divides heads)
  head_dim: int = 0            # 0: embed // heads
  mlp: int = 172               # SwiGLU hidden width (~8/3 x embed matches a 4x GELU MLP)
  qk_norm: bool = True         # RMSNorm on queries and keys before rotary positions
  tie_embeddings: bool = False  # logits use the input embedding (no separate output head)
  rope_theta: float = 10_000.0  # rotary position base (wavelengths up to 2*pi*theta)
  norm_eps: float = 1e-6       # epsilon of every RMSNorm
  max_len: int = 128           # longest training sequence (train.seq_len <= max_len)
  dtype: str = "auto"          # compute dtype; parameters are always float32
  remat_policy: str = "nothing_saveable"  # a REMAT_POLICIES name: what the backward pass keeps
  scan_unroll: int = 1         # layers per scan iteration (>= layers: straight-line code)
  attention_block: int = 256   # query block of the block-causal attention (0: one block)
  attention_impl: str = "blockwise"  # or "dot_product_attention", or "cpu" (a fused CPU-only kernel; lm/attention.py)
  matmul_impl: str = "xla"     # or "cpu": dense layers through numpy's BLAS, CPU only (lm/kernels/matmul_cpu.py)
  loss_chunk: int = 256        # sequence chunk of the fused cross-entropy
  z_loss: float = 1e-4         # weight of the log(Z)**2 penalty that keeps logits small
  # E: width of a frozen text encoder's embeddings (text.encoder), projected E -> D into the
  # prefix between <bot_i> and <eot_i>; 0: captions are SentencePiece pieces (no projection).
  text_dim: int = 0

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
    if self.head_dim < 0 or self.attention_block < 0 or self.loss_chunk < 0 or self.z_loss < 0 \
        or self.text_dim < 0:
      raise ConfigError("lm.head_dim, lm.attention_block, lm.loss_chunk, lm.z_loss and lm.text_dim must be >= 0.")
    _check_choice("lm.dtype", self.dtype, DTYPES)
    _check_choice("lm.remat_policy", self.remat_policy, REMAT_POLICIES)
    _check_choice("lm.attention_impl", self.attention_impl, ATTENTION_IMPLS)
    _check_choice("lm.matmul_impl", self.matmul_impl, MATMUL_IMPLS)

  @property
  def head_size(self) -> int:
    return self.head_dim or self.embed // self.heads

  def param_count(self) -> int:
    """Number of parameters (embedding and head included)."""
    k, d = self.head_size, self.embed
    attn = d * k * (self.heads + 2 * self.kv_heads) + self.heads * k * d
    per_layer = attn + 3 * d * self.mlp + 2 * d + (2 * k if self.qk_norm else 0)
    head = 0 if self.tie_embeddings else d * self.vocab
    return self.vocab * d + head + self.layers * per_layer + d + self.text_dim * d


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


DATA_SOURCES = ("bytes", "tokens")
SCHEDULES = ("videopoet",)  # named task schedules (lm/mixture.py NAMED_SCHEDULES)


def schedule_stages(spec: str) -> str | list[tuple[float, dict[str, float]]]:
  """`data.schedule` -> a schedule name, or [(start, {task: weight})] stages.

  "t2v=0.6,i2v=0.4" is one stage from 0; "0:t2i=1;0.25:t2v=1" two, the second from a
  quarter of training. Task names and weights are checked by lm.mixture.Schedule."""
  spec = spec.strip()
  if spec in SCHEDULES:
    return spec
  hint = (f"data.schedule={spec!r}: expected one of {list(SCHEDULES)}, weights like "
          "'t2v=0.6,i2v=0.4', or stages like '0:t2i=0.5,t2v=0.5;0.25:t2v=1'.")
  stages = []
  for part in spec.split(";"):
    start, sep, weights = part.rpartition(":")
    try:
      pairs = [w.split("=") for w in weights.split(",")]
      stages.append((float(start) if sep else 0.0, {n.strip(): float(w) for n, w in pairs}))
    except ValueError:
      raise ConfigError(hint) from None
  if not stages or stages[0][0] != 0.0 or any(b[0] <= a[0] for a, b in zip(stages, stages[1:])):
    raise ConfigError(hint + " Stage starts must begin at 0 and increase.")
  return stages
AUDIO_ORDERS = ("level", "time")


@dataclasses.dataclass(frozen=True)
class LmDataConfig:
  """What the LM trains on (train/lm_data.py)."""
  source: str = "bytes"        # bytes: the bundled text corpus; tokens: shards of `kineto tokenize`
  tokens_dir: str = ""         # the token shards (source=tokens), with train and validation splits
  audio_order: str = "level"   # RVQ audio codes flattened level-major (VideoPoet) or "time"-major
  # The task mixture's weights over training (lm/mixture.py `parse_schedule`): a named
  # schedule (`videopoet`: image-heavy for the first quarter, then video-heavy), weights held
  # constant ("t2v=0.6,i2v=0.4"), or stages by fraction of training done
  # ("0:t2i=0.5,t2v=0.5;0.25:t2v=0.7,i2v=0.3"). Tasks no example can feed are left out.
  schedule: str = "videopoet"
  caption_dropout: float = 0.1  # probability a training caption is replaced by the null one (guidance)
  # longest caption in pieces (or encoder tokens with text.encoder); a longer one is skipped
  # (counted in the log). Token shards truncate encoder captions to their own budget when written.
  text_budget: int = 16

  def __post_init__(self):
    _check_choice("data.source", self.source, DATA_SOURCES)
    _check_choice("data.audio_order", self.audio_order, AUDIO_ORDERS)
    if not 0 <= self.caption_dropout <= 1:
      raise ConfigError(f"data.caption_dropout={self.caption_dropout} must be in [0, 1].")
    if self.text_budget < 1:
      raise ConfigError(f"data.text_budget={self.text_budget} must be >= 1 (caption pieces).")
    schedule_stages(self.schedule)  # bad syntax fails with the config (task names: lm/mixture.py)
    if self.source == "tokens" and not self.tokens_dir:
      raise ConfigError("data.source=tokens needs data.tokens_dir: a directory written by "
                        "`kineto tokenize --out DIR`.")


TEXT_ENCODERS = ("pieces", "minilm", "t5")
TEXT_ENCODER_DIMS = {"minilm": 384}  # t5: the checkpoint's d_model (T5-XL 2048, Flan-T5-base 768)


@dataclasses.dataclass(frozen=True)
class TextConfig:
  """How captions condition the LM (lm/text_encoder.py, docs/design.md 4.3)."""
  # pieces: SentencePiece pieces of a model trained on the captions (`kineto text train`);
  # minilm / t5: a frozen pretrained encoder's token embeddings, computed once when the token
  # shards are written (`kineto tokenize --text_encoder`) and at generation for the prompt.
  encoder: str = "pieces"
  path: str = ""               # t5: a local Hugging Face directory (model.safetensors, tokenizer.json)

  def __post_init__(self):
    _check_choice("text.encoder", self.encoder, TEXT_ENCODERS)
    if self.encoder == "t5" and not self.path:
      raise ConfigError("text.encoder=t5 needs text.path: a local directory with a Hugging Face T5 v1.1 / "
                        "Flan-T5 model.safetensors, config.json and tokenizer.json.")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything one run needs."""
  name: str = "unnamed"        # the config's name (its file's stem for shipped configs)
  vocab: VocabConfig = VocabConfig()      # the id layout the LM reads and writes
  lm: LmConfig = LmConfig()               # the transformer
  mesh: MeshConfig = MeshConfig()         # devices and sharding rules
  train: TrainConfig = TrainConfig()      # optimizer, schedule, checkpoints
  data: LmDataConfig = LmDataConfig()     # training text or token shards
  text: TextConfig = TextConfig()         # caption conditioning: pieces or a frozen encoder

  def __post_init__(self):
    enc, dim = self.text.encoder, self.lm.text_dim
    if (enc == "pieces") != (dim == 0) or dim != TEXT_ENCODER_DIMS.get(enc, dim):
      want = TEXT_ENCODER_DIMS.get(enc, "the encoder's width (T5: config.json's d_model)") if enc != "pieces" else 0
      raise ConfigError(f"text.encoder={enc!r} with lm.text_dim={dim}: set --set lm.text_dim={want}.")
    if self.lm.vocab < self.vocab.size:
      raise ConfigError(f"lm.vocab={self.lm.vocab} is smaller than the vocabulary layout's "
                        f"{self.vocab.size} ids (special {self.vocab.special} + text {self.vocab.text} + "
                        f"video 2**{self.vocab.video_bits} + audio {self.vocab.audio_levels} x "
                        f"{self.vocab.audio_codebook}); raise lm.vocab or shrink the vocab section.")
    if self.train.seq_len > self.lm.max_len:
      raise ConfigError(f"train.seq_len={self.train.seq_len} exceeds lm.max_len={self.lm.max_len}; "
                        "raise lm.max_len or shorten train.seq_len.")
