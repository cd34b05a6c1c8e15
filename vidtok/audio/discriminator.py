"""The optional multi-scale waveform discriminator (MelGAN / SoundStream style).

Scale i sees the waveform average-pooled by 2**i; each scale is a stack of 1-D convs
(LeakyReLU 0.2) that downsample by 4 per strided layer (kernel 8) and end in one logit
per position. It returns the logits and every hidden feature map, for the adversarial
and feature-matching losses in `losses.py`. Built from the codec's causal layers: each
logit judges a window of the past, which is as good a view as a centered one for a
critic that never runs at inference.

Shape letters: B batch, S samples, T positions, C channels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from configs.schema import AudioCodecConfig
from vidtok.audio.layers import CausalConv, Downsample


class ScaleDiscriminator(nnx.Module):
  """One scale: [B, S] -> logits [B, T], feature maps [B, T_i, C_i]."""

  def __init__(self, channels: int, downsamples: int, *, rngs: nnx.Rngs):
    widths = [min(channels * 4 ** i, channels * 16) for i in range(downsamples + 1)]
    self.conv_in = CausalConv(1, widths[0], 15, rngs=rngs)
    self.downs = nnx.List([Downsample(widths[i], widths[i + 1], 4, rngs=rngs)
                           for i in range(downsamples)])
    self.conv_mid = CausalConv(widths[-1], widths[-1], 5, rngs=rngs)
    self.conv_out = CausalConv(widths[-1], 1, 3, rngs=rngs)

  def __call__(self, wave_bs: jax.Array) -> tuple[jax.Array, list[jax.Array]]:
    features = []
    h = jax.nn.leaky_relu(self.conv_in(wave_bs[..., None]), 0.2)
    features.append(h)
    for down in self.downs:
      t = h.shape[1] - h.shape[1] % 4  # Downsample folds whole groups of 4 steps
      h = jax.nn.leaky_relu(down(h[:, :t]), 0.2)
      features.append(h)
    h = jax.nn.leaky_relu(self.conv_mid(h), 0.2)
    features.append(h)
    return self.conv_out(h)[..., 0], features


class MultiScaleDiscriminator(nnx.Module):
  """`disc_scales` scale discriminators on the waveform pooled by 1, 2, 4, ..."""

  def __init__(self, cfg: AudioCodecConfig, *, rngs: nnx.Rngs):
    self.scales = nnx.List([ScaleDiscriminator(cfg.disc_channels, cfg.disc_downsamples, rngs=rngs)
                            for _ in range(cfg.disc_scales)])

  def __call__(self, wave_bs: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
    """Logits of every scale, and the feature maps of all scales (flattened in order)."""
    logits, features = [], []
    x_bs = wave_bs
    for i, scale in enumerate(self.scales):
      if i:
        b, s = x_bs.shape
        x_bs = jnp.mean(x_bs[:, :s - s % 2].reshape(b, s // 2, 2), axis=-1)
      logit_bt, feats = scale(x_bs)
      logits.append(logit_bt)
      features.extend(feats)
    return logits, features
