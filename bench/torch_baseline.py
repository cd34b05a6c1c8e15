"""Baseline: a plain PyTorch CPU training step of a decoder-only transformer, for comparison.

  python bench/torch_baseline.py [--batch 4 --seq 1280 --repeats 5]

Run it under a Python that has torch installed, not the project's .venv: torch is not a
kineto dependency, and this script imports nothing from the project. It is the comparison
point for bench/lm_step.py: the model a typical user would write in PyTorch instead, with
the same math as `configs/lm_bench.py` (d=512, 8 pre-norm RMSNorm layers, 8 heads of 64 with
rotary positions through `scaled_dot_product_attention(is_causal=True)`, SwiGLU 1408, vocab
8192, untied head, float32, AdamW with `fused=True` where torch offers it), timed on the same
machine with the same FLOP accounting.

Measures the FLOP/s of a chain of 2048x2048 float32 matmuls in torch (the practical peak),
then the median wall time of a full training step (forward, backward, AdamW, zero_grad).
Model FLOPs are counted analytically as in train/flops.py: 6 x (params except the embedding
lookup table) x tokens, plus 12 x heads x head_dim per (query, visible key) pair per layer,
with T(T+1)/2 visible pairs per causal sequence. MFU = model FLOP/s / matmul FLOP/s.
The last line is one JSON object of the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import torch.nn as nn
import torch.nn.functional as F
from timing import time_fn  # noqa: E402 (bench/timing.py: no JAX)

VOCAB, D, LAYERS, HEADS, MLP = 8192, 512, 8, 8, 1408
HEAD = D // HEADS


def rotate(x_bhtk, cos_tk, sin_tk):
  """Rotary positions: pairs (x[i], x[i + K/2]) rotated by position x theta^(-2i/K)."""
  half = x_bhtk.shape[-1] // 2
  return x_bhtk * cos_tk + torch.cat([-x_bhtk[..., half:], x_bhtk[..., :half]], dim=-1) * sin_tk


class Block(nn.Module):
  """Pre-norm block: x + attn(norm(x)), then x + swiglu(norm(x))."""

  def __init__(self, d: int, heads: int):
    super().__init__()
    self.heads = heads
    self.attn_norm = nn.RMSNorm(d, eps=1e-6)
    self.qkv = nn.Linear(d, 3 * d, bias=False)  # one fused matmul instead of three
    self.out = nn.Linear(d, d, bias=False)
    self.mlp_norm = nn.RMSNorm(d, eps=1e-6)
    self.gate_up = nn.Linear(d, 2 * MLP, bias=False)  # gate and up in one matmul
    self.down = nn.Linear(MLP, d, bias=False)

  def forward(self, x, cos_tk, sin_tk):
    b, t, d = x.shape
    q, k, v = self.qkv(self.attn_norm(x)).split(d, dim=-1)
    # (b, t, d) -> (b, heads, t, head_dim), the layout scaled_dot_product_attention expects.
    q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
    a = F.scaled_dot_product_attention(rotate(q, cos_tk, sin_tk), rotate(k, cos_tk, sin_tk), v, is_causal=True)
    x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
    gate, up = self.gate_up(self.mlp_norm(x)).split(MLP, dim=-1)
    return x + self.down(F.silu(gate) * up)


class Decoder(nn.Module):

  def __init__(self, vocab: int = VOCAB, d: int = D, layers: int = LAYERS, heads: int = HEADS):
    super().__init__()
    self.embed = nn.Embedding(vocab, d)
    self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
    self.norm = nn.RMSNorm(d, eps=1e-6)
    self.head = nn.Linear(d, vocab, bias=False)  # untied, like lm_bench

  def forward(self, tokens):
    t = tokens.shape[1]
    inv_freq = 10_000.0 ** (-torch.arange(0, HEAD // 2, dtype=torch.float32) * 2 / HEAD)
    angle_tk = torch.arange(t, dtype=torch.float32)[:, None] * torch.cat([inv_freq, inv_freq])
    cos_tk, sin_tk = angle_tk.cos(), angle_tk.sin()
    x = self.embed(tokens)
    for block in self.blocks:
      x = block(x, cos_tk, sin_tk)
    return self.head(self.norm(x))


def measure_matmul_flops_per_second(n: int = 2048, repeats: int = 5) -> float:
  """Torch's practical peak on this machine: FLOP/s of a chain of n x n float32 matmuls."""
  g = torch.Generator().manual_seed(0)
  a = torch.randn(n, n, generator=g)
  b = torch.randn(n, n, generator=g) / n ** 0.5  # keeps the chain's values from blowing up
  chain = 4

  def f():
    x = a
    for _ in range(chain):
      x = x @ b
    return x

  f()  # warm up: first call pays for thread pool start and allocation
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    f()
    best = min(best, time.perf_counter() - t0)
  return chain * 2 * n ** 3 / best


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--seq", type=int, default=1280)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  threads = os.cpu_count()
  torch.set_num_threads(threads)  # torch may default to fewer threads than cores
  torch.manual_seed(0)
  print("machine:", {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                     "cpu_count": threads, "torch": torch.__version__, "threads": torch.get_num_threads()})

  model = Decoder()
  try:  # the fused (single-kernel) AdamW where this torch has it for CPU tensors
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
  except (RuntimeError, TypeError):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
  b, t = args.batch, args.seq
  # t + 1 tokens per row: inputs are the first t, next-token targets the last t.
  tokens = torch.randint(0, VOCAB, (b, t + 1), generator=torch.Generator().manual_seed(0))
  inputs, targets = tokens[:, :-1], tokens[:, 1:]

  def one_step():
    logits = model(inputs)
    loss = F.cross_entropy(logits.reshape(-1, VOCAB), targets.reshape(-1))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()  # set_to_none by default, so no memset of the gradients

  seconds = time_fn(one_step, warmup=2, repeats=args.repeats)
  peak = measure_matmul_flops_per_second()  # after the step, in the same order as lm_step.py
  print(f"matmul 2048^2 float32: {peak / 1e9:.1f} GFLOP/s")

  params = sum(p.numel() for p in model.parameters())
  # The embedding is a table lookup, not a matmul, so it earns no 6 x params x tokens credit.
  matmul_params = params - model.embed.weight.numel()
  visible_pairs = b * t * (t + 1) // 2  # causal: query i sees keys 0..i
  attention = 12 * HEADS * (D // HEADS) * visible_pairs * LAYERS
  flops = 6.0 * matmul_params * b * t + attention
  figures = {
      "model": "torch decoder (SwiGLU, rotary)", "fused_adamw": bool(optimizer.defaults.get("fused")),
      "batch": b, "seq_len": t, "params": params,
      "torch": torch.__version__, "threads": torch.get_num_threads(),
      "step_seconds": round(seconds, 4),
      "tokens_per_second": round(b * t / seconds, 1),
      "matmul_flops_per_second": round(peak, 1),
      "model_flops_per_step": flops,
      "model_flops_per_second": round(flops / seconds, 1),
      "mfu": round(flops / seconds / peak, 4),
  }
  print(f"step {seconds:.3f} s | {figures['tokens_per_second']:.0f} tokens/s | "
        f"model {figures['model_flops_per_second'] / 1e9:.1f} GFLOP/s | MFU {figures['mfu']:.3f} | "
        f"{params / 1e6:.1f}M params")
  print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
  main()
