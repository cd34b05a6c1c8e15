"""The causal audio codec: waveform [B, S] -> RVQ codes [B, L, T] -> waveform [B, T * hop].

SoundStream-style (Zeghidour et al. 2021): a 1-D convolutional encoder of residual units
(dilations 1, 3, 9, ...) and strided downsampling blocks, a residual vector quantizer
(`rvq.py`), and a mirrored decoder. Every convolution is causal (padded on the past side
only), so latent frame j depends on samples < (j + 1) * hop and output sample s on
codes of frames <= s // hop: the codec can stream, and a clip's codes never depend on
audio after it.

Strided layers are causal strided / transposed convolutions with kernel 2s (`layers.py`).
Only `floor(S / hop)` whole frames are encoded: trailing samples of a partial frame are
dropped, and `decode` returns `T * hop` samples.

Shape letters: B batch, S samples, T latent frames, C channels, D latent dim, L levels.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs.schema import AudioCodecConfig
from vidtok.audio.layers import ACTIVATIONS, CausalConv, Downsample, ResidualUnit, Upsample
from vidtok.audio.rvq import Quantized, ResidualVQ


def _widths(cfg: AudioCodecConfig) -> list[int]:
  """Channel width before block 0, after block 0, ..., after the last block."""
  return [cfg.channels] + [cfg.channels * m for m in cfg.channel_mults]


def _residual_stack(cfg: AudioCodecConfig, channels: int, rngs: nnx.Rngs) -> nnx.List:
  return nnx.List([ResidualUnit(channels, cfg.kernel_size, 3 ** i, cfg.activation, rngs=rngs)
                   for i in range(cfg.residual_units)])


class Encoder(nnx.Module):
  """[B, S, 1] -> [B, S / hop, D]."""

  def __init__(self, cfg: AudioCodecConfig, *, rngs: nnx.Rngs):
    widths = _widths(cfg)
    self.act = ACTIVATIONS[cfg.activation]
    self.conv_in = CausalConv(1, cfg.channels, cfg.kernel_size, rngs=rngs)
    self.stacks = nnx.List([_residual_stack(cfg, widths[i], rngs) for i in range(len(cfg.strides))])
    self.downs = nnx.List([Downsample(widths[i], widths[i + 1], s, rngs=rngs)
                           for i, s in enumerate(cfg.strides)])
    self.conv_out = CausalConv(widths[-1], cfg.latent_dim, 3, rngs=rngs)

  def __call__(self, x_bs1: jax.Array) -> jax.Array:
    h = self.conv_in(x_bs1)
    for stack, down in zip(self.stacks, self.downs):
      for unit in stack:
        h = unit(h)
      h = down(self.act(h))
    return self.conv_out(self.act(h))


class Decoder(nnx.Module):
  """[B, T, D] -> [B, T * hop, 1], mirroring the encoder."""

  def __init__(self, cfg: AudioCodecConfig, *, rngs: nnx.Rngs):
    widths = _widths(cfg)
    n = len(cfg.strides)
    self.act = ACTIVATIONS[cfg.activation]
    self.conv_in = CausalConv(cfg.latent_dim, widths[-1], cfg.kernel_size, rngs=rngs)
    # Block i undoes encoder block n - 1 - i.
    self.ups = nnx.List([Upsample(widths[j + 1], widths[j], cfg.strides[j], rngs=rngs)
                         for j in reversed(range(n))])
    self.stacks = nnx.List([_residual_stack(cfg, widths[j], rngs) for j in reversed(range(n))])
    self.conv_out = CausalConv(cfg.channels, 1, cfg.kernel_size, rngs=rngs)

  def __call__(self, z_btd: jax.Array) -> jax.Array:
    h = self.conv_in(z_btd)
    for up, stack in zip(self.ups, self.stacks):
      h = up(self.act(h))
      for unit in stack:
        h = unit(h)
    return self.conv_out(self.act(h))


def check_waveform(wave_bs, cfg: AudioCodecConfig, sample_rate: int | None = None) -> None:
  """Clear errors for waveforms the codec cannot take, before any compute.

  Shape and rate are always checked; values (finite, roughly in [-1, 1]) only when the
  array is concrete (outside jit).
  """
  if sample_rate is not None and sample_rate != cfg.sample_rate:
    raise ValueError(f"audio at {sample_rate} Hz, but the codec runs at {cfg.sample_rate} Hz; "
                     f"resample first: vidtok.audio.prepare(wave, {sample_rate}, {cfg.sample_rate}, "
                     "resample=True).")
  shape = tuple(np.shape(wave_bs))
  if len(shape) != 2:
    hint = (" It looks multi-channel: downmix to mono with vidtok.audio.prepare(..., downmix=True) "
            "per recording." if len(shape) == 3 and min(shape[1:]) <= 8 else "")
    if len(shape) == 1:
      hint = " Add a batch axis: wave[None]."
    raise ValueError(f"waveform of shape {shape}: expected mono float audio [batch, samples].{hint}")
  if shape[1] < cfg.hop:
    raise ValueError(f"waveform of shape {shape} has {shape[1]} samples per example; the codec needs "
                     f"at least one latent frame ({cfg.hop} samples = {1e3 * cfg.hop / cfg.sample_rate:.0f} "
                     "ms). Empty or too-short audio cannot be encoded.")
  if shape[0] == 0:
    raise ValueError(f"waveform of shape {shape}: the batch is empty.")
  if isinstance(wave_bs, jax.core.Tracer):
    return
  if not jnp.issubdtype(np.asarray(wave_bs).dtype, np.floating):
    raise ValueError(f"waveform of dtype {np.asarray(wave_bs).dtype}: expected float samples in "
                     "[-1, 1]; convert integer PCM with vidtok.audio.prepare (int16 / 32768).")
  values = np.asarray(wave_bs)
  if not np.isfinite(values).all():
    bad = np.argwhere(~np.isfinite(values))[0]
    raise ValueError(f"waveform has non-finite values (first at [batch {bad[0]}, sample {bad[1]}]: "
                     f"{values[tuple(bad)]}); clean or drop that recording.")
  peak = float(np.abs(values).max())
  if peak > 2.0:
    raise ValueError(f"waveform peak |x| = {peak:.4g}: expected float audio in [-1, 1]; scale it "
                     "(integer PCM: divide by 32768, or use vidtok.audio.prepare).")


class AudioCodec(nnx.Module):
  """Encoder + residual VQ + decoder, built from an `AudioCodecConfig`."""

  def __init__(self, cfg: AudioCodecConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.encoder = Encoder(cfg, rngs=rngs)
    self.rvq = ResidualVQ(cfg.levels, cfg.codebook_size, cfg.latent_dim, mode=cfg.codebook_mode,
                          ema_decay=cfg.ema_decay, dead_code_threshold=cfg.dead_code_threshold,
                          rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)

  def _trim(self, wave_bs: jax.Array) -> jax.Array:
    frames = wave_bs.shape[1] // self.cfg.hop
    return jnp.asarray(wave_bs, jnp.float32)[:, :frames * self.cfg.hop]

  # The public methods validate eagerly, then run one jitted function of the module's
  # state (compiled once per shape), or inline when already traced (inside jit).
  def latents(self, wave_bs: jax.Array, *, sample_rate: int | None = None) -> jax.Array:
    """Continuous encoder output z [B, floor(S / hop), D] (before quantization)."""
    check_waveform(wave_bs, self.cfg, sample_rate)
    return self._run("_latents", wave_bs, None)

  def encode(self, wave_bs: jax.Array, *, levels: int | None = None,
             sample_rate: int | None = None) -> jax.Array:
    """Mono waveforms [B, S] in [-1, 1] -> int32 codes [B, levels, floor(S / hop)].

    Pass `sample_rate` to have it checked against the codec's rate.
    """
    levels = self._check_levels(levels)
    check_waveform(wave_bs, self.cfg, sample_rate)
    return self._run("_encode", wave_bs, levels)

  def decode(self, codes_blt: jax.Array) -> jax.Array:
    """Codes of the first l <= L levels [B, l, T] -> waveform [B, T * hop]."""
    if not isinstance(codes_blt, jax.core.Tracer):
      codes_blt = np.asarray(codes_blt)
      if not np.issubdtype(codes_blt.dtype, np.integer):
        raise ValueError(f"codes of dtype {codes_blt.dtype}: expected integer codes from encode().")
      if codes_blt.size and (codes_blt.min() < 0 or codes_blt.max() >= self.cfg.codebook_size):
        raise ValueError(f"codes range over [{codes_blt.min()}, {codes_blt.max()}], outside the "
                         f"codebook [0, {self.cfg.codebook_size}).")
    if codes_blt.ndim != 3 or not 1 <= codes_blt.shape[1] <= self.cfg.levels:
      raise ValueError(f"codes of shape {tuple(codes_blt.shape)}: expected [batch, levels in 1.."
                       f"{self.cfg.levels}, frames].")
    return self._run("_decode", codes_blt, None)

  def _latents(self, wave_bs, _):
    return self.encoder(self._trim(wave_bs)[..., None])

  def _encode(self, wave_bs, levels):
    return self.rvq(self._latents(wave_bs, None)).codes_blt[:, :levels]

  def _decode(self, codes_blt, _):
    return self.decoder(self.rvq.dequantize(jnp.asarray(codes_blt, jnp.int32)))[..., 0]

  def _run(self, method: str, x, levels):
    if isinstance(x, jax.core.Tracer):
      return getattr(self, method)(x, levels)
    graphdef, state = nnx.split(self)
    return _apply(graphdef, state, method, jnp.asarray(x), levels)

  def __call__(self, wave_bs: jax.Array, active_bl: jax.Array | None = None
               ) -> tuple[jax.Array, Quantized]:
    """Training pass: reconstruction [B, T * hop] (straight-through) and the RVQ outputs."""
    check_waveform(wave_bs, self.cfg)
    q = self.rvq(self._latents(wave_bs, None), active_bl)
    return self.decoder(q.quantized_btd)[..., 0], q

  def _check_levels(self, levels: int | None) -> int:
    levels = self.cfg.levels if levels is None else levels
    if not 1 <= levels <= self.cfg.levels:
      raise ValueError(f"levels={levels}: the codec has {self.cfg.levels} RVQ levels; use 1.."
                       f"{self.cfg.levels}.")
    return levels


@functools.partial(jax.jit, static_argnums=(0, 2, 4))
def _apply(graphdef, state, method: str, x, levels):
  return getattr(nnx.merge(graphdef, state), method)(x, levels)
