"""Peer: the causal video tokenizer's encoder and decoder in plain PyTorch, for bench/vidtok_throughput.py.

  python bench/torch_vidtok.py --channels 16 --multipliers 1,2,4 --res-blocks 1 --patch 2 \
      --time-downsample 1,1 --bits 4 --groups 4 [--batch 4 --frames 17 --size 128]

Run it under a Python that has torch (not the project's .venv); it imports nothing from the
project. The network is layer for layer kineto's `vidtok/model.py` as a PyTorch user would
write it: `nn.Conv3d` (channels-first) with the time axis padded on the past side only,
GroupNorm over each frame separately (frames folded into the batch), SiLU, residual blocks
with a 1x1x1 skip where widths change, stride-2 convolutions to downsample and depth-to-space
after a convolution to upsample (dropping the first output frame in time), sign bits between
encoder and decoder (`--bits` latent channels: LFQ's bits, or FSQ's levels; the decoder's cost
is the same), and with `--patch p` each p x p pixel block folded into channels before the
encoder and unfolded after the decoder. float32 under `torch.inference_mode`.

Measures encode and decode frames/s (median wall time of a call on random clips in
[-1, 1]). The last line is one JSON object of the figures.
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
from torch import nn


class CausalConv3d(nn.Conv3d):
  """Conv3d padded "same" in space and only on the past side in time."""

  def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride=(1, 1, 1)):
    super().__init__(c_in, c_out, kernel, stride=stride, padding=(0, (kernel - 1) // 2, (kernel - 1) // 2))
    self.time_pad = kernel - 1

  def forward(self, x_bcthw):
    return super().forward(F.pad(x_bcthw, (0, 0, 0, 0, self.time_pad, 0)))


class FrameGroupNorm(nn.GroupNorm):
  """GroupNorm with statistics per frame: frames folded into the batch."""

  def forward(self, x_bcthw):
    b, c, t, h, w = x_bcthw.shape
    y = super().forward(x_bcthw.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, c, h, w).transpose(1, 2)


class ResBlock(nn.Module):

  def __init__(self, c_in: int, c_out: int, groups: int):
    super().__init__()
    self.norm1, self.conv1 = FrameGroupNorm(groups, c_in, eps=1e-6), CausalConv3d(c_in, c_out)
    self.norm2, self.conv2 = FrameGroupNorm(groups, c_out, eps=1e-6), CausalConv3d(c_out, c_out)
    self.skip = CausalConv3d(c_in, c_out, kernel=1) if c_in != c_out else nn.Identity()

  def forward(self, x):
    h = self.conv1(F.silu(self.norm1(x)))
    return self.conv2(F.silu(self.norm2(h))) + self.skip(x)


class Upsample(nn.Module):
  """Causal conv to c_out x (time factor) x 4 channels, then depth-to-space."""

  def __init__(self, c_in: int, c_out: int, time: bool):
    super().__init__()
    self.f, self.c_out = (2 if time else 1), c_out
    self.conv = CausalConv3d(c_in, c_out * self.f * 4)

  def forward(self, x):
    y = self.conv(x)
    b, _, t, h, w = y.shape
    y = y.reshape(b, self.c_out, self.f, 2, 2, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return y.reshape(b, self.c_out, t * self.f, h * 2, w * 2)[:, :, self.f - 1:]


class SpaceToDepth(nn.Module):
  """[B, C, T, H, W] -> [B, p*p*C, T, H/p, W/p] (`inverse`: back), as vidtok/model.py's patches."""

  def __init__(self, p: int, inverse: bool = False):
    super().__init__()
    self.p, self.inverse = p, inverse

  def forward(self, x):
    b, c, t, h, w = x.shape
    p = self.p
    if self.inverse:
      x = x.reshape(b, p, p, c // (p * p), t, h, w).permute(0, 3, 4, 5, 1, 6, 2)
      return x.reshape(b, c // (p * p), t, h * p, w * p)
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 4, 6, 1, 2, 3, 5)
    return x.reshape(b, p * p * c, t, h // p, w // p)


def encoder(channels, multipliers, res_blocks, time_down, bits, groups, patch=1) -> nn.Sequential:
  widths = [channels * m for m in multipliers]
  layers, c = [SpaceToDepth(patch), CausalConv3d(3 * patch * patch, widths[0])], widths[0]
  for i, width in enumerate(widths):
    for _ in range(res_blocks):
      layers.append(ResBlock(c, width, groups))
      c = width
    if i < len(widths) - 1:
      layers.append(CausalConv3d(c, c, stride=(2 if time_down[i] else 1, 2, 2)))
  layers += [ResBlock(c, c, groups), FrameGroupNorm(groups, c, eps=1e-6), nn.SiLU(), CausalConv3d(c, bits, kernel=1),
             FrameGroupNorm(1, bits, eps=1e-6, affine=False)]
  return nn.Sequential(*layers)


def decoder(channels, multipliers, res_blocks, time_down, bits, groups, patch=1) -> nn.Sequential:
  widths = [channels * m for m in multipliers]
  c = widths[-1]
  layers = [CausalConv3d(bits, c), ResBlock(c, c, groups)]
  for i in reversed(range(len(widths))):
    for _ in range(res_blocks):
      layers.append(ResBlock(c, widths[i], groups))
      c = widths[i]
    if i > 0:
      layers.append(Upsample(c, widths[i - 1], time_down[i - 1]))
      c = widths[i - 1]
  layers += [FrameGroupNorm(groups, c, eps=1e-6), nn.SiLU(), CausalConv3d(c, 3 * patch * patch),
             SpaceToDepth(patch, inverse=True)]
  return nn.Sequential(*layers)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--channels", type=int, default=8)
  parser.add_argument("--multipliers", default="1,2,4,8")
  parser.add_argument("--res-blocks", type=int, default=1)
  parser.add_argument("--time-downsample", default="0,1,1")
  parser.add_argument("--bits", type=int, default=10)
  parser.add_argument("--groups", type=int, default=4)
  parser.add_argument("--patch", type=int, default=1)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--frames", type=int, default=17)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  print("machine:", {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads()})
  shape = (args.channels, [int(m) for m in args.multipliers.split(",")], args.res_blocks,
           [bool(int(t)) for t in args.time_downsample.split(",")], args.bits, args.groups, args.patch)
  enc, dec = encoder(*shape).eval(), decoder(*shape).eval()
  video = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1
  with torch.inference_mode():
    q = torch.where(enc(video) > 0, 1.0, -1.0)  # the sign bits LFQ hands the decoder
    assert dec(q).shape == video.shape, (dec(q).shape, video.shape)
    warmup = 0 if args.repeats == 1 else 1
    t_enc = time_fn(lambda: enc(video), warmup=warmup, repeats=args.repeats)
    t_dec = time_fn(lambda: dec(q), warmup=warmup, repeats=args.repeats)
  frames = args.batch * args.frames
  figures = {"model": "torch causal tokenizer", "torch": torch.__version__, "threads": torch.get_num_threads(),
             "params": sum(p.numel() for m in (enc, dec) for p in m.parameters()),
             "clip": f"{args.frames}x{args.size}x{args.size}", "batch": args.batch,
             "encode_fps": round(frames / t_enc, 2), "decode_fps": round(frames / t_dec, 2)}
  print(f"encode {figures['encode_fps']:.1f} frames/s, decode {figures['decode_fps']:.1f} frames/s")
  print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
  main()
