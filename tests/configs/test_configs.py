"""Configs: every shipped config builds; --set overrides are typed; bad values fail early."""
import pytest

import configs
import sharding
from configs import ConfigError


@pytest.mark.parametrize("name", configs.available())
def test_every_config_builds_and_documents_its_command(name):
  cfg = configs.load(name)
  assert cfg.name == name
  module_doc = (configs._HERE / f"{name}.py").read_text().split('"""')[1]
  assert "kineto" in module_doc or "python" in module_doc, "docstring must hold the command"


def test_required_configs_exist():
  assert {"lm_tiny", "lm_bench", "lm_300m", "lm_1b", "lm_8b"} <= set(configs.available())


def test_videopoet_vocabulary():
  for name in ("lm_300m", "lm_1b", "lm_8b"):
    assert configs.load(name).lm.vocab == 256 + 32_000 + 262_144 + 4_096


def test_bench_shape():
  lm = configs.load("lm_bench").lm
  assert (lm.embed, lm.layers, lm.heads, lm.max_len, lm.vocab) == (512, 8, 8, 1280, 8192)


def test_overrides_are_typed():
  cfg = configs.load("lm_tiny", ["lm.layers=3", "train.learning_rate=0.5", "lm.qk_norm=false",
                                 "mesh.fsdp=2", "lm.dtype=bfloat16"])
  assert (cfg.lm.layers, cfg.train.learning_rate, cfg.lm.qk_norm, cfg.mesh.fsdp, cfg.lm.dtype) == (
      3, 0.5, False, 2, "bfloat16")
  tok = configs.load("vidtok_tiny", ["vidtok.quantizer=fsq", "vidtok.fsq_levels=4,4,4,4",
                                     "vidtok.multipliers=(1, 2, 2, 4)"])
  assert tok.vidtok.fsq_levels == (4, 4, 4, 4) and tok.vidtok.multipliers == (1, 2, 2, 4)
  with pytest.raises(ConfigError, match="expected int"):
    configs.load("vidtok_tiny", ["vidtok.multipliers=1,two"])


@pytest.mark.parametrize("override, message", [
    ("lm.layerz=3", "valid fields are"),
    ("lm.layers=three", "expected int"),
    ("lm.qk_norm=maybe", "expected a bool"),
    ("lm.heads=5", "does not divide lm.embed"),
    ("lm.kv_heads=3", "does not divide lm.heads"),
    ("lm.dtype=float8", "is not one of"),
    ("lm.remat_policy=fast", "is not one of"),
    ("lm.attention_impl=flash", "is not one of"),
    ("mesh.fsdp=0", "positive size or -1"),
    ("lm", "key.path=value"),
    ("lm=3", "names a section"),
    ("nope.x=1", "valid fields are"),
    ("train.seq_len=4096", "exceeds lm.max_len"),
    ("train.learning_rate=nan", "expected a finite number"),
    ("lm.head_dim=15", "must be even"),
    ("lm.dtype=float16", "is not one of"),
])
def test_bad_overrides_raise_clear_errors(override, message):
  with pytest.raises(ConfigError, match=message):
    configs.load("lm_tiny", [override])


def test_overrides_apply_together_in_any_order():
  for order in (["lm.heads=4", "lm.kv_heads=4"], ["lm.kv_heads=4", "lm.heads=4"]):
    lm = configs.load("lm_bench", order).lm
    assert (lm.heads, lm.kv_heads) == (4, 4)
  assert configs.load("lm_tiny", ["train.seq_len=256", "lm.max_len=256"]).train.seq_len == 256


def test_unknown_config_name():
  with pytest.raises(ConfigError, match="lm_tiny"):
    configs.load("lm_tinny")


@pytest.mark.parametrize("shape, message", [
    ((2, 2, 4), "needs 16 devices but 8"),
    ((3, -1, 1), "do not divide"),
])
def test_mesh_not_matching_devices(shape, message):
  with pytest.raises(sharding.MeshError, match=message):
    sharding.make_mesh(shape)


def test_mesh_minus_one_takes_the_rest():
  assert dict(sharding.make_mesh((2, -1, 2)).shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_model_not_divisible_by_mesh_fails_before_compile():
  from train.state import init_state
  cfg = configs.load("lm_tiny", ["lm.kv_heads=1", "mesh.tensor=2"])
  with pytest.raises(sharding.MeshError, match="kv_heads=1 is not divisible"):
    init_state(cfg, sharding.make_mesh(cfg.mesh.shape))
