"""Benchmark: the training loop of `configs/lm_bench.py` with and without async checkpoints.

  python bench/train_loop.py [--steps 6] [--every 2]

Runs the real `train_lm` loop twice in one process on the same machine: once saving a
checkpoint only at the end, once saving asynchronously every `--every` steps (params and
AdamW moments: ~0.4 GB per save at this shape). Reports the step-time overhead of the
saves, the input pipeline's throughput against what the step consumes (tokens/s of batch
assembly / tokens/s of training), and the loop's MFU. The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time

from train.host import keep_freed_memory

keep_freed_memory()  # as the `kineto` command does, before any import starts a thread (train/host.py)

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import common  # noqa: E402

import configs  # noqa: E402
from train import corpus  # noqa: E402
from train.lm_trainer import train_lm  # noqa: E402


def loader_tokens_per_second(cfg, batches: int = 20) -> float:
  """Host-side batch assembly speed of the training data (what the loop pulls per step)."""
  data, _ = corpus.split(corpus.corpus_bytes())
  it = corpus.batches(data, cfg.train.batch_size, cfg.train.seq_len, cfg.train.seq_len // 8, 0)
  next(it)
  t0 = time.perf_counter()
  for _ in range(batches):
    next(it)
  return batches * cfg.train.batch_size * cfg.train.seq_len / (time.perf_counter() - t0)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=6)
  parser.add_argument("--every", type=int, default=2)
  args = parser.parse_args(argv)
  print("machine:", common.machine_info())
  runs = {}
  for name, every in (("no_checkpoints", 0), ("async_checkpoints", args.every)):
    cfg = configs.load("lm_bench", [f"train.steps={args.steps}", f"train.checkpoint_every={every}",
                                    "train.keep_last=2"])
    with tempfile.TemporaryDirectory() as workdir:
      runs[name] = train_lm(cfg, workdir, progress=False)
    print(f"{name}: {runs[name]['step_seconds']:.3f} s/step, MFU {runs[name]['mfu']:.3f}")
  step = runs["no_checkpoints"]
  loader = loader_tokens_per_second(cfg)
  figures = {
      "config": "lm_bench", "steps": args.steps, "checkpoint_every": args.every,
      "step_seconds": round(step["step_seconds"], 4),
      "step_seconds_with_checkpoints": round(runs["async_checkpoints"]["step_seconds"], 4),
      "checkpoint_overhead": round(runs["async_checkpoints"]["step_seconds"] / step["step_seconds"] - 1, 4),
      "loader_tokens_per_second": round(loader, 1),
      "tokens_per_second": round(step["tokens_per_second"], 1),
      "loader_to_step_ratio": round(loader / step["tokens_per_second"], 1),
      "mfu": round(step["mfu"], 4),
  }
  print(f"checkpoint overhead {figures['checkpoint_overhead']:+.1%} | loader / step "
        f"{figures['loader_to_step_ratio']:.0f}x | MFU {figures['mfu']:.3f}")
  common.emit(figures)


if __name__ == "__main__":
  main()
