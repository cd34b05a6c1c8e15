"""The SR stage's sharded state and jitted train step (the masked objective of lm/masked.py).

A batch (train/sr_data.py) holds the high-res codes `high` [B, N], the positions to hide
`masked` [B, N], the low-res codes `low` [B, M], the caption pieces `text` / `text_valid`
[B, P] and `cond` [B] (False: both conditions dropped, for guidance). The state is born on
its shards through `train.state.init_of`, the step is one `jax.jit` with explicit shardings
and donation, and a non-finite step leaves the state unchanged, as in the LM's step.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

import sharding
from configs.schema import SrConfig
from lm.masked import masked_loss
from lm.superres import SuperResolution
from train.optimizer import make_optimizer
from train.state import TrainState, abstract_of, global_norm, init_of, keep_if_finite

BATCH_KEYS = ("high", "masked", "low", "text", "text_valid", "cond")


def build(cfg: SrConfig, seed: int):
  model = SuperResolution(cfg.sr, cfg.lm, rngs=nnx.Rngs(seed))
  return model, nnx.Optimizer(model, make_optimizer(cfg.train), wrt=nnx.Param)


def check_fits_mesh(cfg: SrConfig, mesh, batch_size: int | None = None) -> None:
  """Clear errors for model or batch sizes the mesh cannot split, before any compile."""
  dims = {"vocab": cfg.sr.codes, "embed": cfg.lm.embed, "mlp": cfg.lm.mlp, "heads": cfg.lm.heads,
          "kv_heads": cfg.lm.kv_heads, "act_batch": batch_size or cfg.train.batch_size}
  sharding.check_divisible(mesh, dims, cfg.mesh.rules)


def init_state(cfg: SrConfig, mesh, seed: int = 0) -> TrainState:
  check_fits_mesh(cfg, mesh)
  return init_of(lambda: build(cfg, seed), mesh, cfg.mesh.rules)


def abstract_state(cfg: SrConfig, mesh, seed: int = 0) -> TrainState:
  return abstract_of(lambda: build(cfg, seed), mesh, cfg.mesh.rules)


def sr_loss(model: SuperResolution, batch: dict):
  """(masked cross-entropy, metrics) of one batch: the model sees the codes outside `masked`."""
  logits_bnv = model(batch["high"], ~batch["masked"], batch["low"], batch["text"], batch["text_valid"],
                     batch["cond"])
  return masked_loss(logits_bnv, batch["high"], batch["masked"])


def batch_shardings(cfg: SrConfig, mesh) -> dict:
  return {k: sharding.batch_sharding(mesh, 1 if k == "cond" else 2, cfg.mesh.rules) for k in BATCH_KEYS}


def make_sr_step(cfg: SrConfig, mesh, ts: TrainState):
  """step(state, batch) -> (state, metrics), jitted with shardings and donation."""
  graphdef = ts.graphdef

  def step(state, batch):
    old_leaves = jax.tree.leaves(state)  # merge shares Variables: the update mutates `state`
    model, opt = nnx.merge(graphdef, state)
    model_def, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(params):
      return sr_loss(nnx.merge(model_def, params, rest), batch)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    grad_norm = global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    opt.update(model, grads)
    new_state = keep_if_finite(finite, nnx.state((model, opt)), old_leaves)
    return new_state, {**metrics, "grad_norm": grad_norm, "finite": finite}

  jitted = jax.jit(step, in_shardings=(ts.shardings, batch_shardings(cfg, mesh)),
                   out_shardings=(ts.shardings, None), donate_argnums=0)

  def run(state, batch):
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
      return jitted(state, batch)

  run.jitted = jitted
  return run
