"""A 3-D convolutional discriminator for tokenizer GAN training.

Non-causal (it judges whole clips): strided 3x3x3 convolutions with leaky ReLU, halving
space every block and time while more than two frames remain, then a per-patch logit.
No normalization layers, so the R1 penalty and LeCAM regularization act on a plain
function of the pixels. A one-frame input (image tokenizer) works: time is never strided.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sharding import param


class Discriminator(nnx.Module):
  def __init__(self, channels: int, blocks: int = 3, *, rngs: nnx.Rngs):
    init = nnx.initializers.variance_scaling(2.0, "fan_in", "truncated_normal")  # He: leaky ReLU
    widths = [channels * 2 ** min(i, 3) for i in range(blocks + 1)]
    self.kernels = nnx.List([param(init(rngs.params(), (3, 3, 3, c_in, c_out)),
                                   (None, None, None, "conv_in", "conv_out"))
                             for c_in, c_out in zip([3] + widths[:-1], widths)])
    self.biases = nnx.List([param(jnp.zeros((c,)), ("conv_out",)) for c in widths])
    self.head = param(init(rngs.params(), (1, 1, 1, widths[-1], 1)), (None, None, None, "conv_in", None))

  def __call__(self, video_bthwc: jax.Array) -> jax.Array:
    """Patch logits [B, t, h, w] (real > 0)."""
    x = video_bthwc
    for i, (w, b) in enumerate(zip(self.kernels, self.biases)):
      time_stride = 2 if (i > 0 and x.shape[1] > 2) else 1
      stride = (1, 1, 1) if i == 0 else (time_stride, 2, 2)
      x = jax.lax.conv_general_dilated(x, w[...], stride, "SAME",
                                       dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + b[...]
      x = jax.nn.leaky_relu(x, 0.2)
    logits = jax.lax.conv_general_dilated(x, self.head[...], (1, 1, 1), "VALID",
                                          dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return logits[..., 0]
