"""Next-token cross-entropy without materializing float32 [B, T, V] logits.

`fused_cross_entropy` walks the sequence in chunks; each chunk computes its logits, its
loss and - when differentiated - at once its gradients with respect to the hidden states
and the output projection, so the backward pass neither stores nor recomputes logits.
For a 298k vocabulary this is the difference between ~2.4 GB and ~0.3 GB of logits per
2048-token sequence, at the FLOPs of a plain head (1 forward + 2 backward matmuls).

An optional z-loss (z * logsumexp^2) keeps the softmax normalizer near 1.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lm.layers import dense
from sharding import shard


def _chunks(a, chunk):
  """[B, T, ...] -> [T / chunk, B, chunk, ...] (T padded with zeros to a multiple)."""
  b, t = a.shape[:2]
  pad = -t % chunk
  a = jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
  return a.reshape(b, (t + pad) // chunk, chunk, *a.shape[2:]).swapaxes(0, 1)


def _unchunk(a, t):
  n, b, c = a.shape[:3]
  return a.swapaxes(0, 1).reshape(b, n * c, *a.shape[3:])[:, :t]


def _ce(x_btd, w_dv, targets_bt, weights_bt, chunk, z_loss, with_grads, impl="xla"):
  t = x_btd.shape[1]
  chunk = min(chunk or t, t)
  w = w_dv.astype(x_btd.dtype)

  def body(dw_dv, xs):
    x_bcd, tgt_bc, wt_bc = xs
    if impl == "xla":
      logits = jnp.einsum("bcd,dv->bcv", x_bcd, w, preferred_element_type=jnp.float32)
    else:  # BLAS on [B*C, D] matrices
      logits = dense(x_bcd, w, impl).astype(jnp.float32)
    logits = shard(logits, "act_batch", "act_length", "act_vocab")
    lse_bc = jax.nn.logsumexp(logits, axis=-1)
    tgt_logit_bc = jnp.take_along_axis(logits, tgt_bc[..., None], axis=-1)[..., 0]
    loss_bc = lse_bc - tgt_logit_bc
    objective = jnp.sum(wt_bc * (loss_bc + z_loss * lse_bc ** 2))
    if not with_grads:
      return dw_dv, (objective, loss_bc, None)
    # d objective / d logits = w * (softmax * (1 + 2 z lse) - onehot(target)).
    probs = jnp.exp(logits - lse_bc[..., None])
    onehot = jax.nn.one_hot(tgt_bc, logits.shape[-1], dtype=logits.dtype)
    g_bcv = (probs * (1 + 2 * z_loss * lse_bc)[..., None] - onehot) * wt_bc[..., None]
    g_bcv = g_bcv.astype(x_bcd.dtype)
    if impl == "xla":
      dx_bcd = jnp.einsum("bcv,dv->bcd", g_bcv, w, preferred_element_type=jnp.float32)
      dw_dv = dw_dv + jnp.einsum("bcd,bcv->dv", x_bcd, g_bcv, preferred_element_type=jnp.float32)
    else:
      x_md, g_mv = x_bcd.reshape(-1, x_bcd.shape[-1]), g_bcv.reshape(-1, g_bcv.shape[-1])
      dx_bcd = dense(g_mv, w, impl, trans_b=True).astype(jnp.float32).reshape(x_bcd.shape)
      dw_dv = dw_dv + dense(x_md, g_mv, impl, trans_a=True).astype(jnp.float32)
    return shard(dw_dv, "embed", "vocab"), (objective, loss_bc, dx_bcd)

  dw0 = shard(jnp.zeros(w_dv.shape, jnp.float32), "embed", "vocab")
  xs = (_chunks(x_btd, chunk), _chunks(targets_bt, chunk), _chunks(weights_bt.astype(jnp.float32), chunk))
  dw_dv, (objective_n, loss_nbc, dx) = jax.lax.scan(body, dw0, xs)
  loss_bt = _unchunk(loss_nbc, t)
  if not with_grads:
    return jnp.sum(objective_n), loss_bt
  return jnp.sum(objective_n), loss_bt, _unchunk(dx, t).astype(x_btd.dtype), dw_dv.astype(w_dv.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def fused_cross_entropy(x_btd, w_dv, targets_bt, weights_bt, chunk: int = 256, z_loss: float = 0.0,
                        impl: str = "xla"):
  """Returns (sum_t weights * (CE + z_loss * lse^2), per-token CE [B, T]).

  x_btd: hidden states; w_dv: output projection; targets_bt: int ids; weights_bt: float
  loss weights (pass mask / mask.sum() for a mean). Only the first output is
  differentiable, and only in reverse mode, with respect to x and w: the gradient to
  `weights` is zero and the per-token loss is for metrics. impl: the matmuls' (lm/layers.py `dense`).
  """
  return _ce(x_btd, w_dv, targets_bt, weights_bt, chunk, z_loss, False, impl)


def _fwd(x_btd, w_dv, targets_bt, weights_bt, chunk, z_loss, impl):
  total, loss_bt, dx, dw = _ce(x_btd, w_dv, targets_bt, weights_bt, chunk, z_loss, True, impl)
  return (total, loss_bt), (dx, dw, targets_bt, weights_bt)


def _bwd(chunk, z_loss, impl, residuals, cotangents):
  dx, dw, targets_bt, weights_bt = residuals
  ct_total, _ = cotangents  # the per-token loss is not differentiated
  return dx * ct_total.astype(dx.dtype), dw * ct_total, None, jnp.zeros_like(weights_bt)


fused_cross_entropy.defvjp(_fwd, _bwd)


def next_token_loss(model, tokens_bt, input_mask_bt, loss_mask_bt, segment_ids_bt=None, text_emb_bse=None):
  """Mean cross-entropy of predicting tokens[t+1] from tokens[:t+1] where loss_mask[t+1].

  Returns (objective incl. z-loss, metrics dict with `loss` (CE only) and `tokens`).
  """
  cfg = model.cfg
  inputs, targets = tokens_bt[:, :-1], tokens_bt[:, 1:]
  segs = None if segment_ids_bt is None else segment_ids_bt[:, :-1]
  weights = loss_mask_bt[:, 1:].astype(jnp.float32)
  # A target inside the bidirectional prefix is visible to its own query: never a label.
  weights = weights * ~(input_mask_bt[:, :-1].astype(bool) & input_mask_bt[:, 1:].astype(bool))
  if segment_ids_bt is not None:  # never predict padding or across a packed-sequence boundary
    weights = weights * ((segment_ids_bt[:, 1:] == segment_ids_bt[:, :-1]) & (segment_ids_bt[:, 1:] != 0))
  count = jnp.maximum(jnp.sum(weights), 1.0)
  x_btd = model.hidden(inputs, input_mask_bt[:, :-1], segs, text_emb_bse=text_emb_bse)
  objective, loss_bt = fused_cross_entropy(x_btd, model.head_dv(), targets, weights / count,
                                           cfg.loss_chunk, cfg.z_loss, cfg.matmul_impl)
  ce = jnp.sum(jax.lax.stop_gradient(loss_bt) * weights) / count
  return objective, {"loss": ce, "tokens": jnp.sum(weights)}
