"""Prefix-LM attention: bidirectional inside each sequence's prefix, causal after it.

Which key `k` a query `q` may see is decided from three length-T vectors, never from a
stored T x T mask:

  visible(q, k) = seg[q] == seg[k] != 0  and  (k <= q  or  prefix[q] and prefix[k])

`seg` are segment ids (0 marks padding, packed sequences count 1, 2, ...) and `prefix` is
the input mask (1 on the conditioning prefix). Queries run in blocks of `block`; query
block i reads only keys [0, end_i) - the block-causal part - unless some prefix in the
batch reaches past end_i, in which case a `lax.cond` takes the full key range for that
block. On a mostly-causal sequence of 5 blocks this skips 40% of the attention work
(10 of 25 block pairs); smaller blocks skip more but run smaller matmuls.

Three implementations (`LmConfig.attention_impl`); the first two share this blocking:
- "blockwise": scores, softmax and a hand-written backward in plain XLA ops (custom VJP;
  the backward recomputes scores from the saved log-sum-exp like flash attention). On a
  2-core CPU at [4, 1280, 8, 64], forward + backward take 373 ms against 703 ms for the
  same blocks through the generic kernel's autodiff, and 1,378 ms for one unblocked call.
- "dot_product_attention": each block calls `jax.nn.dot_product_attention` under
  autodiff. With jax 0.10 that is its XLA implementation on every backend; it is the
  hook for a backend kernel (cuDNN, TPU splash attention), not yet wired to one.
- "cpu": the same math as one fused C++ kernel per direction (lm/kernels/attention_cpu.cc,
  called through XLA FFI; CPU only). Each 64-query tile's scores, softmax and products stay
  in cache and key chunks past the tile's last visible key are skipped: 127 ms forward +
  backward at the shape above, against 350 ms for "blockwise" (bench/NOTES.md). `block` does
  not apply to it.

Shapes: B batch, T query length, S key length, N heads, G kv heads, R = N / G query heads
per kv head, K head dim, Q query block.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from configs.schema import ATTENTION_IMPLS

_MASKED = -0.7 * float(jnp.finfo(jnp.float32).max)


def visible_mask(q_idx_t, q_seg_bt, q_pre_bt, k_idx_s, k_seg_bs, k_pre_bs):
  """bool [B, T, S]: which keys each query may attend to (the rule in the module docstring)."""
  same = (q_seg_bt[:, :, None] == k_seg_bs[:, None, :]) & (k_seg_bs[:, None, :] != 0)
  causal = k_idx_s[None, None, :] <= q_idx_t[None, :, None]
  both_prefix = q_pre_bt[:, :, None] & k_pre_bs[:, None, :]
  return same & (causal | both_prefix)


def attend(q_btnk, k_bsgk, v_bsgk, mask_bts):
  """One `jax.nn.dot_product_attention` call with a [B, T, S] boolean mask."""
  out = jax.nn.dot_product_attention(q_btnk, k_bsgk, v_bsgk, mask=mask_bts[:, None])
  # A query that sees no key (a padding row) gets a uniform average from the kernel;
  # zero it so padding carries nothing forward.
  return jnp.where(jnp.any(mask_bts, axis=-1)[:, :, None, None], out, 0).astype(q_btnk.dtype)


def _blocks(t: int, block: int) -> list[tuple[int, int]]:
  block = t if block <= 0 else min(block, t)
  return [(s, min(s + block, t)) for s in range(0, t, block)]


def _block_mask(start, end, segment_ids_bt, prefix_bt):
  idx = jnp.arange(segment_ids_bt.shape[1])
  return visible_mask(idx[start:end], segment_ids_bt[:, start:end], prefix_bt[:, start:end],
                      idx, segment_ids_bt, prefix_bt)


def _by_key_range(mask_bqs, end, causal_fn, full_fn, *args):
  """Runs `causal_fn` (keys [0, end)) unless a visible key lies at or past `end`."""
  if end == mask_bqs.shape[-1]:
    return full_fn(*args)
  return jax.lax.cond(jnp.any(mask_bqs[:, :, end:]), full_fn, causal_fn, *args)


def _reaches_past_block(segment_ids_bt, prefix_bt, block):
  """True when some query sees a key past its block's end (a prefix longer than a block).

  One check per layer: when it is False, every block runs block-causally with no
  per-block `lax.cond` (whose operand copies cost ~4% of a CPU training step).
  """
  reach = [jnp.any(_block_mask(s, e, segment_ids_bt, prefix_bt)[:, :, e:])
           for s, e in _blocks(segment_ids_bt.shape[1], block)[:-1]]
  return jnp.any(jnp.stack(reach)) if reach else jnp.asarray(False)


def prefix_lm_attention(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, *, block: int,
                        impl: str = "blockwise"):
  """Self-attention under the prefix-LM rule, run block-causally (see module docstring)."""
  prefix_bt = prefix_bt.astype(bool)
  if impl == "cpu":
    from lm.kernels.attention_cpu import cpu_attention  # builds the kernel on first use
    return cpu_attention(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt)
  if impl == "blockwise":
    return _blockwise(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, block)
  if impl != "dot_product_attention":
    raise ValueError(f"attention impl {impl!r} is not one of {ATTENTION_IMPLS}.")
  outs = []
  for start, end in _blocks(q_btnk.shape[1], block):
    mask = _block_mask(start, end, segment_ids_bt, prefix_bt)
    causal = lambda q, m, end=end: attend(q, k_btgk[:, :end], v_btgk[:, :end], m[:, :, :end])
    full = lambda q, m: attend(q, k_btgk, v_btgk, m)
    outs.append(_by_key_range(mask, end, causal, full, q_btnk[:, start:end], mask))
  return jnp.concatenate(outs, axis=1)


# --- blockwise: forward and backward written out ---------------------------------------

def _q_groups(q_btnk, g: int):
  b, t, n, kd = q_btnk.shape
  return q_btnk.reshape(b, t, g, n // g, kd).transpose(0, 2, 3, 1, 4)  # [B, G, R, T, K]


def _to_groups(q_btnk, k_btgk, v_btgk):
  g = k_btgk.shape[2]
  return _q_groups(q_btnk, g), k_btgk.transpose(0, 2, 1, 3), v_btgk.transpose(0, 2, 1, 3)


def _from_groups(x_bgrtk):
  b, g, r, t, kd = x_bgrtk.shape
  return x_bgrtk.transpose(0, 3, 1, 2, 4).reshape(b, t, g * r, kd)


def _scores(q_bgrqk, k_bgsk, mask_bqs):
  s = jnp.einsum("bgrqk,bgsk->bgrqs", q_bgrqk, k_bgsk, preferred_element_type=jnp.float32)
  return jnp.where(mask_bqs[:, None, None], s, _MASKED)


def _fwd_block(q, k, v, mask):
  s = _scores(q, k, mask)
  m = jnp.max(s, axis=-1, keepdims=True)
  p = jnp.exp(s - m)
  l = jnp.sum(p, axis=-1, keepdims=True)
  o = jnp.einsum("bgrqs,bgsk->bgrqk", p.astype(v.dtype), v, preferred_element_type=jnp.float32)
  seen = jnp.any(mask, axis=-1)[:, None, None, :, None]  # rows with no visible key -> 0
  o = jnp.where(seen, o / l, 0).astype(q.dtype)
  return o, (m + jnp.log(l))[..., 0]


def _forward(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, block):
  scale = q_btnk.shape[-1] ** -0.5
  q, k, v = _to_groups(q_btnk * jnp.asarray(scale, q_btnk.dtype), k_btgk, v_btgk)

  def run(adaptive: bool):
    outs, lses = [], []
    for start, end in _blocks(q.shape[3], block):
      mask = _block_mask(start, end, segment_ids_bt, prefix_bt)
      causal = lambda q, m, end=end: _fwd_block(q, k[:, :, :end], v[:, :, :end], m[:, :, :end])
      full = lambda q, m: _fwd_block(q, k, v, m)
      args = (q[:, :, :, start:end], mask)
      o, lse = _by_key_range(mask, end, causal, full, *args) if adaptive else causal(*args)
      outs.append(o)
      lses.append(lse)
    return jnp.concatenate(outs, axis=3), jnp.concatenate(lses, axis=3)

  o, lse = jax.lax.cond(_reaches_past_block(segment_ids_bt, prefix_bt, block),
                        lambda: run(True), lambda: run(False))
  return _from_groups(o), (o, lse)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _blockwise(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, block):
  return _forward(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, block)[0]


def _blockwise_fwd(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, block):
  out, (o, lse) = _forward(q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, block)
  return out, (q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, o, lse)


def _bwd_block(q, k, v, mask, do, delta, lse):
  """Gradients of one query block against keys k, v (recomputing the probabilities).

  dk and dv come out transposed ([B, G, K, S]): as do^T @ p and q^T @ ds they are plain
  matmuls whose only transposed operand is a small [K, Q] one; in [S, K] layout XLA's CPU
  backend transposes the [Q, S] probabilities instead, block after block.
  """
  p = jnp.exp(_scores(q, k, mask) - lse[..., None])
  p = jnp.where(mask[:, None, None], p, 0.0)
  dv_t = jnp.einsum("bgrqk,bgrqs->bgks", do, p.astype(do.dtype), preferred_element_type=jnp.float32)
  dp = jnp.einsum("bgrqk,bgsk->bgrqs", do, v, preferred_element_type=jnp.float32)
  ds = (p * (dp - delta[..., None])).astype(q.dtype)
  dq = jnp.einsum("bgrqs,bgsk->bgrqk", ds, k, preferred_element_type=jnp.float32)
  dk_t = jnp.einsum("bgrqk,bgrqs->bgks", q, ds, preferred_element_type=jnp.float32)
  return dq, dk_t, dv_t


def _blockwise_bwd(block, residuals, do_btnk):
  q_btnk, k_btgk, v_btgk, segment_ids_bt, prefix_bt, o, lse = residuals
  scale = q_btnk.shape[-1] ** -0.5
  q, k, v = _to_groups(q_btnk * jnp.asarray(scale, q_btnk.dtype), k_btgk, v_btgk)
  do = _q_groups(do_btnk, k_btgk.shape[2])
  delta = jnp.sum(do.astype(jnp.float32) * o.astype(jnp.float32), axis=-1)  # [B, G, R, T]
  blocks = _blocks(q.shape[3], block)

  def run(adaptive: bool):
    return _backward_blocks(q, k, v, do, delta, lse, segment_ids_bt, prefix_bt, blocks, adaptive)

  dq, dk, dv = jax.lax.cond(_reaches_past_block(segment_ids_bt, prefix_bt, block),
                            lambda: run(True), lambda: run(False))
  dq = _from_groups(dq * scale).astype(q_btnk.dtype)
  dk = dk.transpose(0, 3, 1, 2).astype(k_btgk.dtype)  # [B, G, K, S] -> [B, S, G, K]; q was pre-scaled
  dv = dv.transpose(0, 3, 1, 2).astype(v_btgk.dtype)
  return dq, dk, dv, None, None


def _backward_blocks(q, k, v, do, delta, lse, segment_ids_bt, prefix_bt, blocks, adaptive):
  """Gradients block by block. Each query block gives its gradient to keys [0, end)
  ("main") and, when a prefix reached further, to keys [end, S) ("extra", zeros on the
  causal path); each key block then sums the parts that cover it. dk, dv: [B, G, K, S]."""
  s_len = k.shape[2]
  dqs, dkv_main, dkv_extra = [], [], []
  for start, end in blocks:
    mask = _block_mask(start, end, segment_ids_bt, prefix_bt)
    sl = slice(start, end)

    def causal(q, do, delta, lse, mask, end=end):
      dq, dk, dv = _bwd_block(q, k[:, :, :end], v[:, :, :end], mask[:, :, :end], do, delta, lse)
      rest = jnp.zeros(dk.shape[:3] + (s_len - end,), dk.dtype)
      return dq, (dk, dv), (rest, rest)

    def full(q, do, delta, lse, mask, end=end):
      dq, dk, dv = _bwd_block(q, k, v, mask, do, delta, lse)
      return dq, (dk[..., :end], dv[..., :end]), (dk[..., end:], dv[..., end:])

    args = (q[:, :, :, sl], do[:, :, :, sl], delta[..., sl], lse[..., sl], mask)
    dq, main, extra = _by_key_range(mask, end, causal, full, *args) if adaptive else causal(*args)
    dqs.append(dq)
    dkv_main.append((end, main))
    if end < s_len:
      dkv_extra.append((end, extra))

  def key_block_sum(ks, ke, which):
    """Sum of all query blocks' gradients to keys [ks, ke) (which: 0 = dk, 1 = dv)."""
    total = [m[which][..., ks:ke] for end, m in dkv_main if end >= ke]
    total += [e[which][..., ks - end:ke - end] for end, e in dkv_extra if end <= ks]
    return sum(total)

  dk = jnp.concatenate([key_block_sum(ks, ke, 0) for ks, ke in blocks], axis=-1)
  dv = jnp.concatenate([key_block_sum(ks, ke, 1) for ks, ke in blocks], axis=-1)
  return jnp.concatenate(dqs, axis=3), dk, dv


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)
