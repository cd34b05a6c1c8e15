"""The causal video tokenizer: encoder -> LFQ or FSQ -> decoder (after MAGVIT-v2).

  tok = VideoTokenizer(cfg, rngs=nnx.Rngs(0))
  codes = tok.encode(video)        # float [B, 1+4k, H, W, 3] in [-1, 1] -> int32 [B, 1+k, H/8, W/8]
  video = tok.decode(codes)        # -> float [B, 1+4k, H, W, 3]
  codes = encode_chunks(tok, long_video, chunk_latents=3)   # equals tok.encode(long_video)

Token order inside the LM is time-major, then rows, then columns: `codes.reshape(B, -1)`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs.schema import VidtokConfig
from vidtok import fsq, lfq
from vidtok.layers import CausalConv3d, Downsample, FrameGroupNorm, ResBlock, Stream, Upsample


def check_video(video, cfg: VidtokConfig) -> None:
  """Raises ValueError naming the problem when `video` is not a tokenizer input."""
  shape = tuple(video.shape)
  if len(shape) != 5 or shape[-1] != 3:
    raise ValueError(f"video of shape {shape}: expected [batch, frames, height, width, 3] RGB "
                     "(add a batch axis with video[None]; drop alpha with video[..., :3]).")
  _, t, h, w, _ = shape
  tf, sf = cfg.time_factor, cfg.space_factor
  if (t - 1) % tf:
    raise ValueError(f"video has {t} frames; the causal tokenizer needs 1 + {tf}k frames "
                     f"(e.g. {1 + tf * ((t - 1) // tf)} or {1 + tf * ((t - 1) // tf + 1)}): trim or pad the clip.")
  if h % sf or w % sf:
    raise ValueError(f"video frames of {h}x{w}: height and width must be multiples of {sf} "
                     "(the spatial compression); resize or crop.")
  if not isinstance(video, jax.core.Tracer):
    lo, hi = float(jnp.min(video)), float(jnp.max(video))
    if lo < -1.5 or hi > 1.5 or not np.isfinite(lo + hi):
      raise ValueError(f"video values span [{lo:.3g}, {hi:.3g}]; expected floats in [-1, 1] "
                       "(uint8 frames: x / 127.5 - 1).")


def space_to_depth(x_bthwc: jax.Array, p: int) -> jax.Array:
  """[B, T, H, W, C] -> [B, T, H/p, W/p, p*p*C]: each p x p pixel block becomes one position."""
  if p == 1:
    return x_bthwc
  b, t, h, w, c = x_bthwc.shape
  x = x_bthwc.reshape(b, t, h // p, p, w // p, p, c).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, h // p, w // p, p * p * c)


def depth_to_space(x_bthwc: jax.Array, p: int) -> jax.Array:
  """The inverse of `space_to_depth`."""
  if p == 1:
    return x_bthwc
  b, t, h, w, c = x_bthwc.shape
  x = x_bthwc.reshape(b, t, h, w, p, p, c // (p * p)).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, h * p, w * p, c // (p * p))


class Encoder(nnx.Module):
  def __init__(self, cfg: VidtokConfig, *, rngs: nnx.Rngs):
    widths = [cfg.channels * m for m in cfg.multipliers]
    self.patch = cfg.patch
    self.conv_in = CausalConv3d(3 * cfg.patch ** 2, widths[0], rngs=rngs)
    blocks, c = [], widths[0]
    for i, width in enumerate(widths):
      for _ in range(cfg.res_blocks):
        blocks.append(ResBlock(c, width, cfg.norm_groups, rngs=rngs))
        c = width
      if i < len(widths) - 1:
        blocks.append(Downsample(c, c, cfg.time_downsample[i], rngs=rngs))
    blocks.append(ResBlock(c, c, cfg.norm_groups, rngs=rngs))
    self.blocks = nnx.List(blocks)
    self.norm_out = FrameGroupNorm(c, cfg.norm_groups)
    self.conv_out = CausalConv3d(c, cfg.latent_dim, rngs=rngs, kernel=(1, 1, 1), shard_out=False)
    # Unit-scale latents (no affine) so the sign bits and the entropy temperature mean the
    # same thing throughout training.
    self.norm_bits = FrameGroupNorm(cfg.latent_dim, 1, affine=False)

  def __call__(self, video: jax.Array, stream: Stream) -> jax.Array:
    x = self.conv_in(space_to_depth(video, self.patch), stream)
    for block in self.blocks:
      x = block(x, stream)
    return self.norm_bits(self.conv_out(nnx.silu(self.norm_out(x)), stream))


class Decoder(nnx.Module):
  def __init__(self, cfg: VidtokConfig, *, rngs: nnx.Rngs):
    widths = [cfg.channels * m for m in cfg.multipliers]
    c = widths[-1]
    self.conv_in = CausalConv3d(cfg.latent_dim, c, rngs=rngs)
    blocks = [ResBlock(c, c, cfg.norm_groups, rngs=rngs)]
    for i in reversed(range(len(widths))):
      for _ in range(cfg.res_blocks):
        blocks.append(ResBlock(c, widths[i], cfg.norm_groups, rngs=rngs))
        c = widths[i]
      if i > 0:
        blocks.append(Upsample(c, widths[i - 1], cfg.time_downsample[i - 1], rngs=rngs))
        c = widths[i - 1]
    self.blocks = nnx.List(blocks)
    self.norm_out = FrameGroupNorm(c, cfg.norm_groups)
    self.patch = cfg.patch
    self.conv_out = CausalConv3d(c, 3 * cfg.patch ** 2, rngs=rngs, shard_out=False)

  def __call__(self, q: jax.Array, stream: Stream) -> jax.Array:
    x = self.conv_in(q, stream)
    for block in self.blocks:
      x = block(x, stream)
    return depth_to_space(self.conv_out(nnx.silu(self.norm_out(x)), stream), self.patch)


def quantize(z: jax.Array, cfg: VidtokConfig) -> tuple[jax.Array, jax.Array]:
  """Latents [..., latent_dim] -> (quantized latents, straight-through; int32 codes [...])."""
  return fsq.quantize(z, cfg.fsq_levels) if cfg.quantizer == "fsq" else lfq.quantize(z)


def codes_to_latent(codes: jax.Array, cfg: VidtokConfig, dtype=jnp.float32) -> jax.Array:
  """int32 codes [...] -> the quantized latents [..., latent_dim] the decoder reads."""
  if cfg.quantizer == "fsq":
    return fsq.index_to_latent(codes, cfg.fsq_levels, dtype)
  return lfq.index_to_latent(codes, cfg.bits, dtype)


class VideoTokenizer(nnx.Module):
  """Encoder, lookup-free quantizer and decoder of one `VidtokConfig`."""

  def __init__(self, cfg: VidtokConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)

  def __call__(self, video: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training pass: (reconstruction, latents z [B,t,h,w,d], codes [B,t,h,w])."""
    z = self.encoder(video, Stream())
    q, codes = quantize(z, self.cfg)
    return self.decoder(q, Stream()), z, codes

  def encode(self, video: jax.Array) -> jax.Array:
    check_video(video, self.cfg)
    return quantize(self.encoder(video, Stream()), self.cfg)[1]

  def decode(self, codes: jax.Array) -> jax.Array:
    return self.decoder(codes_to_latent(codes, self.cfg), Stream())


