"""Lookup-free quantization (LFQ, MAGVIT-v2): each latent channel is one sign bit.

A token has `d` bits; its code is index = sum_i 2^i [z_i > 0], so the vocabulary is 2**d
and there is no codebook to look up or to collapse. Gradients pass straight through the
sign. Two losses keep the bits useful:

- commitment: ||z - sg(sign z)||^2 pulls latents toward their codes;
- entropy: mean per-position code entropy (be confident) minus gamma x entropy of the
  batch-mean code distribution (use many codes). The code distribution of one position is
  softmax(-||z - c||^2 / tau) over all codes c in {-1, 1}^d, which factorizes into
  independent bits with p(bit_i = 1) = sigmoid(4 z_i / tau). The per-position entropy is
  therefore exact from the bits; the batch mean does not factorize, so the bits are split
  into `groups` sub-groups whose 2**(d/groups)-wide distributions are averaged and their
  entropies summed (exact for one group; an upper bound otherwise). 2**18 codes need two
  512-wide softmaxes per position instead of one 262,144-wide one.

The means run over every position of the (global, sharded) batch, so under `jit` on a
mesh the batch entropy covers all devices' examples.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def bits_to_index(bits: jax.Array) -> jax.Array:
  """Booleans [..., d] -> int32 codes sum_i 2^i bits_i."""
  d = bits.shape[-1]
  return jnp.sum(bits.astype(jnp.int32) << jnp.arange(d, dtype=jnp.int32), axis=-1)


def index_to_bits(index: jax.Array, d: int) -> jax.Array:
  """int codes [...] -> booleans [..., d] (the inverse of `bits_to_index`)."""
  return (jnp.asarray(index, jnp.int32)[..., None] >> jnp.arange(d, dtype=jnp.int32)) & 1 == 1


def index_to_latent(index: jax.Array, d: int, dtype=jnp.float32) -> jax.Array:
  """int codes [...] -> the code's corner of the hypercube, [..., d] in {-1, +1}."""
  return jnp.where(index_to_bits(index, d), 1.0, -1.0).astype(dtype)


def quantize(z: jax.Array) -> tuple[jax.Array, jax.Array]:
  """z [..., d] -> (sign(z) with straight-through gradients, int32 codes [...])."""
  q = jnp.where(z > 0, 1.0, -1.0).astype(z.dtype)
  return z + jax.lax.stop_gradient(q - z), bits_to_index(z > 0)


def commitment_loss(z: jax.Array) -> jax.Array:
  q = jnp.where(z > 0, 1.0, -1.0)
  return jnp.mean(jnp.square(z.astype(jnp.float32) - jax.lax.stop_gradient(q)))


def _group_code_bits(bits_per_group: int) -> np.ndarray:
  """[2**k, k] table: row c holds the bits of code c."""
  codes = np.arange(2 ** bits_per_group)
  return ((codes[:, None] >> np.arange(bits_per_group)) & 1).astype(np.float32)


def entropy_terms(z_nd: jax.Array, temperature: float, groups: int = 1) -> tuple[jax.Array, jax.Array]:
  """(mean per-position code entropy, entropy of the batch-mean code distribution), in nats.

  z_nd: latents [N, d] of every position in the batch.
  """
  n, d = z_nd.shape
  logits = 4.0 * z_nd.astype(jnp.float32) / temperature          # log p(1) - log p(0), per bit
  log_p1, log_p0 = jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)
  per_position = -jnp.sum(jnp.exp(log_p1) * log_p1 + jnp.exp(log_p0) * log_p0, axis=-1).mean()

  k = d // groups
  table = jnp.asarray(_group_code_bits(k))                          # [2**k, k]
  log_p1 = log_p1.reshape(n, groups, k)
  log_p0 = log_p0.reshape(n, groups, k)
  # log p(code c of group g) = sum over the group's bits of log p(bit value).
  log_codes = (jnp.einsum("ngk,ck->ngc", log_p1, table)
               + jnp.einsum("ngk,ck->ngc", log_p0, 1.0 - table))   # [N, groups, 2**k]
  mean_p = jnp.exp(log_codes).mean(axis=0)                          # [groups, 2**k]
  batch = -jnp.sum(mean_p * jnp.log(jnp.maximum(mean_p, 1e-30)))
  return per_position, batch


def entropy_loss(z_nd: jax.Array, temperature: float, gamma: float, groups: int = 1) -> jax.Array:
  per_position, batch = entropy_terms(z_nd, temperature, groups)
  return per_position - gamma * batch


def codebook_health(codes: jax.Array, d: int) -> dict[str, jax.Array]:
  """Usage telemetry of a batch of codes: fraction of the 2**d codes used, the entropy of
  the code histogram in bits (at most log2 of the number of positions), per-bit balance."""
  flat = codes.reshape(-1)
  counts = jnp.bincount(flat, length=2 ** d)
  p = counts / flat.size
  bits_on = index_to_bits(flat, d).mean(axis=0)                     # P(bit i = 1), ideally 0.5
  return {
      "codes_used": jnp.sum(counts > 0),
      "usage_fraction": jnp.mean(counts > 0),
      "usage_entropy_bits": -jnp.sum(jnp.where(p > 0, p * jnp.log2(jnp.maximum(p, 1e-30)), 0.0)),
      "bit_balance_min": jnp.min(bits_on),
      "bit_balance_max": jnp.max(bits_on),
  }
