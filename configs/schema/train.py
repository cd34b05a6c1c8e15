"""The optimization loop of the LM trainer (train/lm_trainer.py, train/optimizer.py); the
audio codec's library step (train/audio_step.py) reuses it for its optimizer settings."""
from __future__ import annotations

import dataclasses

from configs.schema.checks import ConfigError, _check_positive


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The optimization loop (train/)."""
  steps: int = 20              # optimizer steps in all (the cosine schedule ends here)
  batch_size: int = 8          # global batch, in sequences
  seq_len: int = 128           # tokens per training sequence (<= lm.max_len)
  learning_rate: float = 3e-3  # peak AdamW learning rate, after warmup; decays to 10% by `steps`
  warmup_steps: int = 5        # linear warmup from 0, in steps
  weight_decay: float = 0.1    # AdamW decoupled weight decay (norm scales excluded)
  b1: float = 0.9              # Adam first-moment decay
  b2: float = 0.95             # Adam second-moment decay
  clip_norm: float = 1.0       # global gradient-norm clip (0: no clipping)
  seed: int = 0                # parameter init and data order
  log_every: int = 5           # steps between logged metrics
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
