"""`kineto compile`: a config's real jitted step, compiled ahead of time for a named slice.

  kineto compile --config configs/lm_8b.py --topology v5p-128 [--step train|generate] [--set ...]
  kineto compile --config configs/vidtok_magvit2.py --topology v5p-128 --step tokenizer [--size 128]
  kineto compile --config configs/audio_soundstream.py --topology v5e-8 --step audio

No array is allocated: the train state is abstract (shapes and shardings, `train/state.py`
`abstract_state`), the batch a `ShapeDtypeStruct`, and `jit(...).lower(...).compile()` runs
the target's own compiler. For TPU slices that is libtpu's compiler on this (CPU) host,
through `jax.experimental.topologies` (`pip install 'kineto[tpu]'`); `cpu:N` compiles for N
fake CPU devices. The figures are per chip (per device):

  memory     arguments (params + optimizer state), temporaries, outputs, aliased (donated
             outputs reusing argument buffers), total = arguments + outputs + temp - aliased
  hbm        the chip's HBM (table below), the headroom left and whether it fits
  flops      analytic model FLOPs per chip per step for the LM (train/flops.py, causal rows;
             `cost_analysis()` counts a scanned layer once, so it is not used there); XLA's count
             for the tokenizer and audio codec steps, which scan nothing
  collectives  how many of each collective op the compiled HLO holds

Slice names follow Cloud TPU: `v4-N` and `v5p-N` count TensorCores (2 per chip, so v5p-128
is 64 chips, a 4x4x4 torus), `v5e-N` and `v6e-N` count chips (v5e-256 is 16x16). The
libtpu topology strings are in TORUS_3D / TORUS_2D; libtpu presents each v5p chip as one
device (megacore) and each v4 TensorCore as its own device (v4-16: 16 devices of 16 GiB).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import time

from configs.schema import ConfigError

# libtpu takes /tmp/libtpu_lockfile so that two processes never drive one TPU; any JAX process
# with libtpu installed holds it (a `kineto demo` on a CPU host too). Compiling for a topology
# never touches a chip, so it must not be refused by that lock.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

GIB = 2 ** 30
# HBM per chip (GiB) and how slice names count: cores (2 per chip) or chips.
CHIPS = {"v4": (32, "cores"), "v5p": (95, "cores"), "v5e": (16, "chips"), "v6e": (32, "chips")}
TORUS_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8",
            256: "4x8x8", 512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
# No 1x1: libtpu's default host bounds (2x2 chips per host) do not divide it.
TORUS_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
STEPS = ("train", "generate", "tokenizer", "audio")  # train/generate: an LM config
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
TPU_INSTALL = "pip install 'kineto[tpu]'"


def valid_topologies() -> list[str]:
  names = []
  for gen, (_, counts) in CHIPS.items():
    sizes = TORUS_3D if gen in ("v4", "v5p") else TORUS_2D
    names += [f"{gen}-{chips * 2 if counts == 'cores' else chips}" for chips in sizes]
  return names + ["cpu:N"]


@dataclasses.dataclass
class Topology:
  name: str             # as given: v5p-128, cpu:8
  platform: str         # tpu or cpu
  devices: list         # the devices a mesh is built from
  chips: int
  hbm_bytes: int | None  # per device (None for CPU: host memory)
  topology: str = ""    # the libtpu topology string, e.g. v5p:4x4x4


def topology(name: str) -> Topology:
  """A named slice's devices (see the module docstring); ConfigError naming the valid ones."""
  import jax
  hint = f"valid topologies: {', '.join(valid_topologies())}"
  if name.startswith("cpu:"):
    try:
      n = int(name[4:])
    except ValueError:
      raise ConfigError(f"--topology {name!r}: cpu:N needs a device count; {hint}.") from None
    devices = jax.devices("cpu")
    if not 1 <= n <= len(devices):
      raise ConfigError(f"--topology {name!r}: this process has {len(devices)} CPU devices "
                        f"(kineto compile sets up N before JAX starts); {hint}.")
    return Topology(name, "cpu", devices[:n], n, None)
  match = re.fullmatch(r"(v4|v5p|v5e|v6e)-(\d+)", name)
  if not match:
    raise ConfigError(f"unknown --topology {name!r}; {hint}.")
  gen, n = match.group(1), int(match.group(2))
  hbm_gib, counts = CHIPS[gen]
  chips = n // 2 if counts == "cores" else n
  shape = (TORUS_3D if gen in ("v4", "v5p") else TORUS_2D).get(chips)
  if shape is None or (counts == "cores" and n % 2):
    raise ConfigError(f"unknown --topology {name!r} ({gen}-N counts {counts}); {hint}.")
  if importlib.util.find_spec("libtpu") is None:
    raise ConfigError(f"--topology {name} compiles with libtpu's compiler, which is not installed; "
                      f"{TPU_INSTALL} (or pip install 'jax[tpu]'), or use --topology cpu:N.")
  from jax.experimental import topologies
  desc = topologies.get_topology_desc(topology_name=f"{gen}:{shape}", platform="tpu")
  devices = list(desc.devices)
  return Topology(name, "tpu", devices, chips, hbm_gib * GIB * chips // len(devices), f"{gen}:{shape}")


def collective_counts(hlo_text: str) -> dict[str, int]:
  """How many of each collective op (async -start halves counted once) the HLO text holds."""
  counts = {}
  for op in COLLECTIVES:
    n = len(re.findall(rf"\s{op}(?:-start)?\(", hlo_text))
    if n:
      counts[op] = n
  return counts


_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4, "u32": 4,
             "f32": 4, "s64": 8, "u64": 8, "f64": 8}
