"""`kineto compile`: the real train step compiled ahead of time, on the 8 fake CPU devices and
for a real TPU slice with libtpu's compiler (no TPU needed, no arrays allocated)."""
import importlib.util
import json

import numpy as np
import pytest

import configs
from kineto import compile as kcompile
from kineto.cli import main
from train.flops import train_step_flops

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
# lm_tiny with every weight dimension a multiple of TPU's 128-lane tiles (head size 128), so the
# compiled argument bytes are the analytic ones, not padded tiles.
TPU_TINY = ["lm.embed=256", "lm.heads=2", "lm.kv_heads=2", "lm.mlp=512", "lm.vocab=512"]


def analytic_state_bytes(cfg) -> int:
  """float32 params + AdamW's two float32 moments."""
  return 3 * 4 * cfg.lm.param_count()


def run_compile(capsys, *argv) -> dict:
  assert main(["compile", *argv]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert "per device: arguments" in "\n".join(out[:-1])
  return json.loads(out[-1])  # the last line is one JSON object


def test_compile_lm_tiny_on_a_fake_8_device_cpu_mesh(capsys):
  r = run_compile(capsys, "--config", "lm_tiny", "--topology", "cpu:8")
  cfg = configs.load("lm_tiny")
  assert r["devices"] == 8 and r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  b = r["bytes_per_device"]
  per_device = analytic_state_bytes(cfg) / 8
  assert 0.95 * per_device < b["argument"] < 1.1 * per_device, (b, per_device)
  assert b["alias"] > 0.95 * per_device  # the donated state is updated in place
  assert b["total"] == b["argument"] + b["output"] + b["temp"] - b["alias"]
  assert r["hbm_bytes"] is None and r["fits"] is None  # host memory: no HBM to fit in
  flops = train_step_flops(cfg.lm, np.zeros((cfg.train.batch_size, cfg.train.seq_len), bool))
  assert r["flops_per_device"] == pytest.approx(flops / 8)
  assert r["collectives"].get("all-gather", 0) > 0  # fsdp gathers the layers' weights


@pytest.mark.parametrize("argv, message", [
    (["--topology", "v5p-7"], "unknown --topology 'v5p-7' (v5p-N counts cores); valid topologies: v4-8"),
    (["--topology", "tpu-8"], "v5p-128"),
    (["--topology", "cpu:8", "--set", "mesh.fsdp=3"], "--topology cpu:8 has 8 devices"),
    (["--topology", "cpu:64"], "this process has 8 CPU devices"),
    (["--topology", "v5e-8", "--set", "lm.attention_impl=cpu"], "add --set lm.attention_impl=blockwise"),
])
def test_bad_topologies_are_one_line_errors(capsys, argv, message):
  assert main(["compile", "--config", "lm_tiny", *argv]) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1, err


def test_tpu_topology_without_libtpu_says_how_to_install(capsys, monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(kcompile.importlib.util, "find_spec", lambda n: None if n == "libtpu" else real(n))
  assert main(["compile", "--config", "lm_tiny", "--topology", "v5e-8"]) == 2
  assert "pip install 'kineto[tpu]'" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install 'kineto[tpu]'); "
                                           "the TPU compiler is needed to compile for a TPU slice")
