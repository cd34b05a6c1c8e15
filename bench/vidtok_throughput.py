"""Video tokenizer throughput: encode and decode frames/s on 17x128x128 clips, and the
tokenizer's FLOP/s (XLA's cost analysis of the compiled programs) divided by this
machine's matmul FLOP/s measured in the same run.

  python bench/vidtok_throughput.py [--batch 4] [--configs vidtok_demo,vidtok_magvit2] [--torch-python PY]

With --torch-python it also runs bench/torch_vidtok.py (the same network layer for layer in
PyTorch) on the same clip shape and batch, and reports `encode_vs_torch` / `decode_vs_torch`
(kineto frames/s over the peer's: > 1 is faster).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from train.host import keep_freed_memory

keep_freed_memory()  # as the `kineto` command does, before any import starts a thread (train/host.py)

import jax  # noqa: E402
from flax import nnx  # noqa: E402

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from common import emit, machine_info, time_fn  # noqa: E402

import configs  # noqa: E402
from train.flops import measure_matmul_flops_per_second  # noqa: E402
from vidtok.model import VideoTokenizer  # noqa: E402

FRAMES, SIZE = 17, 128


def measure(name: str, batch: int, repeats: int) -> dict:
  cfg = configs.load(name).vidtok
  graphdef, params = nnx.split(VideoTokenizer(cfg, rngs=nnx.Rngs(0)))
  video = jax.random.uniform(jax.random.key(0), (batch, FRAMES, SIZE, SIZE, 3), minval=-1, maxval=1)
  # Compiled once ahead of time; the FLOPs are XLA's count for exactly the timed program.
  encode = jax.jit(lambda p, v: nnx.merge(graphdef, p).encode(v)).lower(params, video).compile()
  codes = encode(params, video)
  decode = jax.jit(lambda p, c: nnx.merge(graphdef, p).decode(c)).lower(params, codes).compile()
  flops = {"encode": encode.cost_analysis()["flops"], "decode": decode.cost_analysis()["flops"]}
  t_enc = time_fn(lambda: encode(params, video).block_until_ready(), warmup=0, repeats=repeats)
  t_dec = time_fn(lambda: decode(params, codes).block_until_ready(), warmup=0, repeats=repeats)
  frames = batch * FRAMES
  return {"encode_fps": frames / t_enc, "decode_fps": frames / t_dec,
          "encode_gflop_per_clip": flops["encode"] / batch / 1e9,
          "decode_gflop_per_clip": flops["decode"] / batch / 1e9,
          "flops_per_second": (flops["encode"] + flops["decode"]) / (t_enc + t_dec),
          "tokens_per_clip": int(codes[0].size), "batch": batch}


def run_peer(python: str, name: str, batch: int, repeats: int) -> dict:
  """bench/torch_vidtok.py under `python` with config `name`'s layers; its JSON figures."""
  cfg = configs.load(name).vidtok
  cmd = [python, str(pathlib.Path(__file__).with_name("torch_vidtok.py")), "--channels", str(cfg.channels),
         "--multipliers", ",".join(map(str, cfg.multipliers)), "--res-blocks", str(cfg.res_blocks),
         "--time-downsample", ",".join(str(int(t)) for t in cfg.time_downsample), "--bits", str(cfg.latent_dim),
         "--groups", str(cfg.norm_groups), "--patch", str(cfg.patch), "--batch", str(batch),
         "--frames", str(FRAMES), "--size", str(SIZE),
         "--repeats", str(repeats)]
  out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
  print(out, end="")
  return json.loads(out.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--batch", type=int, default=4, help="clips per call (the demo config)")
  parser.add_argument("--configs", default="vidtok_demo,vidtok_magvit2")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--torch-python", metavar="PYTHON",
                      help="a Python with torch: also run the PyTorch peer (bench/torch_vidtok.py) in this run")
  args = parser.parse_args()
  # The MAGVIT-v2-scale model costs TFLOPs per clip: one clip, timed once, on a CPU.
  sizes = {name: (1, 1) if name == "vidtok_magvit2" else (args.batch, args.repeats)
           for name in args.configs.split(",")}
  results = {name: measure(name, *size) for name, size in sizes.items()}
  if args.torch_python:
    for name, size in sizes.items():
      peer = run_peer(args.torch_python, name, *size)
      r = results[name]
      r["torch_encode_fps"], r["torch_decode_fps"] = peer["encode_fps"], peer["decode_fps"]
      r["encode_vs_torch"] = r["encode_fps"] / peer["encode_fps"]
      r["decode_vs_torch"] = r["decode_fps"] / peer["decode_fps"]
  # Measured after the tokenizers: a matmul benchmark run first slows what follows on CPU.
  peak = measure_matmul_flops_per_second(n=1024)
  for name, r in results.items():
    r["flops_ratio"] = r["flops_per_second"] / peak
    print(f"{name:16s} encode {r['encode_fps']:8.1f} frames/s  decode {r['decode_fps']:8.1f} frames/s  "
          f"{r['encode_gflop_per_clip']:.1f}+{r['decode_gflop_per_clip']:.1f} GFLOP/clip  "
          f"{r['flops_ratio']:.2f} of matmul peak ({peak / 1e9:.0f} GFLOP/s)")
    if "encode_vs_torch" in r:
      print(f"{'':16s} vs PyTorch: encode {r['encode_vs_torch']:.2f}x, decode {r['decode_vs_torch']:.2f}x")
  first = results[args.configs.split(",")[0]]
  peer = {key: first[key] for key in ("encode_vs_torch", "decode_vs_torch") if key in first}
  emit({**peer, "encode_fps": first["encode_fps"], "decode_fps": first["decode_fps"],
        "flops_ratio": first["flops_ratio"], "matmul_flops_per_second": peak,
        "clip": f"{FRAMES}x{SIZE}x{SIZE}", "configs": results, **machine_info()})


if __name__ == "__main__":
  main()