_HLO_VALUE = re.compile(r"^\s*(?:ROOT )?%?[\w.\-]+ = (\w+)\[([\d,]*)\]\S* ([\w\-]+)\((.*)$", re.M)


def largest_arrays(hlo_text: str, n: int = 8) -> list[dict]:
  """The `n` biggest array values of the compiled (per-device) HLO, one per shape and op: what
  the temp memory is made of. Each: bytes, dtype[shape], the op and its source (op_name)."""
  seen = {}
  for dtype, dims, op, rest in _HLO_VALUE.findall(hlo_text):
    if dtype not in _ITEMSIZE or op in ("parameter", "get-tuple-element", "bitcast", "tuple"):
      continue
    size = _ITEMSIZE[dtype]
    for d in filter(None, dims.split(",")):
      size *= int(d)
    source = re.search(r'op_name="([^"]*)"', rest)
    where = "/".join(source.group(1).split("/")[-2:]) if source else ""
    key = (dtype, dims, op)
    if key not in seen or not seen[key]["source"]:
      seen[key] = {"bytes": size, "array": f"{dtype}[{dims}]", "op": op, "source": where}
  return sorted(seen.values(), key=lambda a: -a["bytes"])[:n]


def _mesh(cfg, topo: Topology):
  import sharding
  try:
    return sharding.make_mesh(cfg.mesh.shape, topo.devices)
  except sharding.MeshError as e:
    raise ConfigError(f"{e} (--topology {topo.name} has {len(topo.devices)} devices; set mesh.data, "
                      f"mesh.fsdp, mesh.tensor to sizes whose product is {len(topo.devices)}, one "
                      "may be -1)") from None


def _lower_train(cfg, mesh, length: int):
  import jax
  import numpy as np
  from flax import nnx

  from train.flops import train_step_flops
  from train.state import abstract_batch, abstract_state, batch_shardings, check_fits_mesh, make_train_step
  check_fits_mesh(cfg, mesh)
  ts = abstract_state(cfg, mesh, seed=cfg.train.seed)
  step = make_train_step(cfg, mesh, ts)
  shardings = batch_shardings(cfg, mesh)
  batch = abstract_batch(cfg, shardings, length)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    lowered = step.jitted.lower(ts.state, batch)
  flops = train_step_flops(cfg.lm, np.zeros((cfg.train.batch_size, length - 1), bool))
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(ts.state))
  return lowered, flops, state_bytes, f"batch {cfg.train.batch_size} x {length} tokens", \
      "params + optimizer state"


