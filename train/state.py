"""Sharded creation of the model and optimizer state, and the jitted train step.

The state is created inside `jit(..., out_shardings=...)`, so on a pod every parameter
and optimizer moment is born on its own shards: nothing ever exists whole on one host.
The step is an ordinary function of (state, batch) under `jax.jit` with explicit
shardings and donation of the old state.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

import sharding
from configs.schema import Config
from lm import Transformer, next_token_loss
from train.optimizer import make_optimizer

BATCH_KEYS = ("tokens", "input_mask", "loss_mask")


@dataclasses.dataclass
class TrainState:
  """The split (model, optimizer) pair: a static graph and its sharded arrays."""
  graphdef: Any
  state: Any          # nnx.State of (model, optimizer), sharded
  shardings: Any      # NamedShardings matching `state`

  def merge(self):
    return nnx.merge(self.graphdef, self.state)


def _model_and_opt(cfg: Config, seed: int):
  model = Transformer(cfg.lm, rngs=nnx.Rngs(seed))
  return model, nnx.Optimizer(model, make_optimizer(cfg.train), wrt=nnx.Param)


def check_fits_mesh(cfg: Config, mesh: jax.sharding.Mesh, batch_size: int | None = None) -> None:
  """Clear errors for model or batch sizes the mesh cannot split, before any compile."""
  lm = cfg.lm
  dims = {"vocab": lm.vocab, "embed": lm.embed, "mlp": lm.mlp, "heads": lm.heads,
          "kv_heads": lm.kv_heads, "act_batch": batch_size or cfg.train.batch_size}
  sharding.check_divisible(mesh, dims, cfg.mesh.rules)


def abstract_state(cfg: Config, mesh: jax.sharding.Mesh, seed: int = 0) -> TrainState:
  """Shapes and shardings of the train state without allocating it (for restore and AOT)."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    graphdef, abstract = nnx.get_abstract_model(lambda: _model_and_opt(cfg, seed), mesh)
  shardings = jax.tree.map(lambda a: a.sharding, abstract)
  return TrainState(graphdef, abstract, shardings)


def init_state(cfg: Config, mesh: jax.sharding.Mesh, seed: int = 0) -> TrainState:
  """Creates parameters and optimizer state directly on their shards."""
  check_fits_mesh(cfg, mesh)
  abstract = abstract_state(cfg, mesh, seed)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    state = jax.jit(lambda: nnx.state(_model_and_opt(cfg, seed)),
                    out_shardings=abstract.shardings)()
  return TrainState(abstract.graphdef, state, abstract.shardings)


def batch_shardings(cfg: Config, mesh: jax.sharding.Mesh) -> dict:
  return {k: sharding.batch_sharding(mesh, 2, cfg.mesh.rules) for k in BATCH_KEYS}


def make_train_step(cfg: Config, mesh: jax.sharding.Mesh, ts: TrainState):
  """Returns step(state, batch) -> (state, metrics), jitted with shardings and donation."""
  graphdef = ts.graphdef

  def step(state, batch):
    model, opt = nnx.merge(graphdef, state)

    def loss_fn(model):
      return next_token_loss(model, batch["tokens"], batch["input_mask"], batch["loss_mask"])

    (objective, metrics), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    opt.update(model, grads)
    metrics = dict(metrics, objective=objective, grad_norm=_global_norm(grads))
    return nnx.state((model, opt)), metrics

  jitted = jax.jit(step, in_shardings=(ts.shardings, batch_shardings(cfg, mesh)),
                   out_shardings=(ts.shardings, None), donate_argnums=0)

  def run(state, batch):
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
      return jitted(state, batch)

  run.jitted = jitted
  return run


def _global_norm(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
