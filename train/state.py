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
import numpy as np
from flax import nnx

import sharding
from configs.schema import Config
from lm import Transformer, next_token_loss
from train.lm_data import batch_keys
from train.optimizer import find_ema, make_optimizer


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


def abstract_of(build, mesh: jax.sharding.Mesh, rules) -> TrainState:
  """Shapes and shardings of the nnx objects `build()` makes, without allocating them."""
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    graphdef, abstract = nnx.get_abstract_model(build, mesh)
  shardings = jax.tree.map(lambda a: a.sharding, abstract)
  return TrainState(graphdef, abstract, shardings)


# The init program runs once, so how long it takes to compile is all that counts. XLA:CPU's
# optimizer spends 15.5 s on the demo tokenizer's (random draws for every array), 2.0 s at
# level 0 (bench/NOTES.md, "the demo's budget"); other backends keep their defaults.
INIT_COMPILER_OPTIONS = {"cpu": {"xla_backend_optimization_level": 0}}


def init_of(build, mesh: jax.sharding.Mesh, rules) -> TrainState:
  """Runs `build()` inside jit with out_shardings: every array is born on its own shards."""
  abstract = abstract_of(build, mesh, rules)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    init = jax.jit(lambda: nnx.state(build()), out_shardings=abstract.shardings)
    options = INIT_COMPILER_OPTIONS.get(jax.default_backend())
    state = init.lower().compile(compiler_options=options)()
  return TrainState(abstract.graphdef, state, abstract.shardings)


def abstract_state(cfg: Config, mesh: jax.sharding.Mesh, seed: int = 0) -> TrainState:
  """Shapes and shardings of the train state without allocating it (for restore and AOT)."""
  return abstract_of(lambda: _model_and_opt(cfg, seed), mesh, cfg.mesh.rules)


def init_state(cfg: Config, mesh: jax.sharding.Mesh, seed: int = 0) -> TrainState:
  """Creates parameters and optimizer state directly on their shards."""
  check_fits_mesh(cfg, mesh)
  return init_of(lambda: _model_and_opt(cfg, seed), mesh, cfg.mesh.rules)


def restore(ckpt, abstract: TrainState, step: int | None = None) -> tuple[int, TrainState]:
  """(step, state) of a checkpoint (the latest, or `step`) restored onto `abstract`'s
  shardings: a run saved on one mesh resumes or loads on any other."""
  step, state, _ = ckpt.restore(abstract.state, step)
  return step, dataclasses.replace(abstract, state=state)


def trained_model(ts: TrainState, *, ema: bool = True):
  """(model, whether EMA weights were used): the first object of a (model, optimizer, ...)
  state, with the optimizer's EMA of its weights when the run kept one and `ema`."""
  model, opt = nnx.merge(ts.graphdef, ts.state)[:2]
  found = find_ema(opt.opt_state) if ema else None
  if found is not None:
    nnx.update(model, found)
  return model, found is not None


def batch_shardings(cfg: Config, mesh: jax.sharding.Mesh) -> dict:
  return {k: sharding.batch_sharding(mesh, 3 if k == "text_emb" else 2, cfg.mesh.rules) for k in batch_keys(cfg)}


def abstract_batch(cfg: Config, shardings: dict, length: int) -> dict:
  """The shapes of one global batch of `length` tokens (for ahead-of-time compiles): tokens and
  masks [b, length], and with caption embeddings `text_emb` [b, data.text_budget, lm.text_dim]."""
  b = cfg.train.batch_size
  shapes = {key: ((b, length), np.int32 if key == "tokens" else bool) for key in shardings}
  if "text_emb" in shardings:
    shapes["text_emb"] = ((b, cfg.data.text_budget, cfg.lm.text_dim), np.float32)
  return {key: jax.ShapeDtypeStruct(shape, dtype, sharding=shardings[key]) for key, (shape, dtype) in shapes.items()}


def _loss_and_grads(model_def, params, rest, batch):
  """Token-weighted loss sum, its gradient, and the token count of one (micro)batch."""
  def loss_fn(params):
    model = nnx.merge(model_def, params, rest)
    objective, metrics = next_token_loss(model, batch["tokens"], batch["input_mask"],
                                         batch["loss_mask"], text_emb_bse=batch.get("text_emb"))
    # Weighted by the token count, so micro-batches add up to the whole batch exactly.
    return objective * metrics["tokens"], (metrics["loss"] * metrics["tokens"], metrics["tokens"])

  (objective_sum, (ce_sum, tokens)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return objective_sum, ce_sum, tokens, grads


def make_train_step(cfg: Config, mesh: jax.sharding.Mesh, ts: TrainState):
  """Returns step(state, batch) -> (state, metrics), jitted with shardings and donation.

  With `train.microbatches = m` the batch runs as m interleaved parts (rows i, i+m, ...,
  so every device keeps working) whose gradients are summed before one update. A step
  whose loss or gradient is not finite leaves the state unchanged (metrics["finite"] = 0).
  """
  graphdef, m = ts.graphdef, cfg.train.microbatches

  def step(state, batch):
    old_leaves = jax.tree.leaves(state)  # merge shares Variables: the update mutates `state`
    model, opt = nnx.merge(graphdef, state)
    model_def, params, rest = nnx.split(model, nnx.Param, ...)
    if m == 1:
      objective_sum, ce_sum, tokens, grads = _loss_and_grads(model_def, params, rest, batch)
    else:
      micro = jax.tree.map(lambda x: x.reshape(x.shape[0] // m, m, *x.shape[1:]).swapaxes(0, 1), batch)
      zero = (0.0, 0.0, 0.0, jax.tree.map(jnp.zeros_like, params))

      def accumulate(carry, micro_batch):
        out = _loss_and_grads(model_def, params, rest, micro_batch)
        return jax.tree.map(jnp.add, carry, out), None

      (objective_sum, ce_sum, tokens, grads), _ = jax.lax.scan(accumulate, zero, micro)
    count = jnp.maximum(tokens, 1.0)
    grads = jax.tree.map(lambda g: g / count, grads)
    objective, grad_norm = objective_sum / count, global_norm(grads)
    finite = jnp.isfinite(objective) & jnp.isfinite(grad_norm)
    opt.update(model, grads)
    new_state = keep_if_finite(finite, nnx.state((model, opt)), old_leaves)
    metrics = {"loss": ce_sum / count, "objective": objective, "grad_norm": grad_norm,
               "tokens": tokens, "finite": finite}
    return new_state, metrics

  jitted = jax.jit(step, in_shardings=(ts.shardings, batch_shardings(cfg, mesh)),
                   out_shardings=(ts.shardings, None), donate_argnums=0)

  def run(state, batch):
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
      return jitted(state, batch)

  run.jitted = jitted
  return run


def keep_if_finite(finite: jax.Array, new_state, old_leaves):
  """`new_state` if the step was finite, else the old leaves: a bad step changes nothing
  (the trainer counts it)."""
  new_leaves, treedef = jax.tree.flatten(new_state)
  return jax.tree.unflatten(treedef, [jnp.where(finite, new, old)
                                      for new, old in zip(new_leaves, old_leaves)])


def global_norm(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))
