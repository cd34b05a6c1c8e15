"""Sharding: golden partition specs, and N-device training equals 1-device training."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
import sharding
from train.state import abstract_state, init_state, make_train_step

P = jax.sharding.PartitionSpec

# lm_tiny on a (data=2, fsdp=2, tensor=2) mesh. The leading None is the stacked layer axis.
GOLDEN_SPECS_2X2X2 = {
    "blocks/attn/k_norm/scale": P(None, None),
    "blocks/attn/q_norm/scale": P(None, None),
    "blocks/attn/wq": P(None, "fsdp", "tensor", None),
    "blocks/attn/wk": P(None, "fsdp", "tensor", None),
    "blocks/attn/wv": P(None, "fsdp", "tensor", None),
    "blocks/attn/wo": P(None, "tensor", None, "fsdp"),
    "blocks/attn_norm/scale": P(None, None),
    "blocks/mlp/w_gate": P(None, "fsdp", "tensor"),
    "blocks/mlp/w_up": P(None, "fsdp", "tensor"),
    "blocks/mlp/w_out": P(None, "tensor", "fsdp"),
    "blocks/mlp_norm/scale": P(None, None),
    "embedding": P("tensor", "fsdp"),
    "final_norm/scale": P(None),
    "head": P("fsdp", "tensor"),
}


def flat_params(model):
  return {"/".join(map(str, path)): var.get_value()
          for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param))}


def test_partition_specs_match_golden_table():
  cfg = configs.load("lm_tiny")
  mesh = sharding.make_mesh((2, 2, 2))
  ts = init_state(cfg, mesh)
  model, _ = ts.merge()
  specs = {name: value.sharding.spec for name, value in flat_params(model).items()}
  assert specs == GOLDEN_SPECS_2X2X2
  # The abstract state used for restore and AOT agrees with the materialized one.
  abstract_model, _ = abstract_state(cfg, mesh).merge()
  assert {n: v.sharding.spec for n, v in flat_params(abstract_model).items()} == specs


def run_steps(shape, steps=3):
  cfg = configs.load("lm_tiny", ["train.warmup_steps=1"])
  mesh = sharding.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
  ts = init_state(cfg, mesh)
  step = make_train_step(cfg, mesh, ts)
  rng = np.random.RandomState(0)
  tokens = jnp.asarray(rng.randint(0, cfg.lm.vocab, (8, 65)), jnp.int32)
  prefix = jnp.zeros((8, 65), bool).at[:, :20].set(True)
  batch = {"tokens": tokens, "input_mask": prefix, "loss_mask": ~prefix}
  state, losses = ts.state, []
  for _ in range(steps):
    state, metrics = step(state, batch)
    losses.append(float(metrics["loss"]))
  return losses


@pytest.fixture(scope="module")
def single_device_losses():
  return run_steps((1, 1, 1))


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_sharded_training_matches_single_device(shape, single_device_losses):
  losses = run_steps(shape)
  assert losses[-1] < losses[0], "two updates on one fixed batch must lower its loss"
  np.testing.assert_allclose(losses, single_device_losses, rtol=1e-5)
