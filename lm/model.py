"""The decoder-only prefix-LM transformer over the unified text/video/audio vocabulary.

Pre-norm blocks (RMSNorm) with rotary positions, grouped-query attention (optional
QK-norm) and a SwiGLU MLP, stacked with `nnx.vmap` and run with `nnx.scan` (under
`nnx.remat` with the config's policy). Parameters are float32 and carry logical axis
names; compute runs in `cfg.dtype`. Decoding uses a KV cache: `prefill` then
`decode_step`, which equal one full forward pass. The decode step unrolls the layers over
per-layer weight views (`layer_views`) and a cache of one array per layer, so each layer
reads its weights and cache in place.

Shape letters: B batch, T length, S cache length, D embed, N heads, G kv heads, K head
dim, F MLP width, V vocab, L layers, E text-encoder width.

With `cfg.text_dim = E > 0` the caption is a frozen encoder's embedding sequence `text_emb_bse`
(lm/text_encoder.py): the tokens between <bot_i> and <eot_i> are placeholders whose input
vectors are the projected embeddings (E -> D, learned), in order. They sit in the prefix, so they
are attended bidirectionally and carry no loss; the null caption (guidance) is `<bot_i> <eot_i>`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from configs.schema import LmConfig
from lm.attention import prefix_lm_attention
from lm.layers import RMSNorm, dense, rope, swiglu
from lm.vocab import SPECIAL_TOKENS
from sharding import param, shard

ACT_BTD = ("act_batch", "act_length", "act_embed")
ACT_BTNK = ("act_batch", "act_length", "act_heads", "act_head_dim")
ACT_BTGK = ("act_batch", "act_length", "act_kv_heads", "act_head_dim")
# The KV cache holds one head-major [B, G, S, K] array per layer: a decode step's attention
# then reads each head's keys as one contiguous [S, K] matrix (3.4x faster than [B, S, G, K]
# on CPU), and each layer reads and updates its own buffer in place (a stacked [L, ...] cache
# made XLA copy the layer's slice out every step).
CACHE_BGSK = ("act_batch", "act_kv_heads", "act_length", "act_head_dim")


_TRUNCATED_STD = 0.87962566  # std of a standard normal truncated to [-2, 2]


def _param(rngs: nnx.Rngs, shape, fan_in: int, names) -> nnx.Param:
  """A weight with variance 1 / fan_in (LeCun normal, truncated at 2 sigma)."""
  init = jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape, jnp.float32)
  return param(init * (1.0 / fan_in) ** 0.5 / _TRUNCATED_STD, names)


def segment_positions(segment_ids_bt):
  """0, 1, 2, ... restarting wherever the segment id changes (packed sequences)."""
  idx_t = jnp.arange(segment_ids_bt.shape[1])
  starts = jnp.concatenate([jnp.ones_like(segment_ids_bt[:, :1], bool),
                            segment_ids_bt[:, 1:] != segment_ids_bt[:, :-1]], axis=1)
  return idx_t - jax.lax.cummax(jnp.where(starts, idx_t, 0), axis=1)


@struct.dataclass
class KVCache:
  """Keys and values of every layer for decoding.

  k, v: tuples of L arrays [B, G, S, K] (head-major, see CACHE_BGSK); valid_bs: which slots hold a
  real token; index: next slot to write (shared by the batch); position_b: the rotary position of
  each row's next token.
  """
  k: tuple[jax.Array, ...]
  v: tuple[jax.Array, ...]
  valid_bs: jax.Array
  index: jax.Array
  position_b: jax.Array


class Attention(nnx.Module):
  """Grouped-query self-attention with rotary positions and optional QK-norm."""

  def __init__(self, cfg: LmConfig, *, rngs: nnx.Rngs):
    d, n, g, k = cfg.embed, cfg.heads, cfg.kv_heads, cfg.head_size
    self.cfg = cfg
    self.wq = _param(rngs, (d, n, k), d, ("embed", "heads", "head_dim"))
    self.wk = _param(rngs, (d, g, k), d, ("embed", "kv_heads", "head_dim"))
    self.wv = _param(rngs, (d, g, k), d, ("embed", "kv_heads", "head_dim"))
    self.wo = _param(rngs, (n, k, d), n * k, ("heads", "head_dim", "embed"))
    if cfg.qk_norm:
      self.q_norm = RMSNorm(k, eps=cfg.norm_eps)
      self.k_norm = RMSNorm(k, eps=cfg.norm_eps)

  def qkv(self, x_btd, positions_bt):
    # Over a sequence, one matmul for the projections whose weights stack on a new axis
    # ([D, 3, N, K], or [D, 2, G, K] for k and v under grouped-query attention): heads
    # keep their sharding, and forward and backward run one larger matmul instead of
    # three (5% of a CPU training step). A decode step (T = 1) reads each weight once
    # instead: there the stacking copy would double the weight traffic.
    dt = x_btd.dtype
    wq, wk, wv = self.wq[...].astype(dt), self.wk[...].astype(dt), self.wv[...].astype(dt)
    if x_btd.shape[1] == 1:
      q, k, v = (jnp.einsum("btd,dnk->btnk", x_btd, w) for w in (wq, wk, wv))
    elif wq.shape == wk.shape:
      qkv = dense(x_btd, jnp.stack([wq, wk, wv], axis=1), self.cfg.matmul_impl)  # [B, T, 3, N, K]
      q, k, v = _unstack(shard(qkv, "act_batch", "act_length", None, "act_heads", "act_head_dim"))
    else:
      q = dense(x_btd, wq, self.cfg.matmul_impl)
      k, v = _unstack(dense(x_btd, jnp.stack([wk, wv], axis=1), self.cfg.matmul_impl))
    if self.cfg.qk_norm:
      q, k = self.q_norm(q), self.k_norm(k)
    q = shard(rope(q, positions_bt, self.cfg.rope_theta), *ACT_BTNK)
    k = shard(rope(k, positions_bt, self.cfg.rope_theta), *ACT_BTGK)
    return q, k, shard(v, *ACT_BTGK)

  def out(self, o_btnk):
    impl = self.cfg.matmul_impl if o_btnk.shape[1] > 1 else "xla"  # decode steps: XLA's own
    return shard(dense(o_btnk, self.wo[...].astype(o_btnk.dtype), impl, contract=2), *ACT_BTD)


@jax.custom_vjp
def _unstack(x_btc___):
  return [x_btc___[:, :, i] for i in range(x_btc___.shape[2])]


def _unstack_fwd(x_btc___):
  return _unstack(x_btc___), None


def _unstack_bwd(_, grads):
  # One stack of the three gradients. Autodiff of the slices would pad each into a zero
  # [B, T, 3, ...] buffer and add them (four full passes; 5% of a CPU training step).
  return (jnp.stack(grads, axis=2),)


_unstack.defvjp(_unstack_fwd, _unstack_bwd)


class Mlp(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: LmConfig, *, rngs: nnx.Rngs):
    self.matmul_impl = cfg.matmul_impl
    self.w_gate = _param(rngs, (cfg.embed, cfg.mlp), cfg.embed, ("embed", "mlp"))
    self.w_up = _param(rngs, (cfg.embed, cfg.mlp), cfg.embed, ("embed", "mlp"))
    self.w_out = _param(rngs, (cfg.mlp, cfg.embed), cfg.mlp, ("mlp", "embed"))

  def __call__(self, x_btd):
    dt = x_btd.dtype
    impl = self.matmul_impl if x_btd.shape[1] > 1 else "xla"  # decode steps: XLA's own
    y_btd = swiglu(x_btd, self.w_gate[...].astype(dt), self.w_up[...].astype(dt),
                   self.w_out[...].astype(dt), impl)
    return shard(y_btd, *ACT_BTD)


class Block(nnx.Module):
  """x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, cfg: LmConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.attn_norm = RMSNorm(cfg.embed, eps=cfg.norm_eps)
    self.attn = Attention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.embed, eps=cfg.norm_eps)
    self.mlp = Mlp(cfg, rngs=rngs)

  def __call__(self, x_btd, segment_ids_bt, prefix_bt, positions_bt):
    """Full-sequence forward; also returns this layer's keys and values (for prefill)."""
    q, k, v = self.attn.qkv(self.attn_norm(x_btd), positions_bt)
    o = prefix_lm_attention(q, k, v, segment_ids_bt, prefix_bt, block=self.cfg.attention_block,
                            impl=self.cfg.attention_impl)
    x_btd = x_btd + self.attn.out(o)
    return x_btd + self.mlp(self.mlp_norm(x_btd)), (k, v)

  def decode(self, x_b1d, k_bgsk, v_bgsk, valid_bs, index, position_b):
    """One new token per row against this layer's cache; returns (x, k_bgsk, v_bgsk) with the
    new key and value written at slot `index` (in place when the cache is donated).

    valid_bs marks the cached slots the token attends to besides itself. Call it on a
    per-layer view (`Transformer.layer_views`), not on the stacked blocks."""
    q, k_new, v_new = self.attn.qkv(self.attn_norm(x_b1d), position_b[:, None])
    k_new_bg1k = k_new.transpose(0, 2, 1, 3).astype(k_bgsk.dtype)
    v_new_bg1k = v_new.transpose(0, 2, 1, 3).astype(v_bgsk.dtype)
    # Attention reads the cache as it came in, plus the new key and value; the write comes
    # after. Reading back from the write instead, XLA's CPU fusion duplicated the write into
    # the attention's operand at batch 1 (a bitcast dropping B): two writers of one buffer
    # and four copies of the layer's cache per step.
    o = decode_attention(q, k_bgsk, v_bgsk, valid_bs, k_new_bg1k, v_new_bg1k)
    k_new_bg1k, v_new_bg1k = _after(o, k_new_bg1k, v_new_bg1k)
    k_bgsk = jax.lax.dynamic_update_slice(k_bgsk, k_new_bg1k, (0, 0, index, 0))
    v_bgsk = jax.lax.dynamic_update_slice(v_bgsk, v_new_bg1k, (0, 0, index, 0))
    # The output projection as one [B, N * K] x [N * K, D] matmul: as "btnk,nkd->btd", XLA's CPU
    # layout assignment transposed `wo` (a copy of it per layer and step).
    b, _, n, kd = o.shape
    wo_ed = self.attn.wo[...].astype(o.dtype).reshape(n * kd, -1)
    x_b1d = x_b1d + shard((o.reshape(b, n * kd) @ wo_ed)[:, None], *ACT_BTD)
    return x_b1d + self.mlp(self.mlp_norm(x_b1d)), k_bgsk, v_bgsk


