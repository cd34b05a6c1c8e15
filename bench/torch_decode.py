"""Peer: KV-cached decoding of the lm_bench shape in plain PyTorch, for bench/sampling.py.

  python bench/torch_decode.py [--cache-len 1299 --repeats 20]

Run it under a Python that has torch (not the project's .venv); it imports nothing from the
project. The model is what a PyTorch user would write for the shape of kineto's LM
(default `configs/lm_bench.py`: d=512, 8 pre-norm layers, 8 heads of 64, SwiGLU 1408, vocab
8192; `--shape` for another): rotary positions, untied head, float32, with a static KV
cache [L, B, H, S, K] allocated once (as Hugging Face's StaticCache does); each decode step
feeds one token per row under `torch.inference_mode` and runs `scaled_dot_product_attention`
over the filled slots only (a slice of the cache: rows share the write index, so no mask is
needed and no empty slot is read).

Measures, at batch 1 and 8, the median wall time of one decode step with the cache filled to
the start of a 1,280-token clip and to its end (the same positions bench/sampling.py times),
plus the machine's copy bandwidth in torch (a 256 MiB tensor copied; read + write bytes).
The last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import torch.nn.functional as F
from timing import time_fn  # noqa: E402 (bench/timing.py: no JAX)


def copy_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
  """Bytes per second moved by copying a large float32 tensor (read + write counted)."""
  src = torch.ones(nbytes // 4)
  dst = torch.empty_like(src)
  seconds = time_fn(lambda: dst.copy_(src), warmup=2, repeats=repeats)
  return 2 * nbytes / seconds


def rotate(x_bhtk, cos_b11k, sin_b11k):
  half = x_bhtk.shape[-1] // 2
  x1, x2 = x_bhtk[..., :half], x_bhtk[..., half:]
  rotated = torch.cat([-x2, x1], dim=-1)
  return x_bhtk * cos_b11k + rotated * sin_b11k


class Decoder(torch.nn.Module):
  """Pre-norm blocks with rotary attention and a SwiGLU MLP; decodes against a static cache."""

  def __init__(self, vocab: int, d: int, layers: int, heads: int, mlp: int):
    super().__init__()
    self.d, self.layers, self.heads, self.mlp = d, layers, heads, mlp
    head = d // heads
    linear = lambda n_in, n_out: torch.nn.Linear(n_in, n_out, bias=False)
    per_layer = lambda make: torch.nn.ModuleList(make() for _ in range(layers))
    self.embed = torch.nn.Embedding(vocab, d)
    self.attn_norm = per_layer(lambda: torch.nn.RMSNorm(d, eps=1e-6))
    self.qkv = per_layer(lambda: linear(d, 3 * d))  # one fused matmul instead of three
    self.out = per_layer(lambda: linear(d, d))
    self.mlp_norm = per_layer(lambda: torch.nn.RMSNorm(d, eps=1e-6))
    self.gate_up = per_layer(lambda: linear(d, 2 * mlp))
    self.down = per_layer(lambda: linear(mlp, d))
    self.norm = torch.nn.RMSNorm(d, eps=1e-6)
    self.head = linear(d, vocab)
    inv_freq = 10_000.0 ** (-torch.arange(0, head // 2, dtype=torch.float32) * 2 / head)
    self.register_buffer("inv_freq_k", torch.cat([inv_freq, inv_freq]), persistent=False)

  def step(self, tokens_b, k_lbhsk, v_lbhsk, index: int):
    """Feeds one token per row at cache slot `index` (its rotary position); returns logits [B, V]."""
    b, d, heads, mlp = tokens_b.shape[0], self.d, self.heads, self.mlp
    angle = (torch.full((b, 1), float(index)) * self.inv_freq_k).view(b, 1, 1, -1)  # [B, 1, 1, K]
    cos, sin = angle.cos(), angle.sin()
    x = self.embed(tokens_b)[:, None]  # [B, 1, D]
    for layer in range(self.layers):
      q, k, v = self.qkv[layer](self.attn_norm[layer](x)).split(d, dim=-1)
      q, k, v = (z.view(b, 1, heads, d // heads).transpose(1, 2) for z in (q, k, v))  # [B, H, 1, K]
      k_lbhsk[layer, :, :, index] = rotate(k, cos, sin)[:, :, 0]
      v_lbhsk[layer, :, :, index] = v[:, :, 0]
      a = F.scaled_dot_product_attention(rotate(q, cos, sin), k_lbhsk[layer, :, :, :index + 1],
                                         v_lbhsk[layer, :, :, :index + 1])
      x = x + self.out[layer](a.transpose(1, 2).reshape(b, 1, d))
      gate, up = self.gate_up[layer](self.mlp_norm[layer](x)).split(mlp, dim=-1)
      x = x + self.down[layer](F.silu(gate) * up)
    return self.head(self.norm(x))[:, 0]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shape", default="8192,512,8,8,1408",
                      help="vocab,embed,layers,heads,mlp (default: configs/lm_bench.py)")
  parser.add_argument("--cache-len", type=int, default=1299,
                      help="static cache slots (bench/sampling.py: prompt + output - 1)")
  parser.add_argument("--start", type=int, default=18, help="filled slots at the start of the clip (the prompt)")
  parser.add_argument("--end-offset", type=int, default=1200, help="slots filled after the prompt at the 'end'")
  parser.add_argument("--batches", default="1,8")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args(argv)
  threads = os.cpu_count()
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  print("machine:", {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                     "cpu_count": threads, "torch": torch.__version__, "threads": torch.get_num_threads()})
  vocab, d, layers, heads, mlp = (int(x) for x in args.shape.split(","))
  model = Decoder(vocab, d, layers, heads, mlp).eval()
  params = sum(p.numel() for p in model.parameters())
  figures = {"model": "torch decoder, static KV cache", "shape": args.shape, "torch": torch.__version__,
             "params": params, "cache_len": args.cache_len, "threads": torch.get_num_threads()}
  with torch.inference_mode():
    for b in (int(x) for x in args.batches.split(",")):
      k = torch.zeros(layers, b, heads, args.cache_len, d // heads)
      v = torch.zeros_like(k)
      tokens = torch.zeros(b, dtype=torch.long)
      for where, filled in (("start", args.start), ("end", args.start + args.end_offset)):
        # Each call writes slot `filled` again, so every timed step sees the same cache.
        step = lambda tokens=tokens, k=k, v=v, filled=filled: model.step(tokens, k, v, filled)
        seconds = time_fn(step, warmup=3, repeats=args.repeats)
        figures[f"decode_ms_b{b}_{where}"] = round(seconds * 1e3, 3)
        print(f"batch {b}, {where} ({filled} cached): {seconds * 1e3:.2f} ms per step "
              f"({b / seconds:.0f} tokens/s)")
  figures["copy_bytes_per_second"] = round(copy_bandwidth(), 1)
  print(f"copy bandwidth: {figures['copy_bytes_per_second'] / 1e9:.1f} GB/s")
  print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
  main()
