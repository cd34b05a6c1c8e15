"""Residual vector quantization (RVQ): L levels of K codes, each quantizing what the
levels before it left over (SoundStream, Zeghidour et al. 2021).

Level l assigns every residual vector to its nearest code (squared Euclidean distance);
the quantized latent is the sum of the chosen codes and passes gradients straight
through to the encoder, which a commitment loss pulls towards its codes. Codebooks learn
either by exponential moving averages of the vectors assigned to each code ("ema": the
codebook is a `CodebookVar`, updated by `update_codebooks` in the train step, never by
the optimizer) or by gradient ("straight_through": the codebook is an `nnx.Param` and a
codebook loss pulls codes towards their vectors). In both modes a code whose EMA usage
falls below a threshold is restarted at a random vector of the batch, and per-level usage
(fraction of codes hit, entropy in bits) is reported.

Quantizer dropout trains each example with a random number of levels, so decoding with
fewer levels (a coarser, shorter token sequence) still gives sensible audio.

Shape letters: B batch, T latent frames, D latent dim, L levels, K codes per level,
N = B * T vectors.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from configs.schema import CODEBOOK_MODES
from vidtok.audio.layers import host_normal


class CodebookVar(nnx.Variable):
  """A codebook updated by EMA in the train step (excluded from the optimizer)."""


class CodebookStat(nnx.Variable):
  """EMA statistics of code usage: assignment counts and assigned-vector sums."""


@struct.dataclass
class Quantized:
  """What one RVQ pass produces; the residuals and mask feed `update_codebooks`."""
  quantized_btd: jax.Array   # sum of the active levels' codes, straight-through to the encoder
  codes_blt: jax.Array       # int32 code of every level and frame (inactive levels too)
  residuals_lbtd: jax.Array  # what each level quantized (its input)
  active_bl: jax.Array       # bool: level l was used for example b (quantizer dropout)
  commitment: jax.Array      # mean ||r - sg(q)||^2 over active levels, summed over levels
  codebook_loss: jax.Array   # mean ||sg(r) - q||^2 (straight-through mode; 0 in EMA mode)


def nearest_code(x_nd: jax.Array, codebook_kd: jax.Array) -> jax.Array:
  """Index of the nearest code (squared Euclidean distance) for each row of x."""
  dist_nk = (jnp.sum(x_nd * x_nd, -1, keepdims=True) - 2.0 * x_nd @ codebook_kd.T
             + jnp.sum(codebook_kd * codebook_kd, -1)[None, :])
  return jnp.argmin(dist_nk, axis=-1).astype(jnp.int32)


def dropout_levels(key: jax.Array, batch: int, levels: int, prob: float) -> jax.Array:
  """active_bl: with probability `prob` an example keeps a uniform 1..L levels, else all L."""
  k_use, k_n = jax.random.split(key)
  n_b = jnp.where(jax.random.uniform(k_use, (batch,)) < prob,
                  jax.random.randint(k_n, (batch,), 1, levels + 1), levels)
  return jnp.arange(levels)[None, :] < n_b[:, None]


def usage_stats(counts_lk: jax.Array) -> dict[str, jax.Array]:
  """Per-level fraction of codes used and entropy (bits) of the code histogram."""
  total_l = jnp.maximum(counts_lk.sum(-1, keepdims=True), 1e-9)
  p_lk = counts_lk / total_l
  entropy_l = -jnp.sum(jnp.where(p_lk > 0, p_lk * jnp.log2(jnp.where(p_lk > 0, p_lk, 1.0)), 0.0), -1)
  return {"used_fraction": jnp.mean(counts_lk > 0, axis=-1), "entropy_bits": entropy_l}


class ResidualVQ(nnx.Module):
  """L levels x K codes over D-dim latents."""

  def __init__(self, levels: int, codebook_size: int, dim: int, *, mode: str = "ema",
               ema_decay: float = 0.99, dead_code_threshold: float = 0.5, rngs: nnx.Rngs):
    if mode not in CODEBOOK_MODES:
      raise ValueError(f"codebook mode {mode!r}: expected one of {list(CODEBOOK_MODES)}.")
    self.levels, self.codebook_size, self.dim = levels, codebook_size, dim
    self.mode, self.ema_decay, self.dead_code_threshold = mode, ema_decay, dead_code_threshold
    # Placeholder codes: with zero usage every code is "dead", so the first update restarts
    # them all at vectors of the first batch (a data-dependent initialization).
    init_lkd = host_normal(rngs, (levels, codebook_size, dim), 0.1)
    self.codebook_lkd = nnx.Param(init_lkd) if mode == "straight_through" else CodebookVar(init_lkd)
    self.ema_count_lk = CodebookStat(jnp.asarray(np.zeros((levels, codebook_size), np.float32)))
    self.ema_sum_lkd = CodebookStat(jnp.asarray(np.zeros((levels, codebook_size, dim), np.float32)))

  def __call__(self, z_btd: jax.Array, active_bl: jax.Array | None = None) -> Quantized:
    """Quantizes z with the active levels (default: all). Pure: updates nothing."""
    b, t, d = z_btd.shape
    if d != self.dim:
      raise ValueError(f"latent dim {d} does not match the RVQ dim {self.dim}.")
    if active_bl is None:
      active_bl = jnp.ones((b, self.levels), bool)
    codebook_lkd = self.codebook_lkd[...]
    residual_btd = z_btd
    quantized_btd = jnp.zeros_like(z_btd)
    codes, residuals = [], []
    commitment = codebook_loss = jnp.zeros((), jnp.float32)
    for level in range(self.levels):
      mask_b11 = active_bl[:, level].astype(z_btd.dtype)[:, None, None]
      codes_bt = nearest_code(residual_btd.reshape(-1, d), jax.lax.stop_gradient(codebook_lkd[level]))
      codes_bt = codes_bt.reshape(b, t)
      q_btd = codebook_lkd[level][codes_bt]
      denom = jnp.maximum(jnp.sum(mask_b11) * t * d, 1.0)
      commitment += jnp.sum(mask_b11 * (residual_btd - jax.lax.stop_gradient(q_btd)) ** 2) / denom
      if self.mode == "straight_through":
        codebook_loss += jnp.sum(mask_b11 * (jax.lax.stop_gradient(residual_btd) - q_btd) ** 2) / denom
      q_btd = jax.lax.stop_gradient(q_btd)
      codes.append(codes_bt)
      residuals.append(residual_btd)
      quantized_btd = quantized_btd + mask_b11 * q_btd
      residual_btd = residual_btd - mask_b11 * q_btd
    # Straight-through: the forward value is the quantized latent, the gradient is identity.
    quantized_btd = z_btd + jax.lax.stop_gradient(quantized_btd - z_btd)
    return Quantized(quantized_btd=quantized_btd, codes_blt=jnp.stack(codes, axis=1),
                     residuals_lbtd=jnp.stack(residuals), active_bl=active_bl,
                     commitment=commitment, codebook_loss=codebook_loss)

  def dequantize(self, codes_blt: jax.Array) -> jax.Array:
    """Codes of the first l <= L levels -> the summed latent [B, T, D]."""
    if codes_blt.ndim != 3 or not 1 <= codes_blt.shape[1] <= self.levels:
      raise ValueError(f"codes of shape {tuple(codes_blt.shape)}: expected [batch, levels in 1.."
                       f"{self.levels}, frames].")
    codebook_lkd = self.codebook_lkd[...]
    return sum(codebook_lkd[level][codes_blt[:, level]] for level in range(codes_blt.shape[1]))

  def update_codebooks(self, out: Quantized, key: jax.Array) -> dict[str, jax.Array]:
    """One EMA step of usage statistics (and codebooks in EMA mode), then dead-code restarts.

    Uses the residuals the forward pass quantized, so levels are updated from the same
    pass the gradients came from. Returns per-level usage of this batch [L].
    """
    residuals_lbtd = jax.lax.stop_gradient(out.residuals_lbtd)
    n, d, k = residuals_lbtd.shape[1] * residuals_lbtd.shape[2], self.dim, self.codebook_size
    decay = self.ema_decay
    codebook_lkd = self.codebook_lkd[...]
    count_lk, sum_lkd = self.ema_count_lk[...], self.ema_sum_lkd[...]
    new_codebooks, new_counts, new_sums, batch_counts, restarted = [], [], [], [], []
    for level, key_l in enumerate(jax.random.split(key, self.levels)):
      x_nd = residuals_lbtd[level].reshape(n, d)
      weight_n = jnp.broadcast_to(out.active_bl[:, level, None], out.codes_blt[:, level].shape)
      weight_n = weight_n.reshape(n).astype(jnp.float32)
      onehot_nk = jax.nn.one_hot(out.codes_blt[:, level].reshape(n), k) * weight_n[:, None]
      hits_k = onehot_nk.sum(0)
      count_k = decay * count_lk[level] + (1 - decay) * hits_k
      sum_kd = decay * sum_lkd[level] + (1 - decay) * (onehot_nk.T @ x_nd)
      codes_kd = codebook_lkd[level]
      if self.mode == "ema":
        # Laplace smoothing keeps rarely used codes finite; they are restarted below anyway.
        total = count_k.sum()
        smoothed_k = (count_k + 1e-5) / (total + k * 1e-5) * total
        codes_kd = jnp.where(count_k[:, None] > 0, sum_kd / jnp.maximum(smoothed_k, 1e-12)[:, None],
                             codes_kd)
      # Dead codes restart at random vectors this level saw (only from active examples).
      # Their count is reset to twice the threshold: an unused code gets about
      # ln 2 / (1 - decay) steps to attract vectors before the next restart.
      dead_k = count_k < self.dead_code_threshold
      logits_n = jnp.where(weight_n > 0, 0.0, -jnp.inf)
      pick_k = jax.random.categorical(key_l, logits_n, shape=(k,))
      fresh_kd = x_nd[pick_k]
      reset = 2.0 * self.dead_code_threshold
      any_active = weight_n.sum() > 0
      dead_k = dead_k & any_active
      codes_kd = jnp.where(dead_k[:, None], fresh_kd, codes_kd)
      sum_kd = jnp.where(dead_k[:, None], fresh_kd * reset, sum_kd)
      count_k = jnp.where(dead_k, reset, count_k)
      new_codebooks.append(codes_kd)
      new_counts.append(count_k)
      new_sums.append(sum_kd)
      batch_counts.append(hits_k)
      restarted.append(dead_k)
    self.codebook_lkd[...] = jnp.stack(new_codebooks)
    self.ema_count_lk[...] = jnp.stack(new_counts)
    self.ema_sum_lkd[...] = jnp.stack(new_sums)
    counts_lk = jnp.stack(batch_counts)
    stats = usage_stats(counts_lk)
    stats["restarted_fraction"] = jnp.mean(jnp.stack(restarted), axis=-1)
    return stats