def _after(dep, *xs):
  """xs unchanged, but data-dependent on `dep` (NaN if dep's first element is NaN).

  XLA's CPU copy insertion orders an in-place update after the other readers of its buffer
  only through data dependencies: with the attention and the cache write independent, it
  copies each layer's cache twice per step to be safe. Writing values that depend on the
  attention's output makes the write provably later, so it happens in place.
  """
  nan = jnp.isnan(dep.reshape(-1)[0])
  return tuple(jnp.where(nan, jnp.nan, x).astype(x.dtype) for x in xs)


def decode_attention(q_b1nk, k_bgsk, v_bgsk, valid_bs, k_new_bg1k, v_new_bg1k):
  """One query per row against a head-major cache (its `valid_bs` slots) plus the row's own new
  key and value: [B, 1, N, K].

  Query head n reads kv head n // R (R = N / G), as in grouped-query attention.
  """
  b, _, n, kd = q_b1nk.shape
  g = k_bgsk.shape[1]
  dt = q_b1nk.dtype
  q_bgrk = q_b1nk.reshape(b, g, n // g, kd) * jnp.asarray(kd ** -0.5, dt)
  scores_bgrs = jnp.einsum("bgrk,bgsk->bgrs", q_bgrk, k_bgsk.astype(dt), preferred_element_type=jnp.float32)
  scores_bgrs = jnp.where(valid_bs[:, None, None, :], scores_bgrs, -jnp.inf)
  self_bgr1 = jnp.einsum("bgrk,bgsk->bgrs", q_bgrk, k_new_bg1k.astype(dt), preferred_element_type=jnp.float32)
  # Softmax over the cached slots and the token itself (always valid, so never all -inf).
  m_bgr1 = jnp.maximum(jnp.max(scores_bgrs, axis=-1, keepdims=True), self_bgr1)
  p_bgrs, p_self_bgr1 = jnp.exp(scores_bgrs - m_bgr1), jnp.exp(self_bgr1 - m_bgr1)
  total_bgr1 = jnp.sum(p_bgrs, axis=-1, keepdims=True) + p_self_bgr1
  o_bgrk = (jnp.einsum("bgrs,bgsk->bgrk", p_bgrs.astype(dt), v_bgsk.astype(dt), preferred_element_type=jnp.float32)
            + p_self_bgr1 * v_new_bg1k.astype(jnp.float32)) / total_bgr1
  return o_bgrk.astype(dt).reshape(b, 1, n, kd)


class Transformer(nnx.Module):
  """Token ids -> hidden states -> logits, with a KV cache for decoding."""

  def __init__(self, cfg: LmConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    self.embedding = param(jax.random.normal(rngs.params(), (cfg.vocab, cfg.embed), jnp.float32),
                           ("vocab", "embed"))

    @nnx.split_rngs(splits=cfg.layers)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    @nnx.transform_metadata(in_axes=(0,), out_axes=0, partition="layers")
    def make_blocks(rngs):
      return Block(cfg, rngs=rngs)

    self.blocks = make_blocks(rngs)
    self.final_norm = RMSNorm(cfg.embed, eps=cfg.norm_eps)
    if not cfg.tie_embeddings:
      self.head = _param(rngs, (cfg.embed, cfg.vocab), cfg.embed, ("embed", "vocab"))
    if cfg.text_dim:
      self.text_proj = _param(rngs, (cfg.text_dim, cfg.embed), cfg.text_dim, (None, "embed"))

  @property
  def dtype(self):
    if self.cfg.dtype == "auto":
      return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
    return jnp.dtype(self.cfg.dtype)

  def head_dv(self) -> jax.Array:
    """The output projection [D, V] (the scaled, transposed embedding when tied)."""
    if self.cfg.tie_embeddings:
      return self.embedding[...].T * (1.0 / self.cfg.embed ** 0.5)
    return self.head[...]

  def embed(self, tokens_bt, text_emb_bse=None):
    """Token embeddings [B, T, D]; with `text_emb_bse` the caption slot's placeholders take the
    projected text embeddings, the i-th position inside <bot_i> ... <eot_i> reading row i."""
    x = jnp.take(self.embedding[...], tokens_bt, axis=0).astype(self.dtype)
    if text_emb_bse is not None:
      if not self.cfg.text_dim:
        raise ValueError("text embeddings given to a model without lm.text_dim (a pieces model).")
      bot, eot = SPECIAL_TOKENS.index("bot_i"), SPECIAL_TOKENS.index("eot_i")
      opened = jnp.cumsum(tokens_bt == bot, axis=1) - jnp.cumsum(tokens_bt == eot, axis=1)
      in_text_bt = (opened == 1) & (tokens_bt != bot)
      index_bt = jnp.clip(jnp.cumsum(in_text_bt, axis=1) - 1, 0, text_emb_bse.shape[1] - 1)
      emb_btd = jnp.take_along_axis(text_emb_bse.astype(self.dtype), index_bt[..., None], axis=1) \
          @ self.text_proj[...].astype(self.dtype)
      x = jnp.where(in_text_bt[..., None], emb_btd, x)
    return shard(x, *ACT_BTD)

  def hidden(self, tokens_bt, input_mask_bt=None, segment_ids_bt=None, positions_bt=None,
             *, return_kv: bool = False, text_emb_bse=None):
    """Final-normed hidden states [B, T, D] (and per-layer keys/values if `return_kv`).

    input_mask_bt: 1 on the bidirectional prefix (default: none, a plain causal LM).
    segment_ids_bt: packed-sequence ids, 0 on padding (default: one segment, no padding).
    positions_bt: rotary positions (default: counted from 0 at the start of each segment).
    text_emb_bse: the captions' encoder embeddings (models with lm.text_dim; see `embed`).
    """
    b, t = tokens_bt.shape
    if input_mask_bt is None:
      input_mask_bt = jnp.zeros((b, t), bool)
    if segment_ids_bt is None:
      segment_ids_bt = jnp.ones((b, t), jnp.int32)
    if positions_bt is None:
      positions_bt = segment_positions(segment_ids_bt)
    x = self.embed(tokens_bt, text_emb_bse)

    def layer(x, block):
      x, kv = block(x, segment_ids_bt, input_mask_bt, positions_bt)
      return x, (kv if return_kv else None)

    if self.cfg.remat_policy != "none":
      policy = getattr(jax.checkpoint_policies, self.cfg.remat_policy)
      layer = nnx.remat(layer, policy=policy, prevent_cse=False)
    x, kv = nnx.scan(layer, in_axes=(nnx.Carry, 0), out_axes=(nnx.Carry, 0),
                     unroll=min(self.cfg.scan_unroll, self.cfg.layers))(x, self.blocks)
    x = self.final_norm(x)
    return (x, kv) if return_kv else x

  def logits(self, x_btd):
    """float32 logits of hidden states (full vocabulary; for training use lm.loss)."""
    logits = jnp.einsum("...d,dv->...v", x_btd, self.head_dv().astype(x_btd.dtype),
                        preferred_element_type=jnp.float32)
    return logits

  def __call__(self, tokens_bt, input_mask_bt=None, segment_ids_bt=None, positions_bt=None, text_emb_bse=None):
    return self.logits(self.hidden(tokens_bt, input_mask_bt, segment_ids_bt, positions_bt,
                                   text_emb_bse=text_emb_bse))

  # --- decoding ---------------------------------------------------------------------

  def prefill(self, tokens_bt, input_mask_bt=None, valid_bt=None, *, cache_len: int, text_emb_bse=None):
    """Runs the prompt and returns (logits [B, V] of each row's last valid token, cache).

    valid_bt marks real prompt tokens (False on right padding); decoding continues every
    row at slot T with rotary position = its number of valid tokens.
    """
    b, t = tokens_bt.shape
    if cache_len < t:
      raise ValueError(f"cache_len={cache_len} is shorter than the prompt length {t}.")
    if valid_bt is None:
      valid_bt = jnp.ones((b, t), bool)
    valid_bt = valid_bt.astype(bool)
    positions_bt = jnp.maximum(jnp.cumsum(valid_bt, axis=1) - 1, 0)
    x, (k, v) = self.hidden(tokens_bt, input_mask_bt, valid_bt.astype(jnp.int32), positions_bt,
                            return_kv=True, text_emb_bse=text_emb_bse)
    pad = [(0, 0), (0, 0), (0, cache_len - t), (0, 0)]
    head_major = lambda x_lbtgk: tuple(shard(jnp.pad(x_btgk.transpose(0, 2, 1, 3), pad), *CACHE_BGSK)
                                       for x_btgk in x_lbtgk)
    cache = KVCache(
        k=head_major(k), v=head_major(v),
        valid_bs=jnp.pad(valid_bt, [(0, 0), (0, cache_len - t)]),
        index=jnp.asarray(t, jnp.int32), position_b=jnp.sum(valid_bt, axis=1).astype(jnp.int32))
    last_b = t - 1 - jnp.argmax(valid_bt[:, ::-1], axis=1)
    last_bd = jnp.take_along_axis(x, last_b[:, None, None], axis=1)[:, 0]
    return self.logits(last_bd), cache

  def layer_views(self) -> tuple[Block, ...]:
    """The stacked blocks as L per-layer Blocks whose weights are static slices ([D, N, K], not
    [L, D, N, K]), the "layers" axis dropped from their sharding names.

    Each slice is a copy (XLA does not alias slices of an argument), so make the views once
    per generation, outside the decode loop, and pass them to every `decode_step`: the
    sampler does (lm.sampling). Made inside each step, they copy all the weights per token."""
    graphdef, state = nnx.split(self.blocks)
    take = lambda i: jax.tree.map(lambda w: w.replace(w[i], out_sharding=w.out_sharding[1:]), state,
                                  is_leaf=lambda x: isinstance(x, nnx.Variable))
    return tuple(nnx.merge(graphdef, take(i)) for i in range(self.cfg.layers))

  def decode_step(self, tokens_b, cache: KVCache, layers: tuple[Block, ...] | None = None):
    """Feeds one token per row; returns (logits [B, V], updated cache).

    layers: `self.layer_views()`, made once outside the decode loop (default: made here, which
    copies every layer's weights per call). A full cache (index == cache_len) cannot take
    another token: the logits come back NaN rather than silently overwriting the last slot.
    Size `cache_len` in `prefill` for the whole generation.
    """
    layers = self.layer_views() if layers is None else layers
    valid_bs = jax.lax.dynamic_update_slice_in_dim(
        cache.valid_bs, jnp.ones((tokens_b.shape[0], 1), bool), cache.index, axis=1)
    x = self.embed(tokens_b[:, None])
    # Unrolled over the layers: each reads its own weights and cache buffers directly and
    # writes only its new slot, so nothing of either is copied (a scan over the stacked
    # arrays copied each layer's weights and cache slice out per iteration).
    k_cache, v_cache = [], []
    for block, k_bgsk, v_bgsk in zip(layers, cache.k, cache.v, strict=True):
      x, k_bgsk, v_bgsk = block.decode(x, k_bgsk, v_bgsk, cache.valid_bs, cache.index, cache.position_b)
      k_cache.append(shard(k_bgsk, *CACHE_BGSK))
      v_cache.append(shard(v_bgsk, *CACHE_BGSK))
    logits = self.logits(self.final_norm(x)[:, 0])
    logits = jnp.where(cache.index < cache.valid_bs.shape[1], logits, jnp.nan)
    return logits, KVCache(k=tuple(k_cache), v=tuple(v_cache), valid_bs=valid_bs, index=cache.index + 1,
                           position_b=cache.position_b + 1)
