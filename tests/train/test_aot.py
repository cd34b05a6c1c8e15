"""Ahead-of-time compile of real-size training steps on a fake 8-device mesh (no compute)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
import sharding
from train.state import abstract_state, make_train_step


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lm_1b", "lm_8b"])
def test_train_step_compiles_with_params_sharded_over_fsdp(name):
  cfg = configs.load(name, ["train.batch_size=8"])
  mesh = sharding.make_mesh(cfg.mesh.shape)  # fsdp=-1 -> all 8 devices
  fsdp = mesh.shape["fsdp"]
  assert fsdp == 8
  ts = abstract_state(cfg, mesh)
  step = make_train_step(cfg, mesh, ts)
  t = cfg.train.seq_len + 1
  batch = {k: jax.ShapeDtypeStruct((8, t), jnp.int32 if k == "tokens" else bool)
           for k in ("tokens", "input_mask", "loss_mask")}
  with jax.set_mesh(mesh):
    compiled = step.jitted.lower(ts.state, batch).compile()

  n_params = cfg.lm.param_count()
  model, _ = ts.merge()
  assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(model, nnx.Param))) == n_params
  # Arguments per device: float32 params + AdamW's two moments (+ a tiny batch).
  per_device_state = 3 * 4 * n_params / fsdp
  mem = compiled.memory_analysis()
  assert 0.95 * per_device_state < mem.argument_size_in_bytes < 1.1 * per_device_state, (
      mem.argument_size_in_bytes, per_device_state)