def _lower_generate(cfg, mesh, length: int, batch: int):
  """One KV-cached decode step of `batch` rows with a cache of `length` slots (the sampler's
  inner loop, lm/model.py decode_step), the model's weights only (no optimizer state)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  import sharding
  from lm import Transformer
  from train.state import abstract_of, check_fits_mesh
  check_fits_mesh(cfg, mesh, batch_size=batch)
  ts = abstract_of(lambda: Transformer(cfg.lm, rngs=nnx.Rngs(0)), mesh, cfg.mesh.rules)
  row = sharding.batch_sharding(mesh, 1, cfg.mesh.rules)

  def prefill(state, tokens, input_mask):
    return nnx.merge(ts.graphdef, state).prefill(tokens, input_mask, cache_len=length)[1]

  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    prompt = jax.ShapeDtypeStruct((batch, 8), jnp.int32)
    cache = jax.eval_shape(prefill, ts.state, prompt, jax.ShapeDtypeStruct((batch, 8), bool))
    step = jax.jit(lambda state, tok, c: nnx.merge(ts.graphdef, state).decode_step(tok, c),
                   in_shardings=(ts.shardings, row, None), donate_argnums=2)
    lowered = step.lower(ts.state, jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=row), cache)
  matmul = cfg.lm.param_count() - cfg.lm.vocab * cfg.lm.embed * (not cfg.lm.tie_embeddings)
  flops = 2.0 * batch * (matmul + 2 * cfg.lm.layers * cfg.lm.heads * cfg.lm.head_size * length)
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(ts.state))
  return lowered, flops, state_bytes, f"decode step, batch {batch}, KV cache of {length}", \
      "weights + KV cache"


def _lower_tokenizer(cfg, mesh, size: int):
  """The video tokenizer's train step (tokenizer + discriminator, train/tokenizer_step.py) on
  clips of train.frames x size x size at the config's batch."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  import sharding
  from train import tokenizer_step
  from vidtok import metrics
  try:
    tokenizer_step.check_fits_mesh(cfg, mesh)
  except sharding.MeshError as e:
    raise ConfigError(str(e)) from None
  ts = tokenizer_step.abstract_state(cfg, mesh)
  step = tokenizer_step.make_step(cfg, mesh, ts)
  tc = cfg.train
  if size < 1 or size % cfg.vidtok.space_factor:
    raise ConfigError(f"--size {size}: clip height and width must be a positive multiple of "
                      f"{cfg.vidtok.space_factor} (the tokenizer's spatial compression).")
  clip = (tc.batch_size, tc.frames, size, size, 3)
  video = jax.ShapeDtypeStruct(clip, jnp.uint8, sharding=tokenizer_step.video_sharding(cfg, mesh))
  lpips_params = metrics.lpips_params() if tc.perceptual_weight else None
  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    lowered = step.jitted.lower(ts.state, video, jax.ShapeDtypeStruct((), jnp.int32), lpips_params)
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(ts.state))
  return lowered, None, state_bytes, f"batch {tc.batch_size} clips of {tc.frames}x{size}x{size}", \
      "tokenizer + discriminator + optimizer states"


def _lower_audio(cfg, mesh):
  """The audio codec's train step (train/audio_step.py) as `kineto audio train` runs it: the
  state replicated, the batch of crops split over the data-parallel devices."""
  import jax
  import jax.numpy as jnp

  import sharding
  from train.audio_step import init_state, make_train_step
  from train.audio_trainer import _optimizer_config
  tc, cc = cfg.train, cfg.codec
  ways = mesh.shape["data"] * mesh.shape["fsdp"]
  if tc.batch_size % ways:
    raise ConfigError(f"train.batch_size={tc.batch_size} is not divisible by the {ways} data-parallel "
                      f"devices of mesh {dict(mesh.shape)}; change one of them.")
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  optim = _optimizer_config(tc)
  state = jax.eval_shape(lambda: init_state(cc, optim, tc.seed))
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated), state)
  samples = int(tc.crop_seconds * cc.sample_rate) // cc.hop * cc.hop
  wave = jax.ShapeDtypeStruct((tc.batch_size, samples), jnp.float32,
                              sharding=sharding.batch_sharding(mesh, 2, cfg.mesh.rules))
  with jax.set_mesh(mesh):
    lowered = make_train_step(cc, optim).lower(state, wave)
  # Replicated: every device holds the whole state (the report divides by the device count).
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state)) * len(mesh.devices.flat)
  return lowered, None, state_bytes, f"batch {tc.batch_size} crops of {samples} samples", \
      "codec + discriminator + optimizer states (replicated)"


def _check_kind(cfg, step: str) -> None:
  """The config must be of the kind the step trains: LM, tokenizer or audio codec."""
  kind = "codec" if step == "audio" else "vidtok" if step == "tokenizer" else "lm"
  if not hasattr(cfg, kind):
    want = {"codec": "an audio codec config (configs/audio_*.py)", "vidtok": "a tokenizer config (configs/vidtok_*.py)",
            "lm": "an LM config (configs/lm_*.py)"}[kind]
    have = "codec" if hasattr(cfg, "codec") else "vidtok" if hasattr(cfg, "vidtok") else "lm"
    hint = {"codec": "--step audio", "vidtok": "--step tokenizer", "lm": "--step train or generate"}[have]
    raise ConfigError(f"--step {step} compiles {want}; {cfg.name} is a {type(cfg).__name__} (use {hint}).")


