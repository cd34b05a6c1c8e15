"""Causal 1-D convolution layers of the audio codec (and its discriminator).

Every convolution pads only on the past side, so output step t depends on inputs <= t.
Strided layers are reshapes around stride-1 convolutions:
- downsampling by s: fold s consecutive steps into channels, then a causal kernel-2
  conv: exactly a causal strided conv with kernel 2s and stride s;
- upsampling by s: a causal kernel-2 conv to s x channels, then unfold: exactly a causal
  transposed conv with kernel 2s and stride s (output s*j + r reads frames j and j - 1).

Weights are drawn on the host with numpy (`host_normal`): creating a module eagerly then
compiles nothing, where a `jax.random` draw per distinct weight shape costs an XLA
compile each (seconds per model on a busy CPU). Under tracing (`nnx.eval_shape`, a
jitted init) the draw falls back to `jax.random`, so abstract creation still works.

Weights carry no logical axis names: the codec is small (a few million parameters), so it
is replicated and scales by splitting the batch (`act_batch`); conv axes have no entry
in the mesh rules (`configs.schema.DEFAULT_RULES`).

Shape letters: B batch, T time steps, C channels.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def host_normal(rngs: nnx.Rngs, shape: tuple[int, ...], std: float = 1.0) -> jax.Array:
  """std * N(0, 1) of `shape`, seeded from the next `rngs.params()` key."""
  key = rngs.params()
  if isinstance(key, jax.core.Tracer):
    return std * jax.random.normal(key, shape, jnp.float32)
  seed = np.asarray(jax.random.key_data(key)).reshape(-1)
  return jnp.asarray(std * np.random.default_rng(seed).standard_normal(shape), jnp.float32)


ACTIVATIONS = {"elu": jax.nn.elu, "silu": jax.nn.silu}


class CausalConv(nnx.Module):
  """1-D convolution over [B, T, C] that pads (kernel - 1) * dilation steps of the past."""

  def __init__(self, c_in: int, c_out: int, kernel: int, *, dilation: int = 1,
               scale: float = 1.0, rngs: nnx.Rngs):
    self.kernel, self.dilation = kernel, dilation
    self.kernel_kio = nnx.Param(host_normal(rngs, (kernel, c_in, c_out), scale / (c_in * kernel) ** 0.5))
    self.bias_o = nnx.Param(jnp.asarray(np.zeros((c_out,), np.float32)))

  def __call__(self, x_btc: jax.Array) -> jax.Array:
    pad = (self.kernel - 1) * self.dilation
    x_btc = jnp.pad(x_btc, ((0, 0), (pad, 0), (0, 0)))
    y_btc = jax.lax.conv_general_dilated(
        x_btc, self.kernel_kio[...], window_strides=(1,), padding="VALID",
        rhs_dilation=(self.dilation,), dimension_numbers=("NWC", "WIO", "NWC"))
    return y_btc + self.bias_o[...]


class ResidualUnit(nnx.Module):
  """x + conv1x1(act(conv_k,dilated(act(x)))): widens the receptive field without downsampling."""

  def __init__(self, channels: int, kernel: int, dilation: int, activation: str, *, rngs: nnx.Rngs):
    self.act = ACTIVATIONS[activation]
    self.conv = CausalConv(channels, channels, kernel, dilation=dilation, rngs=rngs)
    # A small output scale keeps the residual stack close to identity at initialization.
    self.proj = CausalConv(channels, channels, 1, scale=0.3, rngs=rngs)

  def __call__(self, x_btc: jax.Array) -> jax.Array:
    return x_btc + self.proj(self.act(self.conv(self.act(x_btc))))


class Downsample(nnx.Module):
  """Causal strided conv (kernel 2s, stride s): [B, T, C_in] -> [B, T / s, C_out]."""

  def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
    self.stride = stride
    self.conv = CausalConv(c_in * stride, c_out, 2, rngs=rngs)

  def __call__(self, x_btc: jax.Array) -> jax.Array:
    b, t, c = x_btc.shape
    return self.conv(x_btc.reshape(b, t // self.stride, self.stride * c))


class Upsample(nnx.Module):
  """Causal transposed conv (kernel 2s, stride s): [B, T, C_in] -> [B, T * s, C_out]."""

  def __init__(self, c_in: int, c_out: int, stride: int, *, rngs: nnx.Rngs):
    self.stride, self.c_out = stride, c_out
    self.conv = CausalConv(c_in, c_out * stride, 2, rngs=rngs)

  def __call__(self, x_btc: jax.Array) -> jax.Array:
    b, t, _ = x_btc.shape
    return self.conv(x_btc).reshape(b, t * self.stride, self.c_out)
