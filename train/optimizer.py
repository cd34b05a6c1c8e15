"""The optimizer: AdamW with linear warmup, cosine decay and global-norm clipping (optax)."""
from __future__ import annotations

import optax

from configs.schema import TrainConfig


def schedule(cfg: TrainConfig) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.steps, cfg.warmup_steps + 1), end_value=cfg.learning_rate * 0.1)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  # Norm scales and 1-D parameters are not decayed.
  def decay_mask(params):
    import jax
    return jax.tree.map(lambda p: p.ndim > 1, params)

  chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  chain.append(optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                           mask=decay_mask))
  return optax.chain(*chain)
