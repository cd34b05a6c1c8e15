"""Benchmark: one training step of `configs/lm_bench.py` against the machine's matmul peak.

  python bench/lm_step.py [--set lm.attention_block=128 ...]

Measures in one run on this machine: the full training step (forward, backward, AdamW)
of the lm_bench shape on a text-to-video-like sequence (a 64-token bidirectional prefix,
then 1,216 causal output tokens), then the FLOP/s of a 2048x2048 float32 matmul chain (the
practical peak). Model FLOPs are counted analytically: 6 x (non-embedding + head params) x
tokens, plus 12 x heads x head_dim per (query, visible key) pair, where visible pairs are
counted exactly under the prefix-LM mask (so masked-out attention work is not credited).
MFU = model FLOP/s / matmul FLOP/s. With --torch-python it also runs bench/torch_baseline.py
(a plain PyTorch decoder of the same shape) and reports tokens/s relative to it. The last
line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from train.host import keep_freed_memory

# As the `kineto` command does (train/host.py), before any import starts a thread: threads
# started earlier keep malloc arenas of their own, which XLA's threads would then share.
keep_freed_memory()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import common  # noqa: E402

import configs  # noqa: E402
import sharding  # noqa: E402
from train.flops import measure_matmul_flops_per_second, train_step_flops  # noqa: E402
from train.state import init_state, make_train_step  # noqa: E402

PREFIX = 64


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--torch-python", metavar="PYTHON",
                      help="a Python with torch: also run bench/torch_baseline.py in this run and "
                           "report kineto's speed relative to it")
  args = parser.parse_args(argv)
  cfg = configs.load("lm_bench", args.set)
  print("machine:", common.machine_info())

  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  ts = init_state(cfg, mesh)
  step = make_train_step(cfg, mesh, ts)
  b, t = cfg.train.batch_size, cfg.train.seq_len
  rng = np.random.RandomState(0)
  tokens = jnp.asarray(rng.randint(0, cfg.lm.vocab, (b, t + 1)), jnp.int32)
  input_mask = jnp.zeros((b, t + 1), bool).at[:, :PREFIX].set(True)
  batch = {"tokens": tokens, "input_mask": input_mask, "loss_mask": ~input_mask}

  state = ts.state

  def one_step():
    nonlocal state
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])

  seconds = common.time_fn(one_step, warmup=2, repeats=args.repeats)
  # Compiled again (not run) only for its memory analysis, after timing.
  with jax.set_mesh(mesh):
    mem = step.jitted.lower(state, batch).compile().memory_analysis()
  peak_memory = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                    - mem.alias_size_in_bytes)
  # The peak is measured after the step: a matmul benchmark run first slows the steps
  # that follow it by ~8% on this machine (seen with both orders in one process).
  peak = measure_matmul_flops_per_second()
  print(f"matmul 2048^2 float32: {peak / 1e9:.1f} GFLOP/s")
  flops = train_step_flops(cfg.lm, np.asarray(input_mask[:, :-1]))
  figures = {
      "config": "lm_bench", "overrides": args.set, "batch": b, "seq_len": t, "prefix": PREFIX,
      "step_seconds": round(seconds, 4),
      "tokens_per_second": round(b * t / seconds, 1),
      "matmul_flops_per_second": round(peak, 1),
      "model_flops_per_step": flops,
      "model_flops_per_second": round(flops / seconds, 1),
      "mfu": round(flops / seconds / peak, 4),
      "peak_memory_bytes": peak_memory,
  }
  if args.torch_python:
    torch = _run_torch_baseline(args.torch_python, args.repeats)
    figures.update(torch_tokens_per_second=torch["tokens_per_second"], torch_mfu=torch["mfu"],
                   torch_matmul_flops_per_second=torch["matmul_flops_per_second"],
                   speed_vs_torch=round(figures["tokens_per_second"] / torch["tokens_per_second"], 3))
    print(f"torch baseline: {torch['tokens_per_second']:.0f} tokens/s | kineto / torch = "
          f"{figures['speed_vs_torch']:.2f}")
  print(f"step {seconds:.3f} s | {figures['tokens_per_second']:.0f} tokens/s | "
        f"model {figures['model_flops_per_second'] / 1e9:.1f} GFLOP/s | MFU {figures['mfu']:.3f} | "
        f"peak memory {peak_memory / 2**30:.2f} GiB")
  common.emit(figures)


def _run_torch_baseline(python: str, repeats: int) -> dict:
  """Runs bench/torch_baseline.py under `python` and returns its JSON figures."""
  script = pathlib.Path(__file__).with_name("torch_baseline.py")
  out = subprocess.run([python, str(script), "--repeats", str(repeats)], check=True,
                       capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
  main()
