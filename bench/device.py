"""Accelerator benchmark: every kineto throughput figure on one chip, in one run.

  python bench/device.py [--out device.json] [--deadline 500]   # on a GPU/TPU
  python bench/device.py --quick                                # CPU smoke test, tiny configs

Measures, each section on `jax.devices()[0]` and wrapped so one failure keeps the others:
  1. matmul peaks: a jitted chain of 8192^2 matmuls in bfloat16 (float32 accumulation) and in
     float32 at the default precision (TF32 on NVIDIA unless `jax_default_matmul_precision`
     says otherwise) and at "highest"; plus device memory bandwidth (a 4 GiB elementwise pass:
     bytes read + written / time, and a read-only reduction);
  2. `lm_bench` training steps in bfloat16 (64-token prefix, as bench/lm_step.py) at batch 4 and
     32, for each attention_impl: step time, tokens/s, analytic model FLOPs
     (train.flops.train_step_flops) and MFU against the measured bfloat16 peak;
  3. `lm_bench` KV-cached sampling in bfloat16 (text-to-video, 17x128x128 -> 1,280 video tokens)
     at batch 1 and 8, the time of one jitted `decode_step` and of a step inside a compiled
     loop at the start and end of the cache, against a memory floor: the bytes a step must
     read (weights as stored + the valid KV cache) / the measured copy bandwidth;
  4. the video tokenizer (vidtok_demo batch 16, vidtok_magvit2 batch 4, 17x128x128 clips):
     encode/decode frames/s in float32 and bfloat16 (the layers compute in the input's dtype),
     FLOP/s over the matching matmul peak, the FLOPs counted by XLA's CPU cost analysis of the
     same programs (on GPU the cost analysis leaves out cuDNN/cuBLAS calls: every conv and matmul);
  5. `lm_1b` (a pod config) on one chip: mesh (1, 1, 1), batch 8 (4, 2 when it does not fit),
     seq_len 2,048: step time, tokens/s, MFU and XLA's memory analysis.

Sections run in order of importance; once `--deadline` seconds have passed the rest are
skipped (recorded as such). The figures are written to `--out` after every section, so a
run cut short keeps what it measured. Prints readable lines; the last line is one JSON
object of all figures. Imports of the project are lazy (inside the sections).
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_BENCH))  # this checkout's packages first
sys.path.insert(0, _BENCH)
from common import time_fn as median_time  # noqa: E402

PREFIX = 64
T0 = time.perf_counter()
CHECKPOINT = [lambda: None]  # rewrites --out; set by main


# --- helpers -------------------------------------------------------------------------

def elapsed() -> float:
  return time.perf_counter() - T0


def log(*a):
  print(f"[{elapsed():6.1f}s]", *a, flush=True)


def cost_flops(compiled) -> float | None:
  """XLA's FLOP count of a compiled program. On GPU it leaves out the cuBLAS/cuDNN custom
  calls (every matmul and convolution), so use `cpu_flops` for anything that divides by it."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float(cost["flops"]) if cost and "flops" in cost else None


def cpu_flops(fn, *args) -> float | None:
  """FLOPs of `fn(*args)` from XLA's CPU cost analysis (compiled for the host, never run):
  the same program, with matmuls and convolutions counted."""
  cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
  spec = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=cpu)
  return cost_flops(jax.jit(fn).lower(*jax.tree.map(spec, args)).compile())


def memory_figures(compiled) -> dict:
  mem = compiled.memory_analysis()
  if mem is None:
    return {}
  out = {k: int(getattr(mem, k)) for k in ("argument_size_in_bytes", "output_size_in_bytes",
                                           "alias_size_in_bytes", "temp_size_in_bytes")
         if hasattr(mem, k)}
  out["peak_bytes"] = (out.get("argument_size_in_bytes", 0) + out.get("output_size_in_bytes", 0)
                       - out.get("alias_size_in_bytes", 0) + out.get("temp_size_in_bytes", 0))
  return out


def device_memory_limit(device) -> int | None:
  try:
    stats = device.memory_stats() or {}
    return stats.get("bytes_limit")
  except Exception:  # noqa: BLE001 - CPU devices have no stats
    return None


def free_memory():
  gc.collect()
  jax.clear_caches()


def failure(e: BaseException) -> dict:
  """A section that raised: its traceback on stderr, the error in the figures, memory freed
  for the next section."""
  traceback.print_exc()
  free_memory()
  return {"error": f"{type(e).__name__}: {e}"[:2000]}


