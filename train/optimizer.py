"""The optimizer: AdamW with linear warmup, cosine decay, global-norm clipping and an
optional EMA of the parameters (optax)."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
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


class EmaState(NamedTuple):
  ema: Any  # exponential moving average of the parameters, same tree and sharding


def ema_of_params(decay: float) -> optax.GradientTransformation:
  """Keeps an EMA of the parameters *after* the update; passes updates through unchanged.

  Placed last in the chain, `params + updates` are the new parameters. Living in the
  optimizer state, the EMA is sharded like the parameters and saved in checkpoints.
  """
  def init(params):
    return EmaState(ema=jax.tree.map(jnp.copy, params))

  def update(updates, state, params):
    ema = jax.tree.map(lambda e, p, u: decay * e + (1 - decay) * (p + u), state.ema, params, updates)
    return updates, EmaState(ema=ema)

  return optax.GradientTransformation(init, update)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  chain = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm > 0 else []
  chain.append(optax.adamw(schedule(cfg), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay,
                           mask=decay_mask))
  if cfg.ema_decay:
    chain.append(ema_of_params(cfg.ema_decay))
  return optax.chain(*chain)


def find_ema(opt_state) -> Any | None:
  """The EMA parameters inside an optimizer state, or None when EMA is off."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, EmaState))
           if isinstance(s, EmaState)]
  return found[0].ema if found else None
