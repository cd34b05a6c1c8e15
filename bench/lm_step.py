"""Benchmark: one training step of `configs/lm_bench.py` against the machine's matmul peak.

  python bench/lm_step.py [--set lm.attention_block=128 ...]

Measures in one run on this machine: the FLOP/s of a 2048x2048 float32 matmul (the
practical peak), then the full training step (forward, backward, AdamW) of the lm_bench
shape on a text-to-video-like sequence (a 64-token bidirectional prefix, then 1,216 causal
output tokens). Model FLOPs are counted analytically: 6 x (non-embedding + head params) x
tokens, plus 12 x heads x head_dim per (query, visible key) pair, where visible pairs are
counted exactly under the prefix-LM mask (so masked-out attention work is not credited).
MFU = model FLOP/s / matmul FLOP/s. The last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import sys

import jax
import jax.numpy as jnp
import numpy as np

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
  args = parser.parse_args(argv)
  cfg = configs.load("lm_bench", args.set)
  print("machine:", common.machine_info())

  peak = measure_matmul_flops_per_second()
  print(f"matmul 2048^2 float32: {peak / 1e9:.1f} GFLOP/s")

  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  ts = init_state(cfg, mesh)
  step = make_train_step(cfg, mesh, ts)
  b, t = cfg.train.batch_size, cfg.train.seq_len
  rng = np.random.RandomState(0)
  tokens = jnp.asarray(rng.randint(0, cfg.lm.vocab, (b, t + 1)), jnp.int32)
  input_mask = jnp.zeros((b, t + 1), bool).at[:, :PREFIX].set(True)
  batch = {"tokens": tokens, "input_mask": input_mask, "loss_mask": ~input_mask}

  with jax.set_mesh(mesh):
    compiled = step.jitted.lower(ts.state, batch).compile()
  mem = compiled.memory_analysis()
  peak_memory = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes
                    - mem.alias_size_in_bytes)

  state = ts.state

  def one_step():
    nonlocal state
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])

  seconds = common.time_fn(one_step, warmup=2, repeats=args.repeats)
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
  print(f"step {seconds:.3f} s | {figures['tokens_per_second']:.0f} tokens/s | "
        f"model {figures['model_flops_per_second'] / 1e9:.1f} GFLOP/s | MFU {figures['mfu']:.3f} | "
        f"peak memory {peak_memory / 2**30:.2f} GiB")
  common.emit(figures)


if __name__ == "__main__":
  main()