# --- long videos in causal chunks ---------------------------------------------------------
@nnx.jit
def _encode_chunk(model: VideoTokenizer, video, past):
  stream = Stream(past)
  codes = quantize(model.encoder(video, stream), model.cfg)[1]
  return codes, stream.carry


@nnx.jit
def _decode_chunk(model: VideoTokenizer, codes, past):
  stream = Stream(past)
  video = model.decoder(codes_to_latent(codes, model.cfg), stream)
  return video, stream.carry


def encode_chunks(model: VideoTokenizer, video, chunk_latents: int) -> jax.Array:
  """Encodes a video of any length 1 + 4k, `chunk_latents` latent frames at a time.

  Each chunk reuses the causal convolutions' past frames from the one before, so the
  codes equal a single pass while memory stays that of one chunk. Two compiles: the first
  chunk (1 + 4(m-1) frames) and the rest (4m frames; a shorter last chunk adds one).
  """
  check_video(video, model.cfg)
  if chunk_latents < 1:
    raise ValueError(f"chunk_latents={chunk_latents} must be >= 1.")
  tf = model.cfg.time_factor
  bounds = [0, min(1 + tf * (chunk_latents - 1), video.shape[1])]
  while bounds[-1] < video.shape[1]:
    bounds.append(min(bounds[-1] + tf * chunk_latents, video.shape[1]))
  out, past = [], None
  for start, stop in zip(bounds[:-1], bounds[1:]):
    codes, past = _encode_chunk(model, jnp.asarray(video[:, start:stop]), past)
    out.append(codes)
  return jnp.concatenate(out, axis=1)


def decode_chunks(model: VideoTokenizer, codes, chunk_latents: int) -> jax.Array:
  """Decodes codes [B, t, h, w] `chunk_latents` latent frames at a time (equals `decode`)."""
  if chunk_latents < 1:
    raise ValueError(f"chunk_latents={chunk_latents} must be >= 1.")
  out, past = [], None
  for start in range(0, codes.shape[1], chunk_latents):
    video, past = _decode_chunk(model, jnp.asarray(codes[:, start:start + chunk_latents]), past)
    out.append(video)
  return jnp.concatenate(out, axis=1)
