"""`load_lm` reads only the weights it samples with, onto any mesh (orbax partial restore)."""
import jax
import numpy as np
import pytest
from flax import nnx

import configs
import sharding
from train.checkpoint import Checkpointer
from train.lm_trainer import load_lm
from train.optimizer import find_ema
from train.state import init_state


@pytest.mark.parametrize("ema_decay", [0.0, 0.99])
def test_load_lm_restores_only_the_weights_sharded_over_a_mesh(tmp_path, ema_decay):
  cfg = configs.load("lm_tiny", [f"train.ema_decay={ema_decay}"])
  ts = init_state(cfg, sharding.make_mesh((1, 1, 1), jax.devices()[:1]), seed=0)
  model, opt = ts.merge()
  ema = find_ema(opt.opt_state)
  if ema is not None:  # make the EMA differ from the params, to see which one comes back
    nnx.update(model, jax.tree.map(lambda x: x + 1.0, nnx.state(model, nnx.Param)))
  ckpt = Checkpointer(tmp_path / "checkpoints", cfg)
  ckpt.save(5, nnx.state((model, opt)), force=True)
  ckpt.wait()
  ckpt.close()
  want = nnx.to_pure_dict(ema if ema is not None else nnx.state(model, nnx.Param))

  mesh = sharding.make_mesh((1, 8, 1))  # fsdp over the 8 fake devices
  _, loaded, step, used_ema = load_lm(tmp_path, mesh)
  assert step == 5 and used_ema == (ema is not None)
  got = nnx.to_pure_dict(nnx.state(loaded, nnx.Param))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), got, want)
  emb = nnx.state(loaded, nnx.Param)["embedding"][...]
  assert len(emb.sharding.device_set) == 8 and emb.addressable_shards[0].data.size == emb.size // 8
  if ema is not None:  # ema=False: the raw params
    _, raw, _, used = load_lm(tmp_path, mesh, ema=False)
    assert not used
    np.testing.assert_array_equal(np.asarray(nnx.state(raw, nnx.Param)["embedding"][...]),
                                  np.asarray(nnx.state(model, nnx.Param)["embedding"][...]))
