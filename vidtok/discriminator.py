"""A 3-D convolutional discriminator for tokenizer GAN training.

Non-causal (it judges whole clips): strided 3x3x3 convolutions with leaky ReLU, halving
space at every layer and time (after the first) while more than two frames remain, then a per-patch logit.
No normalization layers, so the R1 penalty and LeCAM regularization act on a plain
function of the pixels. A one-frame input (image tokenizer) works: time is never strided.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sharding import param
from vidtok.layers import conv3d_valid_time


class Discriminator(nnx.Module):
  def __init__(self, channels: int, blocks: int = 3, *, rngs: nnx.Rngs):
    init = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")  # He: leaky ReLU
    widths = [channels * 2 ** min(i, 3) for i in range(blocks + 1)]
    self.kernels = nnx.List([param(init(rngs.params(), (3, 3, 3, c_in, c_out)),
                                   (None, None, None, "conv_in", "conv_out"))
                             for c_in, c_out in zip([3] + widths[:-1], widths)])
    self.biases = nnx.List([param(jnp.zeros((c,)), ("conv_out",)) for c in widths])
    self.head = param(init(rngs.params(), (widths[-1], 1)), ("conv_in", None))

  def __call__(self, video_bthwc: jax.Array) -> jax.Array:
    """Patch logits [B, t, h, w] (real > 0)."""
    x = video_bthwc
    for i, (w, b) in enumerate(zip(self.kernels, self.biases)):
      # Space halves at every layer (the first one too: D need not see single pixels).
      stride = (2 if (i > 0 and x.shape[1] > 2) else 1, 2, 2)
      x = jnp.pad(x, [(0, 0), (1, 1), (0, 0), (0, 0), (0, 0)])  # "same" in time
      x = conv3d_valid_time(x, w[...], stride) + b[...]
      x = jax.nn.leaky_relu(x, 0.2)
    return (x @ self.head[...])[..., 0]
