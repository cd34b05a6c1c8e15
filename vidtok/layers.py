"""Causal 3-D building blocks of the video tokenizer: convolutions, norms, resampling.

Causality is the tokenizer's contract: a latent frame never depends on a later video
frame, so the first frame is encoded on its own (an image is a one-frame video) and a
long video can be encoded in chunks. Convolutions pad only on the past side in time;
GroupNorm normalizes each frame separately (statistics over a whole clip would leak the
future into the past).

Chunked (streaming) runs thread a `Stream` through every causal convolution: it keeps,
per convolution, the input frames the next chunk still needs, so chunk after chunk gives
exactly the single-pass result. All arrays are `[B, T, H, W, C]`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sharding import param


class Stream:
  """Per-convolution past frames carried from one chunk of a video to the next.

  `past` is None for the first chunk (or a single pass): convolutions then pad with zeros.
  Convolutions are visited in the same order every call, so the i-th visit reads
  `past[i]` and appends its own leftover frames to `carry`, the next chunk's `past`.
  """

  def __init__(self, past: list[jax.Array] | None = None):
    self.past = past
    self.carry: list[jax.Array] = []

  @property
  def first(self) -> bool:
    return self.past is None

  def extend(self, x: jax.Array, kernel: int, stride: int) -> jax.Array:
    """Prepends the past (or zeros) to `x` and keeps what the next chunk's windows need."""
    i = len(self.carry)
    if self.past is None:
      x = jnp.pad(x, [(0, 0), (kernel - 1, 0), (0, 0), (0, 0), (0, 0)])
    else:
      x = jnp.concatenate([self.past[i], x], axis=1)
    windows = (x.shape[1] - kernel) // stride + 1
    self.carry.append(x[:, stride * windows:])
    return x


def _kernel_init():
  return nnx.initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


class CausalConv3d(nnx.Module):
  """A 3-D convolution, causal in time ("same" padding in space, past-only in time)."""

  def __init__(self, c_in: int, c_out: int, *, rngs: nnx.Rngs, kernel=(3, 3, 3), stride=(1, 1, 1),
               shard_out: bool = True, zero_init: bool = False):
    self.kernel, self.stride = tuple(kernel), tuple(stride)
    shape = (*self.kernel, c_in, c_out)
    w = jnp.zeros(shape) if zero_init else _kernel_init()(rngs.params(), shape)
    # Small layers (to RGB, to the LFQ bits) stay replicated: their widths need not divide fsdp.
    self.w = param(w, (None, None, None, "conv_in", "conv_out" if shard_out else None))
    self.b = param(jnp.zeros((c_out,)), ("conv_out" if shard_out else None,))

  def __call__(self, x_bthwc: jax.Array, stream: Stream) -> jax.Array:
    x = stream.extend(x_bthwc, self.kernel[0], self.stride[0])
    return conv3d_valid_time(x, self.w[...].astype(x.dtype), self.stride) + self.b[...].astype(x.dtype)


def conv3d_valid_time(x_bthwc: jax.Array, w: jax.Array, stride=(1, 1, 1)) -> jax.Array:
  """3-D convolution, "valid" in time and "same" in space, as a sum of 2-D convolutions.

  One 2-D convolution per time tap over all (batch x frame) images: XLA's CPU backend runs
  these ~4x faster than its 3-D convolution (bench/vidtok_throughput.py), and on GPU/TPU
  the sum fuses just as well.
  """
  kt, kh, kw = w.shape[:3]
  st, sh, sw = stride
  b, t, h, wd, c = x_bthwc.shape
  frames = (t - kt) // st + 1
  y = None
  for k in range(kt):
    taps = x_bthwc[:, k:k + st * (frames - 1) + 1:st].reshape(b * frames, h, wd, c)
    out = jax.lax.conv_general_dilated(
        taps, w[k], (sh, sw), [((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2)],
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    y = out if y is None else y + out
  return y.reshape(b, frames, *y.shape[1:])


class FrameGroupNorm(nnx.Module):
  """GroupNorm with statistics per frame (over H, W and the channels of a group)."""

  def __init__(self, channels: int, groups: int, *, affine: bool = True, eps: float = 1e-6):
    self.groups, self.eps = groups, eps
    self.scale = param(jnp.ones((channels,)), (None,)) if affine else None
    self.bias = param(jnp.zeros((channels,)), (None,)) if affine else None

  def __call__(self, x_bthwc: jax.Array) -> jax.Array:
    b, t, h, w, c = x_bthwc.shape
    x = x_bthwc.reshape(b, t, h, w, self.groups, c // self.groups).astype(jnp.float32)
    mean = x.mean(axis=(2, 3, 5), keepdims=True)
    var = jnp.square(x - mean).mean(axis=(2, 3, 5), keepdims=True)
    y = ((x - mean) * jax.lax.rsqrt(var + self.eps)).reshape(b, t, h, w, c)
    if self.scale is not None:
      y = y * self.scale[...] + self.bias[...]
    return y.astype(x_bthwc.dtype)


class ResBlock(nnx.Module):
  """norm -> SiLU -> conv -> norm -> SiLU -> conv, plus a (1x1x1-projected) skip."""

  def __init__(self, c_in: int, c_out: int, groups: int, *, rngs: nnx.Rngs):
    self.norm1 = FrameGroupNorm(c_in, groups)
    self.conv1 = CausalConv3d(c_in, c_out, rngs=rngs)
    self.norm2 = FrameGroupNorm(c_out, groups)
    # A zero-initialized last conv starts each block as the identity: deep stacks train stably.
    self.conv2 = CausalConv3d(c_out, c_out, rngs=rngs, zero_init=True)
    self.skip = (CausalConv3d(c_in, c_out, rngs=rngs, kernel=(1, 1, 1)) if c_in != c_out else None)

  def __call__(self, x: jax.Array, stream: Stream) -> jax.Array:
    h = self.conv1(nnx.silu(self.norm1(x)), stream)
    h = self.conv2(nnx.silu(self.norm2(h)), stream)
    return h + (x if self.skip is None else self.skip(x, stream))


class Downsample(nnx.Module):
  """Halves height and width, and time when `time` (a stride-2 causal conv: T = 1+2k -> 1+k)."""

  def __init__(self, c_in: int, c_out: int, time: bool, *, rngs: nnx.Rngs):
    self.conv = CausalConv3d(c_in, c_out, rngs=rngs, stride=(2 if time else 1, 2, 2))

  def __call__(self, x: jax.Array, stream: Stream) -> jax.Array:
    return self.conv(x, stream)


class Upsample(nnx.Module):
  """Doubles height and width (and time) by depth-to-space after a causal conv.

  In time, latent frame j becomes frames (2j-1, 2j); the very first output frame would be
  frame -1 and is dropped, so 1+k frames come back as 1+2k (only in the first chunk).
  """

  def __init__(self, c_in: int, c_out: int, time: bool, *, rngs: nnx.Rngs):
    self.time_factor = 2 if time else 1
    self.c_out = c_out
    self.conv = CausalConv3d(c_in, c_out * self.time_factor * 4, rngs=rngs)

  def __call__(self, x: jax.Array, stream: Stream) -> jax.Array:
    y = self.conv(x, stream)
    b, t, h, w, _ = y.shape
    f = self.time_factor
    y = y.reshape(b, t, h, w, f, 2, 2, self.c_out).transpose(0, 1, 4, 2, 5, 3, 6, 7)
    y = y.reshape(b, t * f, h * 2, w * 2, self.c_out)
    return y[:, f - 1:] if stream.first else y