def is_oom(e: BaseException) -> bool:
  s = str(e)
  return "RESOURCE_EXHAUSTED" in s or "out of memory" in s.lower() or "OOM" in s


# --- 1. matmul peaks and memory bandwidth ----------------------------------------------

def matmul_peak(n: int, dtype, precision=None, chain: int = 8, repeats: int = 10) -> float:
  dev = jax.devices()[0]
  a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype), dev)
  b = jax.device_put((jax.random.normal(jax.random.key(1), (n, n), jnp.float32) / n ** 0.5).astype(dtype), dev)

  @jax.jit
  def f(a, b):
    for _ in range(chain):
      a = jnp.matmul(a, b, precision=precision)
    return a

  seconds = median_time(lambda: f(a, b).block_until_ready(), warmup=3, repeats=repeats)
  return chain * 2 * n ** 3 / seconds


def bandwidth(nbytes: int, repeats: int = 10) -> dict:
  dev = jax.devices()[0]
  x = jax.device_put(jnp.ones((nbytes // 4,), jnp.float32), dev)
  scale = jax.jit(lambda x: x * 1.0001)
  total = jax.jit(lambda x: jnp.sum(x))
  t_copy = median_time(lambda: scale(x).block_until_ready(), warmup=2, repeats=repeats)
  t_read = median_time(lambda: total(x).block_until_ready(), warmup=2, repeats=repeats)
  del x
  return {"array_bytes": nbytes, "copy_seconds": t_copy, "read_seconds": t_read,
          "copy_bytes_per_second": 2 * nbytes / t_copy, "read_bytes_per_second": nbytes / t_read}


def section_peaks(args) -> dict:
  n = 256 if args.quick else 8192
  reps = 3 if args.quick else 10
  out = {"n": n, "chain": 8, "default_matmul_precision": str(jax.config.jax_default_matmul_precision)}
  out["bf16_flops_per_second"] = matmul_peak(n, jnp.bfloat16, repeats=reps)
  log(f"matmul {n}^2 bfloat16: {out['bf16_flops_per_second'] / 1e12:.1f} TFLOP/s")
  out["f32_default_flops_per_second"] = matmul_peak(n, jnp.float32, repeats=reps)
  log(f"matmul {n}^2 float32 (default precision): {out['f32_default_flops_per_second'] / 1e12:.1f} TFLOP/s")
  out["f32_highest_flops_per_second"] = matmul_peak(n, jnp.float32, precision="highest", chain=2,
                                                    repeats=3)
  log(f"matmul {n}^2 float32 (precision=highest): {out['f32_highest_flops_per_second'] / 1e12:.1f} TFLOP/s")
  bw = bandwidth((16 if args.quick else 4096) * 2 ** 20, repeats=3 if args.quick else 10)
  out.update({"bandwidth_" + k: v for k, v in bw.items()})
  log(f"memory bandwidth ({bw['array_bytes'] / 2**30:.2f} GiB array): copy {bw['copy_bytes_per_second'] / 1e12:.2f} "
      f"TB/s (read + write), read {bw['read_bytes_per_second'] / 1e12:.2f} TB/s")
  return out


# --- 2 and 5. training steps -------------------------------------------------------------

# lm_bench's CPU kernels (lm/kernels/) exist only for CPUs: on the device, XLA's own.
ACCELERATOR = ["lm.attention_impl=blockwise", "lm.matmul_impl=xla"]


def train_step(config: str, overrides: list[str], batch: int, repeats: int, peak: float | None,
               mem_limit: int | None = None) -> dict:
  """One compiled training step on one device with synthetic tokens (as bench/lm_step.py)."""
  from flax import nnx

  import configs
  import sharding
  from train.flops import train_step_flops
  from train.state import init_state, make_train_step

  cfg = configs.load(config, list(overrides) + [f"train.batch_size={batch}"])
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  ts = init_state(cfg, mesh)
  step = make_train_step(cfg, mesh, ts)
  b, t = cfg.train.batch_size, cfg.train.seq_len
  prefix = min(PREFIX, t // 2)
  rng = np.random.RandomState(0)
  tokens = jnp.asarray(rng.randint(0, cfg.lm.vocab, (b, t + 1)), jnp.int32)
  input_mask = jnp.zeros((b, t + 1), bool).at[:, :prefix].set(True)
  batch_ = {"tokens": tokens, "input_mask": input_mask, "loss_mask": ~input_mask}
  state = ts.state
  t0 = time.perf_counter()
  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    compiled = step.jitted.lower(state, batch_).compile()
  compile_s = time.perf_counter() - t0
  mem = memory_figures(compiled)
  out = {"config": config, "overrides": list(overrides), "batch": b, "seq_len": t, "prefix": prefix,
         "dtype": cfg.lm.dtype, "attention_impl": cfg.lm.attention_impl,
         "remat_policy": cfg.lm.remat_policy, "params": cfg.lm.param_count(),
         "compile_seconds": compile_s, "memory": mem,
         # On GPU XLA's count leaves out the cuBLAS matmuls; the MFU uses the analytic count.
         "xla_flops_per_step_device": cost_flops(compiled)}
  if mem_limit and mem.get("peak_bytes", 0) > mem_limit:
    raise MemoryError(f"RESOURCE_EXHAUSTED (predicted): compiled step needs {mem['peak_bytes'] / 2**30:.1f} GiB "
                      f"> {mem_limit / 2**30:.1f} GiB on the device")

  def one():
    nonlocal state
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
      state, metrics = compiled(state, batch_)
    jax.block_until_ready(metrics["loss"])

  seconds = median_time(one, warmup=2, repeats=repeats)
  flops = train_step_flops(cfg.lm, np.asarray(input_mask[:, :-1]))
  out.update(step_seconds=seconds, tokens_per_second=b * t / seconds, model_flops_per_step=flops,
             model_flops_per_second=flops / seconds,
             mfu=(flops / seconds / peak) if peak else None)
  log(f"{config} {' '.join(overrides)} batch {b}x{t}: step {seconds * 1e3:.1f} ms, "
      f"{out['tokens_per_second']:,.0f} tokens/s, MFU {out['mfu'] if out['mfu'] is None else round(out['mfu'], 3)}, "
      f"peak memory {mem.get('peak_bytes', 0) / 2**30:.2f} GiB, compile {compile_s:.1f} s")
  del state, ts, compiled
  free_memory()
  return out


def section_lm_bench(args, results) -> dict:
  peak = results.get("peaks", {}).get("bf16_flops_per_second")
  config = "lm_tiny" if args.quick else "lm_bench"
  batches = (2, 4) if args.quick else (4, 32)
  out = results.setdefault("lm_bench", {})
  for b in batches:
    for impl in ("blockwise", "dot_product_attention"):
      key = f"batch{b}_{impl}"
      if elapsed() > args.deadline:
        out[key] = {"skipped": "deadline"}
        continue
      try:
        out[key] = train_step(config, [*ACCELERATOR, "lm.dtype=bfloat16", f"lm.attention_impl={impl}"], b,
                              3 if args.quick else 5, peak)
      except Exception as e:  # noqa: BLE001
        out[key] = failure(e)
      CHECKPOINT[0]()
  return out


def section_lm_1b(args, results) -> dict:
  peak = results.get("peaks", {}).get("bf16_flops_per_second")
  config = "lm_tiny" if args.quick else "lm_1b"
  overrides = ["lm.dtype=bfloat16", "mesh.data=1", "mesh.fsdp=1", "mesh.tensor=1"]
  limit = device_memory_limit(jax.devices()[0])
  attempts = []
  for b in ((4, 2) if args.quick else (8, 4, 2)):
    if elapsed() > args.deadline:
      attempts.append({"batch": b, "skipped": "deadline"})
      break
    try:
      out = train_step(config, overrides, b, 2 if args.quick else 3, peak, mem_limit=limit)
      out["device_bytes_limit"] = limit
      out["failed_attempts"] = attempts
      return out
    except Exception as e:  # noqa: BLE001
      msg = f"{type(e).__name__}: {e}"[:2000]
      log(f"{config} batch {b} failed: {msg[:300]}")
      attempts.append({"batch": b, "error": msg})
      free_memory()
      if not is_oom(e):
        break
  return {"error": "no batch size ran", "failed_attempts": attempts}


# --- 3. decoding ---------------------------------------------------------------------------

def section_decode(args, results) -> dict:
  from flax import nnx

  import configs
  from lm import Transformer, sampling, tasks
  from lm.tasks import ClipSpec
  from lm.vocab import Vocabulary

  bw = results.get("peaks", {}).get("bandwidth_copy_bytes_per_second")
  config = "lm_tiny" if args.quick else "lm_bench"
  spec = (ClipSpec(frames=9, height=32, width=32, text_budget=8) if args.quick
          else ClipSpec(frames=17, height=128, width=128, text_budget=16))
  cfg = configs.load(config, [*ACCELERATOR, "lm.dtype=bfloat16"])
  vocab = Vocabulary(cfg.vocab)
  model = Transformer(cfg.lm, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  params = nnx.state(model, nnx.Param)
  param_bytes = sum(x.nbytes for x in jax.tree.leaves(params))
  lookup_bytes = 0 if cfg.lm.tie_embeddings else cfg.lm.vocab * cfg.lm.embed * 4  # one row read
  weight_bytes = param_bytes - lookup_bytes
  plan = sampling.layout_plan("t2v", vocab, spec)
  n_video = plan.slots[0].length
  length = sampling.prompt_length("t2v", vocab, spec)
  pad = vocab.special("pad")
  settings = sampling.Sampling(temperature=1.0, top_k=100)
  cache_len = length + plan.length - 1
  itemsize = jnp.dtype(model.dtype).itemsize
  g, k, L = cfg.lm.kv_heads, cfg.lm.head_size, cfg.lm.layers
  out = results.setdefault("decode", {})
  out.update({"config": config, "dtype": str(model.dtype), "prompt_tokens": length, "output_tokens": plan.length,
         "video_tokens": n_video, "cache_len": cache_len, "weight_bytes_as_stored": weight_bytes,
         "copy_bytes_per_second": bw})
  loop_steps = 8 if args.quick else 64
  # Per-layer weights sliced once, outside the step and the loop, as the sampler does.
  layers_graphdef, _ = nnx.split(nnx.eval_shape(lambda: model.layer_views()))
  layers = jax.jit(lambda st: nnx.state(nnx.merge(graphdef, st).layer_views()))(state)
  decode = lambda st, ls, tok, cache: nnx.merge(graphdef, st).decode_step(tok, cache, nnx.merge(layers_graphdef, ls))
  step = jax.jit(decode)

  def loop_body(st, tok, cache):
    # The weights ride in the carry: nnx modules must be built at the loop body's trace
    # level (closing over the outer ones fails nnx's trace-level check).
    def body(_, carry):
      st, ls, tok, cache = carry
      logits, cache = decode(st, ls, tok, cache)
      return st, ls, jnp.argmax(logits, -1).astype(jnp.int32), cache
    st_ls = (st, nnx.state(nnx.merge(graphdef, st).layer_views()))
    return jax.lax.fori_loop(0, loop_steps, body, (*st_ls, tok, cache))[2:]
  loop = jax.jit(loop_body, donate_argnums=2)
  prefill = jax.jit(lambda st, t, v: nnx.merge(graphdef, st).prefill(t, v, v, cache_len=cache_len)[1])

  for b in (1, 8):
    key = f"batch{b}"
    if elapsed() > args.deadline:
      out[key] = {"skipped": "deadline"}
      continue
    try:
      rng = np.random.default_rng(0)
      examples = [{"text": rng.integers(0, cfg.vocab.text, spec.text_budget)} for _ in range(b)]
      prompts, valid = sampling.pad_prompts([tasks.prompt("t2v", ex, vocab, spec=spec) for ex in examples],
                                            pad, length)
      stop = np.full((b, plan.length), -1, np.int32)
      stop[:, 0] = vocab.special("eos")
      run = lambda seed, forced=None: jax.block_until_ready(sampling.sample(
          model, vocab, prompts, valid, plan, rng=seed, sampling=settings, forced_bn=forced))
      t0 = time.perf_counter()
      run(0, stop)
      compile_s = time.perf_counter() - t0
      t0 = time.perf_counter()
      run(1)
      sample_s = time.perf_counter() - t0
      r = {"batch": b, "sample_seconds": sample_s, "compile_seconds": compile_s,
           "tokens_per_second_per_sequence": plan.length / sample_s,
           "tokens_per_second_total": b * plan.length / sample_s}
      log(f"decode {config} bf16 batch {b}: {plan.length} tokens in {sample_s:.2f} s = "
          f"{r['tokens_per_second_per_sequence']:.0f} tokens/s per sequence, {r['tokens_per_second_total']:.0f} total")
      for where, extra in (("start", 0), ("end", n_video - loop_steps - 16)):
        seq = np.concatenate([prompts, np.full((b, extra), vocab.video_offset, np.int32)], axis=1)
        seq_valid = np.concatenate([valid, np.ones((b, extra), bool)], axis=1)
        tok = jnp.full((b,), vocab.video_offset, jnp.int32)
        cache = prefill(state, seq, seq_valid)
        single = median_time(lambda: jax.block_until_ready(step(state, layers, tok, cache)[0]), warmup=2,
                              repeats=20)
        loop(state, tok, prefill(state, seq, seq_valid))[0].block_until_ready()  # compile
        caches = [prefill(state, seq, seq_valid) for _ in range(3)]
        jax.block_until_ready(caches)
        times = []
        for c in caches:
          t0 = time.perf_counter()
          loop(state, tok, c)[0].block_until_ready()
          times.append(time.perf_counter() - t0)
        in_loop = statistics.median(times) / loop_steps
        filled = seq.shape[1] + loop_steps // 2  # mean valid slots over the timed loop
        kv_valid = 2 * L * b * g * filled * k * itemsize
        kv_whole = 2 * L * b * g * cache_len * k * itemsize
        floor = (weight_bytes + kv_valid) / bw if bw else None
        r[where] = {"cache_index": seq.shape[1], "single_call_seconds": single, "in_loop_step_seconds": in_loop,
                    "kv_valid_bytes": kv_valid, "kv_whole_cache_bytes": kv_whole,
                    "floor_seconds": floor,
                    "floor_whole_cache_seconds": (weight_bytes + kv_whole) / bw if bw else None,
                    "in_loop_over_floor": in_loop / floor if floor else None,
                    "single_call_over_floor": single / floor if floor else None}
        del cache, caches
        log(f"  decode_step at {where} (index {seq.shape[1]}): one call {single * 1e3:.3f} ms, in a loop "
            f"{in_loop * 1e3:.3f} ms/step; floor {floor * 1e3 if floor else float('nan'):.4f} ms "
            f"-> {r[where]['in_loop_over_floor'] or float('nan'):.1f}x the floor")
      out[key] = r
    except Exception as e:  # noqa: BLE001
      out[key] = failure(e)
    CHECKPOINT[0]()
  del model, state, params
  free_memory()
  return out


# --- 4. video tokenizer -----------------------------------------------------------------

def tokenizer(name: str, batch: int, dtype, frames: int, size: int, repeats: int) -> dict:
  from flax import nnx

  import configs
  from vidtok.model import Stream, VideoTokenizer, codes_to_latent

  cfg = configs.load(name).vidtok
  graphdef, params = nnx.split(VideoTokenizer(cfg, rngs=nnx.Rngs(0)))
  video = jax.random.uniform(jax.random.key(0), (batch, frames, size, size, 3), minval=-1,
                             maxval=1).astype(dtype)
  t0 = time.perf_counter()
  encode_fn = lambda p, v: nnx.merge(graphdef, p).encode(v)
  decode_fn = lambda p, c: nnx.merge(graphdef, p).decoder(codes_to_latent(c, cfg, dtype=dtype),
                                                         Stream())
  encode = jax.jit(encode_fn).lower(params, video).compile()
  codes = encode(params, video)
  decode = jax.jit(decode_fn).lower(params, codes).compile()
  compile_s = time.perf_counter() - t0
  out_dtype = str(decode(params, codes).dtype)
  t0 = time.perf_counter()
  one = lambda x: jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype)  # counted per clip, x batch
  f_enc = batch * cpu_flops(encode_fn, params, one(video))
  f_dec = batch * cpu_flops(decode_fn, params, one(codes))
  cpu_count_s = time.perf_counter() - t0
  t_enc = median_time(lambda: encode(params, video).block_until_ready(), warmup=1, repeats=repeats)
  t_dec = median_time(lambda: decode(params, codes).block_until_ready(), warmup=1, repeats=repeats)
  n = batch * frames
  out = {"batch": batch, "clip": f"{frames}x{size}x{size}", "dtype": jnp.dtype(dtype).name,
         "decoded_dtype": out_dtype, "compile_seconds": compile_s,
         "flops_source": "XLA CPU cost analysis of the same program", "cpu_count_seconds": cpu_count_s,
         "device_cost_analysis_flops": [cost_flops(encode), cost_flops(decode)],
         "encode_seconds": t_enc, "decode_seconds": t_dec,
         "encode_fps": n / t_enc, "decode_fps": n / t_dec,
         "encode_gflop_per_clip": f_enc / batch / 1e9 if f_enc else None,
         "decode_gflop_per_clip": f_dec / batch / 1e9 if f_dec else None,
         "encode_flops_per_second": f_enc / t_enc if f_enc else None,
         "decode_flops_per_second": f_dec / t_dec if f_dec else None,
         "tokens_per_clip": int(codes[0].size)}
  del params, video, codes, encode, decode
  free_memory()
  return out


def section_vidtok(args, results) -> dict:
  peaks = results.get("peaks", {})
  if args.quick:
    runs, frames, size = (("vidtok_tiny", 2),), 5, 32
  else:
    runs, frames, size = (("vidtok_demo", 16), ("vidtok_magvit2", 4)), 17, 128
  out = results.setdefault("vidtok", {})
  for dtype, peak_key in ((jnp.float32, "f32_default_flops_per_second"), (jnp.bfloat16, "bf16_flops_per_second")):
    for name, batch in runs:
      key = f"{name}_{jnp.dtype(dtype).name}"
      if elapsed() > args.deadline:
        out[key] = {"skipped": "deadline"}
        continue
      try:
        r = tokenizer(name, batch, dtype, frames, size, 3 if args.quick else 5)
        peak = peaks.get(peak_key)
        r["peak_used"] = peak_key
        if peak:
          r["encode_fraction_of_peak"] = r["encode_flops_per_second"] / peak
          r["decode_fraction_of_peak"] = r["decode_flops_per_second"] / peak
          r["bf16_fraction_of_peak_encode"] = r["encode_flops_per_second"] / peaks["bf16_flops_per_second"]
        log(f"{key} batch {batch}: encode {r['encode_fps']:,.0f} frames/s, decode {r['decode_fps']:,.0f} "
            f"frames/s ({r['encode_gflop_per_clip']:.1f}+{r['decode_gflop_per_clip']:.1f} GFLOP/clip; "
            f"{r.get('encode_fraction_of_peak', float('nan')):.3f} / "
            f"{r.get('decode_fraction_of_peak', float('nan')):.3f} "
            f"of the {peak_key.split('_flops')[0]} peak)")
        out[key] = r
      except Exception as e:  # noqa: BLE001
        out[key] = failure(e)
      CHECKPOINT[0]()
  return out


# --- driver ---------------------------------------------------------------------------------

def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", help="also write the JSON figures here (rewritten after every section)")
  parser.add_argument("--quick", action="store_true", help="tiny configs and shapes: a CPU smoke test")
  parser.add_argument("--deadline", type=float, default=float("inf"),
                      help="seconds after start past which remaining measurements are skipped")
  parser.add_argument("--sections", default="peaks,lm_bench,decode,lm_1b,vidtok")
  args = parser.parse_args(argv)
  dev = jax.devices()[0]
  results = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
             "jax": jax.__version__, "backend": jax.default_backend(), "device_kind": dev.device_kind,
             "device_count": jax.device_count(), "quick": args.quick, "argv": sys.argv[1:],
             "device_bytes_limit": device_memory_limit(dev)}
  try:
    import flax
    import jaxlib
    results.update(jaxlib=jaxlib.__version__, flax=flax.__version__)
  except Exception:  # noqa: BLE001
    pass
  log(f"jax {jax.__version__} on {jax.default_backend()}: {dev.device_kind} ({jax.device_count()} devices), "
      f"memory limit {results['device_bytes_limit']}")
  sections = {"peaks": lambda: section_peaks(args), "lm_bench": lambda: section_lm_bench(args, results),
              "decode": lambda: section_decode(args, results), "lm_1b": lambda: section_lm_1b(args, results),
              "vidtok": lambda: section_vidtok(args, results)}

  def write():
    results["elapsed_seconds"] = round(elapsed(), 1)
    if args.out:
      with open(args.out, "w") as f:
        json.dump(results, f, sort_keys=True, indent=1, default=str)
  CHECKPOINT[0] = write

  with jax.default_device(dev):
    for name in args.sections.split(","):
      if elapsed() > args.deadline:
        results[name] = {"skipped": "deadline"}
        continue
      log(f"--- {name}")
      try:
        results[name] = sections[name]()
      except Exception as e:  # noqa: BLE001
        results[name] = failure(e)
      write()
  write()
  print(json.dumps(results, sort_keys=True, default=str))


if __name__ == "__main__":
  main()