def test_aot_compile_lm_tiny_for_a_v5p_slice(capsys):
  r = run_compile(capsys, "--config", "lm_tiny", "--topology", "v5p-16", *sum((["--set", s] for s in TPU_TINY), []))
  cfg = configs.load("lm_tiny", TPU_TINY)
  assert r["libtpu_topology"] == "v5p:2x2x2" and r["devices"] == r["chips"] == 8
  assert r["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
  b = r["bytes_per_device"]
  per_device = analytic_state_bytes(cfg) / 8
  assert 0.95 * per_device < b["argument"] < 1.15 * per_device, (b, per_device)
  assert b["alias"] > 0.95 * per_device
  assert r["hbm_bytes"] == 95 * 2 ** 30 and r["fits"] and r["headroom"] > 0.99
  assert r["collectives"].get("all-gather", 0) > 0


def test_compile_the_kv_cached_decode_step_holds_weights_not_optimizer_state(capsys):
  r = run_compile(capsys, "--config", "lm_tiny", "--topology", "cpu:8", "--step", "generate", "--batch", "8")
  cfg = configs.load("lm_tiny")
  assert r["step"] == "generate" and r["arguments"] == "weights + KV cache"
  assert r["state_bytes_per_device_ideal"] == 4 * cfg.lm.param_count() // 8  # float32 weights only
  cache = 2 * cfg.lm.layers * 8 * cfg.lm.kv_heads * cfg.lm.max_len * cfg.lm.head_size * 4  # k, v
  assert r["bytes_per_device"]["argument"] < (4 * cfg.lm.param_count() + cache) / 8 * 1.3


def tree_bytes(tree) -> int:
  import jax
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_compile_the_tokenizer_train_step_on_a_fake_8_device_cpu_mesh(capsys):
  """vidtok_tiny's train step (tokenizer + GAN; LPIPS and R1 off to keep the compile short): the
  argument bytes per device are the fsdp-sharded state plus the layers too small to shard.
  (libtpu compiles the whole step for v5e-8 in ~6 min on 2 cores: bench/memory_table.py; the
  suite's TPU compile of it is the smaller one below.)"""
  import jax
  from flax import nnx

  from train import tokenizer_step
  r = run_compile(capsys, "--config", "vidtok_tiny", "--topology", "cpu:8", "--step", "tokenizer", "--size", "32",
                  "--set", "train.perceptual_weight=0", "--set", "train.r1_weight=0")
  assert r["step"] == "tokenizer" and r["devices"] == 8 and r["mesh"]["fsdp"] == 8
  assert r["shapes"] == "batch 8 clips of 5x32x32" and r["flops_source"] == "XLA cost analysis"
  cfg = configs.load("vidtok_tiny")
  state_bytes = tree_bytes(nnx.state(jax.eval_shape(lambda: tokenizer_step.build(cfg, 0))))
  assert r["state_bytes_per_device_ideal"] == state_bytes // 8
  b = r["bytes_per_device"]
  assert state_bytes // 8 < b["argument"] < state_bytes // 2, (b, state_bytes)
  assert b["alias"] >= state_bytes // 8  # the donated state is updated in place
  assert r["flops_per_device"] > 0


def tpu_padded_bytes(shape, itemsize: int) -> int:
  """An array's bytes in TPU's tiled layout: the last two dims padded to (8, 128) tiles."""
  dims = [1] * max(0, 2 - len(shape)) + list(shape)
  return int(np.prod(dims[:-2])) * -(-dims[-2] // 8) * 8 * -(-dims[-1] // 128) * 128 * itemsize


@pytest.mark.skipif(not HAS_LIBTPU, reason="libtpu is not installed (pip install 'kineto[tpu]'); "
                                           "the TPU compiler is needed to compile for a TPU slice")
def test_aot_compile_vidtok_tiny_for_a_v5e_slice(capsys):
  """vidtok_tiny's train step for v5e-8 by libtpu (GAN and LPIPS off, 16x16 clips: ~40 s; with
  them on, ~6 min, which is bench/memory_table.py's job). Its weights are too small for TPU's
  (8, 128) tiles: the state per chip lies between its ideal fsdp share and the tile-padded
  bytes of an unsharded copy, and is donated (aliased)."""
  import jax
  from flax import nnx

  from train import tokenizer_step
  overrides = ["train.perceptual_weight=0", "train.gan_weight=0", "train.frames=5"]
  r = run_compile(capsys, "--config", "vidtok_tiny", "--topology", "v5e-8", "--step", "tokenizer", "--size", "16",
                  *sum((["--set", o] for o in overrides), []))
  assert r["libtpu_topology"] == "v5e:2x4" and r["devices"] == r["chips"] == 8 and r["mesh"]["fsdp"] == 8
  assert r["shapes"] == "batch 8 clips of 5x16x16" and r["hbm_bytes"] == 16 * 2 ** 30 and r["fits"]
  leaves = jax.tree.leaves(nnx.state(jax.eval_shape(lambda: tokenizer_step.build(configs.load("vidtok_tiny",
                                                                                                overrides), 0))))
  ideal = sum(x.size * x.dtype.itemsize for x in leaves) // 8
  padded = sum(tpu_padded_bytes(x.shape, x.dtype.itemsize) for x in leaves)
  b = r["bytes_per_device"]
  assert r["state_bytes_per_device_ideal"] == ideal
  assert ideal < b["argument"] < padded, (b, ideal, padded)
  assert b["alias"] > 0.95 * b["argument"] and 0 < b["temp"] < 2 ** 30
  assert r["collectives"].get("all-reduce", 0) > 0  # the gradients' sum over the data-parallel rows


@pytest.mark.parametrize("argv, message", [
    (["--config", "vidtok_tiny", "--step", "train"], "vidtok_tiny is a TokenizerConfig (use --step tokenizer)"),
    (["--config", "lm_tiny", "--step", "audio"], "lm_tiny is a Config (use --step train or generate)"),
    (["--config", "vidtok_tiny", "--step", "tokenizer", "--size", "30"], "--size 30: clip height and width"),
])
def test_a_config_of_the_wrong_kind_for_the_step_is_a_one_line_error(capsys, argv, message):
  assert main(["compile", "--topology", "cpu:8", *argv]) == 2
  err = capsys.readouterr().err
  assert message in err and len(err.strip().splitlines()) == 1, err


def test_compile_the_audio_codec_train_step_data_parallel(capsys):
  r = run_compile(capsys, "--config", "audio_tiny", "--topology", "cpu:8", "--step", "audio",
                  "--set", "train.batch_size=8")
  assert r["step"] == "audio" and r["mesh"]["data"] * r["mesh"]["fsdp"] == 8
  # Replicated: every device holds the whole codec state, and the state is donated.
  assert r["bytes_per_device"]["argument"] >= r["state_bytes_per_device_ideal"]
  assert r["bytes_per_device"]["alias"] >= 0.95 * r["state_bytes_per_device_ideal"]