def compile_step(cfg, topo_name: str, step: str = "train", *, length: int | None = None,
                 batch: int = 8, size: int = 128) -> dict:
  """Compiles `step` of `cfg` for `topo_name` and returns the report (see module docstring).

  length: tokens per row (train; default train.seq_len + 1, the longest batch) or KV cache
  slots (generate; default lm.max_len); batch: rows decoded at once (generate); size: the
  clips' height and width (tokenizer)."""
  if step not in STEPS:
    raise ConfigError(f"--step {step!r}: choose one of {list(STEPS)}.")
  _check_kind(cfg, step)
  topo = topology(topo_name)
  if topo.topology and getattr(getattr(cfg, "lm", None), "attention_impl", "") == "cpu":
    raise ConfigError(f"lm.attention_impl='cpu' is a CPU-only kernel and cannot compile for {topo.name}: "
                      "add --set lm.attention_impl=blockwise.")
  mesh = _mesh(cfg, topo)
  n = len(topo.devices)
  t0 = time.perf_counter()
  if step == "train":
    lowered, flops, state_bytes, what, args = _lower_train(cfg, mesh, length or cfg.train.seq_len + 1)
  elif step == "generate":
    lowered, flops, state_bytes, what, args = _lower_generate(cfg, mesh, length or cfg.lm.max_len, batch)
  elif step == "tokenizer":
    lowered, flops, state_bytes, what, args = _lower_tokenizer(cfg, mesh, size)
  else:
    lowered, flops, state_bytes, what, args = _lower_audio(cfg, mesh)
  compiled = lowered.compile()
  seconds = time.perf_counter() - t0
  flops_source = "analytic"
  if flops is None:  # no scanned layers, so XLA's count is right; it is per device (partitioned HLO)
    flops, flops_source = float(_cost(compiled).get("flops", 0.0)) * n, "XLA cost analysis"
  mem = compiled.memory_analysis()
  hlo = compiled.as_text()
  figures = {k: int(getattr(mem, f"{k}_size_in_bytes")) for k in ("argument", "output", "temp", "alias")}
  total = figures["argument"] + figures["output"] + figures["temp"] - figures["alias"]
  report = {
      "config": cfg.name, "step": step, "topology": topo.name, "libtpu_topology": topo.topology or None,
      "devices": n, "chips": topo.chips, "mesh": dict(mesh.shape), "shapes": what, "arguments": args,
      "bytes_per_device": figures | {"total": total},
      "state_bytes_per_device_ideal": state_bytes // n,  # params (+ optimizer) evenly sharded
      "hbm_bytes": topo.hbm_bytes,
      "headroom": None if topo.hbm_bytes is None else 1 - total / topo.hbm_bytes,
      "fits": None if topo.hbm_bytes is None else total <= topo.hbm_bytes,
      "compile_seconds": round(seconds, 2),
      "flops_per_device": flops / n, "flops_source": flops_source,
      "collectives": collective_counts(hlo),
      "largest_arrays": largest_arrays(hlo),
  }
  return report


def _cost(compiled) -> dict:
  cost = compiled.cost_analysis()
  return (cost[0] if isinstance(cost, list) else cost) or {}


def describe(r: dict) -> str:
  """The report as lines for a terminal (the JSON follows them)."""
  b = r["bytes_per_device"]
  gib = lambda x: f"{x / GIB:.2f} GiB" if x >= GIB else f"{x / 2**20:.2f} MiB"
  lines = [f"{r['config']} {r['step']} step on {r['topology']} ({r['devices']} devices, mesh {r['mesh']}; "
           f"{r['shapes']}): compiled in {r['compile_seconds']:.1f} s",
           f"  per device: arguments {gib(b['argument'])} ({r['arguments']}; state ideally "
           f"{gib(r['state_bytes_per_device_ideal'])}), temp {gib(b['temp'])}, output {gib(b['output'])}, "
           f"aliased {gib(b['alias'])}, total {gib(b['total'])}"]
  if r["hbm_bytes"]:
    lines.append(f"  HBM {gib(r['hbm_bytes'])} per device: headroom {r['headroom']:.1%}, "
                 f"{'fits' if r['fits'] else 'DOES NOT FIT'}")
  lines.append(f"  model FLOPs per device per step ({r['flops_source']}): {r['flops_per_device']:.3e}")
  lines.append(f"  collectives: {r['collectives'] or 'none'}")
  lines.append("  largest arrays per device (the compiled HLO's values, not their lifetimes):")
  lines += [f"    {gib(a['bytes']):>11}  {a['array']}  {a['op']}  {a['source']}" for a in r["largest_arrays"]]
  return "\n".join(lines)


def run(config: str, topology_name: str, step: str = "train", overrides=(), **kwargs) -> dict:
  import configs
  cfg = configs.load(config, overrides)
  report = compile_step(cfg, topology_name, step, **kwargs)
  print(describe(report))
  print(json.dumps(report))
  return report
