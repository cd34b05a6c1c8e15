"""The optimizer: AdamW with linear warmup, cosine decay and global-norm clipping (optax)."""
from __future__ import annotations

import jax
import optax

from configs.schema import TrainConfig


def schedule(cfg: TrainConfig) -> optax.Schedule:
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=cfg.warmup_steps,
      decay_steps=max(cfg.steps, cfg.warmup_steps + 1), end_value=cfg.learning_rate * 0.1)


def decay_mask(params):
  """True for parameters that get weight decay: all but norm scales.

  Decided by name (the last dict key on the path is `scale`), not by rank: scales
  stacked over layers are 2-D like weights.
  """
  def decays(path, _):
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return not names or names[-1] != "scale"
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  chain.append(optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                           mask=decay_mask))
  return optax.chain(*chain)
