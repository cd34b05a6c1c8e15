"""Benchmark: sampling a 1,280-token video, KV-cached compiled loop vs a full pass per token.

  python bench/sampling.py                       # lm_bench (d=512, 8 layers), one sample
  python bench/sampling.py --config lm_tiny --uncached-tokens 1280   # quick, whole baseline

Measures in one run on this machine, for text-to-video with 17x128x128 clips (5x16x16 =
1,280 video tokens, plus the closing marker and <eos>):
  * cached: `lm.sampling.sample` (prefill + one `lax.while_loop` of `decode_step`), wall time
    of the whole sequence after a warm-up compile;
  * uncached: `lm.sampling.reference_sample`, a Python loop of full forward passes over the
    fixed-length sequence. Every position costs the same pass, so by default only the first
    `--uncached-tokens` positions are timed and its rate is tokens / time of those;
  * per-token latency of one jitted `decode_step` at batch 1 and 8, at the start (cache
    index = prompt) and the end (index = prompt + 1,200) of the clip, each as a multiple of
    its memory floor: the bytes the step must read (weights plus the filled cache) divided
    by the copy bandwidth XLA reaches on this machine in the same run;
  * with --torch-python: the same steps in bench/torch_decode.py, a PyTorch peer of the same
    shape with a static KV cache, as `decode_*_vs_torch` (peer ms / kineto ms: > 1 is faster);
  * guidance cost: the cached sampler with one unconditional row group (2B rows) / without;
  * MaskGIT steps per second (bidirectional pass over prefix + canvas, 12 steps).
The last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

from train.host import keep_freed_memory

keep_freed_memory()  # as the `kineto` command does, before any import starts a thread (train/host.py)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

_BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _BENCH)
# This checkout's packages, not whichever checkout is installed (editable) in the venv.
sys.path.insert(1, os.path.dirname(_BENCH))
import common  # noqa: E402

import configs  # noqa: E402
from configs.schema import ClipSpec  # noqa: E402
from lm import Transformer, sampling, tasks  # noqa: E402
from lm.vocab import Vocabulary  # noqa: E402

SPEC = ClipSpec(frames=17, height=128, width=128, text_budget=16)  # 5x16x16 = 1,280 tokens
BATCHES = (1, 8)  # decode-step latency is measured at each


def latency_points(prompt_len: int, n_video: int) -> dict[str, tuple[int, int]]:
  """(batch, filled cache slots) of each timed decode step: the start and the end of the clip."""
  end = prompt_len + n_video - 80
  return {f"b{b}_{where}": (b, filled) for b in BATCHES for where, filled in (("start", prompt_len), ("end", end))}


def decode_latency(model, vocab, plan, n_video, prompt_len, cache_len) -> dict[str, float]:
  """Median seconds of one jitted `decode_step` at each point of `latency_points`."""
  graphdef, state = nnx.split(model)
  # Per-layer weights made once, outside the timed step, as the sampler makes them once
  # outside its `while_loop` (Transformer.layer_views).
  layers_graphdef, _ = nnx.split(nnx.eval_shape(lambda: model.layer_views()))
  layers = jax.jit(lambda st: nnx.state(nnx.merge(graphdef, st).layer_views()))(state)
  # The cache is donated, as in the sampler's `while_loop`, where each step updates it in
  # place: without donation every timed call would also copy the whole cache (at batch 8
  # and 1,302 slots, 85 MB), which the real loop never does. So each call continues the
  # previous one's cache; 22 calls move the fill by 22 of the 1,302 slots.
  decode = lambda st, ls, tok, cache: nnx.merge(graphdef, st).decode_step(tok, cache, nnx.merge(layers_graphdef, ls))
  step = jax.jit(decode, donate_argnums=3)
  prefill = jax.jit(lambda st, t, v: nnx.merge(graphdef, st).prefill(t, v, v, cache_len=cache_len)[1])
  seconds = {}
  for key, (b, filled) in latency_points(prompt_len, n_video).items():
    seq = np.full((b, filled), vocab.video_offset, np.int32)
    cache = [prefill(state, seq, np.ones((b, filled), bool))]
    tok = jnp.full((b,), vocab.video_offset, jnp.int32)

    def one(tok=tok, cache=cache):
      logits, cache[0] = step(state, layers, tok, cache[0])
      jax.block_until_ready(logits)

    seconds[key] = common.time_fn(one, warmup=2, repeats=20)
  return seconds


def copy_bandwidth(nbytes: int = 256 << 20) -> float:
  """The machine's memory bandwidth, bytes per second read + written: the better of numpy's
  copy (memcpy) and XLA's elementwise pass over a 256 MiB float32 array."""
  src, dst = np.ones(nbytes // 4, np.float32), np.empty(nbytes // 4, np.float32)
  numpy_s = common.time_fn(lambda: np.copyto(dst, src), warmup=2, repeats=5)
  x = jnp.asarray(src)
  add = jax.jit(lambda a: a + 1.0)
  xla_s = common.time_fn(lambda: jax.block_until_ready(add(x)), warmup=2, repeats=5)
  return 2 * nbytes / min(numpy_s, xla_s)


def decode_bytes(cfg, batch: int, filled: int) -> int:
  """Bytes one decode step must read: every weight a token touches (the embedding table only
  for its one row, unless it is also the output head) plus the filled keys and values."""
  lm = cfg.lm
  weights = lm.param_count() - (0 if lm.tie_embeddings else lm.vocab * lm.embed - lm.embed)
  cache = 2 * lm.layers * batch * lm.kv_heads * filled * lm.head_size
  return 4 * (weights + cache)  # float32


def run_peer(python: str, lm, cache_len: int, prompt_len: int, n_video: int) -> dict:
  """bench/torch_decode.py under `python`, same shape and cache positions; its JSON figures."""
  if lm.kv_heads != lm.heads or lm.tie_embeddings or lm.head_dim not in (0, lm.embed // lm.heads):
    raise SystemExit("the PyTorch decode peer has no grouped-query attention, tied head or custom head_dim: "
                     "use a config without them (lm_bench) with --torch-python")
  script = pathlib.Path(__file__).with_name("torch_decode.py")
  shape = f"{lm.vocab},{lm.embed},{lm.layers},{lm.heads},{lm.mlp}"
  cmd = [python, str(script), "--shape", shape, "--cache-len", str(cache_len), "--start", str(prompt_len),
         "--end-offset", str(n_video - 80), "--batches", ",".join(map(str, BATCHES))]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  print(out, end="")
  return json.loads(out.strip().splitlines()[-1])


def timed(fn):
  t0 = time.perf_counter()
  out = jax.block_until_ready(fn())
  return time.perf_counter() - t0, out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="lm_bench")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--uncached-tokens", type=int, default=16,
                      help="positions of the uncached baseline to time (its per-token cost is constant)")
  parser.add_argument("--maskgit-steps", type=int, default=12)
  parser.add_argument("--torch-python", metavar="PYTHON",
                      help="a Python with torch: also run bench/torch_decode.py (the PyTorch peer with a static KV "
                           "cache) at the same positions and report decode_*_vs_torch")
  args = parser.parse_args(argv)
  cfg = configs.load(args.config, args.set)
  vocab = Vocabulary(cfg.vocab)
  print("machine:", common.machine_info())

  model = Transformer(cfg.lm, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  examples = [{"text": rng.integers(0, cfg.vocab.text, SPEC.text_budget)} for _ in range(args.batch)]
  plan = sampling.layout_plan("t2v", vocab, SPEC)
  n_video = plan.slots[0].length
  length = sampling.prompt_length("t2v", vocab, SPEC)
  pad = vocab.special("pad")
  prompts, valid = sampling.pad_prompts([tasks.prompt("t2v", ex, vocab, spec=SPEC) for ex in examples],
                                        pad, length)
  guided, guided_valid = sampling.pad_prompts(
      [tasks.prompt("t2v", ex, vocab, spec=SPEC, drop_condition=d) for d in (False, True) for ex in examples],
      pad, length)
  settings = sampling.Sampling(temperature=1.0, top_k=100)
  print(f"{args.config}: {cfg.lm.param_count() / 1e6:.1f}M params, batch {args.batch}, prompt "
        f"{length} + {plan.length} output tokens ({n_video} video)")

  # --- cached: prefill + one compiled decode loop ------------------------------------
  # The warm-up call forces <eos> first: same shapes, so it compiles the same program, but
  # the loop stops at once (every row is done) instead of running the whole sequence.
  stop = np.full((args.batch, plan.length), -1, np.int32)
  stop[:, 0] = vocab.special("eos")
  run = lambda p, v, w, seed, forced=None: sampling.sample(model, vocab, p, v, plan, rng=seed, sampling=settings,
                                                           weights=w, forced_bn=forced)
  compile_s, _ = timed(lambda: run(prompts, valid, None, 0, stop))
  cached_s, tokens = timed(lambda: run(prompts, valid, None, 1))
  assert (np.asarray(tokens)[:, n_video] == plan.forced_n[n_video]).all()
  cached_tps = args.batch * plan.length / cached_s
  print(f"cached: {cached_s:.2f} s for {plan.length} tokens x {args.batch} = {cached_tps:.1f} tokens/s "
        f"(compile + prefill {compile_s:.1f} s)")

  # --- uncached: a full forward pass per token ----------------------------------------
  k = min(args.uncached_tokens, plan.length)
  ref = lambda: sampling.reference_sample(model, vocab, prompts, valid, plan, rng=1, sampling=settings,
                                          max_positions=k)
  ref_compile_s, _ = timed(lambda: sampling.reference_sample(model, vocab, prompts, valid, plan, rng=1,
                                                             sampling=settings, max_positions=1))
  uncached_s, ref_tokens = timed(ref)
  same = bool((ref_tokens[:, :k] == np.asarray(tokens)[:, :k]).all())
  uncached_tps = args.batch * k / uncached_s
  print(f"uncached: {uncached_s:.2f} s for the first {k} tokens x {args.batch} = {uncached_tps:.2f} tokens/s "
        f"(same tokens as cached: {same})")

  # --- per-token latency at the start and the end of the cache, batch 1 and 8 -----------
  cache_len = length + plan.length - 1
  latency = decode_latency(model, vocab, plan, n_video, length, cache_len)
  bandwidth = copy_bandwidth()
  points = latency_points(length, n_video)
  floor = {key: decode_bytes(cfg, b, filled) / bandwidth for key, (b, filled) in points.items()}
  print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (read + write)")
  for key in latency:
    print(f"decode_step {key}: {latency[key] * 1e3:.2f} ms = {latency[key] / floor[key]:.2f}x the memory floor "
          f"({floor[key] * 1e3:.2f} ms)")
  peer = run_peer(args.torch_python, cfg.lm, cache_len, length, n_video) if args.torch_python else None

  # --- guidance cost ------------------------------------------------------------------
  w = sampling.guidance_weights([3.0])
  timed(lambda: run(guided, guided_valid, w, 0, stop))
  cfg_s, _ = timed(lambda: run(guided, guided_valid, w, 1))
  print(f"with guidance (2 x {args.batch} rows): {cfg_s:.2f} s = {cfg_s / cached_s:.2f}x without")

  # --- MaskGIT --------------------------------------------------------------------------
  mg = sampling.MaskGit(steps=args.maskgit_steps)
  canvas = np.zeros((args.batch, n_video), np.int32)
  known = np.zeros((args.batch, n_video), bool)
  suffix = (vocab.special("eov_o"), vocab.special("eos"))
  masked = lambda seed: sampling.maskgit(model, vocab, prompts, valid, canvas, known, rng=seed,
                                         suffix=suffix, config=mg)[0]
  timed(lambda: masked(0))
  maskgit_s, _ = timed(lambda: masked(1))
  print(f"maskgit: {mg.steps} steps in {maskgit_s:.2f} s = {mg.steps / maskgit_s:.2f} steps/s "
        f"({args.batch * n_video / maskgit_s:.1f} video tokens/s)")

  figures = {
      "config": args.config, "overrides": args.set, "batch": args.batch, "prompt_tokens": length,
      "output_tokens": plan.length, "video_tokens": n_video,
      "cached_seconds": round(cached_s, 3), "cached_compile_seconds": round(compile_s, 2),
      "cached_tokens_per_second": round(cached_tps, 2),
      "uncached_timed_tokens": k, "uncached_seconds": round(uncached_s, 3),
      "uncached_compile_seconds": round(ref_compile_s, 2),
      "uncached_tokens_per_second": round(uncached_tps, 3),
      "speedup": round(cached_tps / uncached_tps, 1), "uncached_matches_cached": same,
      "decode_latency_start_ms": round(latency["b1_start"] * 1e3, 3),
      "decode_latency_end_ms": round(latency["b1_end"] * 1e3, 3),
      "copy_bytes_per_second": round(bandwidth, 1),
      "cfg_cost_ratio": round(cfg_s / cached_s, 3),
      "maskgit_steps": mg.steps, "maskgit_steps_per_second": round(mg.steps / maskgit_s, 3),
  }
  for key in latency:
    figures[f"decode_ms_{key}"] = round(latency[key] * 1e3, 3)
    figures[f"decode_floor_ms_{key}"] = round(floor[key] * 1e3, 3)
    figures[f"decode_{key}_vs_floor"] = round(latency[key] / floor[key], 3)
    if peer:
      figures[f"torch_decode_ms_{key}"] = peer[f"decode_ms_{key}"]
      # > 1 means kineto's step is faster than the PyTorch peer's.
      figures[f"decode_{key}_vs_torch"] = round(peer[f"decode_ms_{key}"] / (latency[key] * 1e3), 3)
  common.emit(figures)


if __name__ == "__main__":
  main()
