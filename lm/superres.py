"""The token-space super-resolution transformer (VideoPoet's SR stage), trained with the
masked objective of lm/masked.py and sampled with MaskGIT (lm/superres_sampling.py).

Input at every high-res position (t, y, x) of the [T, H, W] code grid: the embedding of its
code, or of [MASK] where unknown; plus the low-res code of its parent cell (t, y // s, x // s)
(the low-res video upsampled in token space by repetition); plus the caption's mean piece
embedding; plus factorized learned positions. A condition dropped for guidance is replaced by
a learned null vector. Layers come in pairs: a spatial one attends within square windows of
one frame, a temporal one along time at one spatial position (in windows of frames), as
VideoPoet alternates them. The blocks are the LM's own (`lm.model.Block`) run bidirectionally
(the whole window is "prefix") on windows folded into the batch axis, so they keep the LM's
logical axis names and sharding rules. Output: float32 logits over the 2**bits video codes at
every high-res position.

Shape letters: B batch, T frames, H W high-res rows and columns, D embed, V codes, P caption
pieces, N = T*H*W positions, M = low-res positions, L window length, K head dim.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from configs.schema import LmConfig, SrModelConfig
from lm.attention import prefix_lm_attention
from lm.layers import RMSNorm
from lm.model import ACT_BTD, Block, _param
from sharding import param, shard

# --- windows: the grid <-> [windows, window length] -----------------------------------

def to_windows(x_bthwd, kind: str, window: int):
  """[B, T, H, W, D] -> [B * windows, L, D]: spatial (window x window tiles of one frame) or
  temporal (`window` consecutive frames at one position; window 0 = all frames)."""
  b, t, h, w, d = x_bthwd.shape
  if kind == "spatial":
    x = x_bthwd.reshape(b, t, h // window, window, w // window, window, d)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(-1, window * window, d)
  tw = window or t
  x = x_bthwd.reshape(b, t // tw, tw, h, w, d).transpose(0, 1, 3, 4, 2, 5)
  return x.reshape(-1, tw, d)


def from_windows(x_xld, shape_bthw: tuple[int, int, int, int], kind: str, window: int):
  """The inverse of `to_windows`."""
  b, t, h, w = shape_bthw
  d = x_xld.shape[-1]
  if kind == "spatial":
    x = x_xld.reshape(b, t, h // window, w // window, window, window, d)
    return x.transpose(0, 1, 2, 4, 3, 5, 6).reshape(b, t, h, w, d)
  tw = window or t
  x = x_xld.reshape(b, t // tw, h, w, tw, d).transpose(0, 1, 4, 2, 3, 5)
  return x.reshape(b, t, h, w, d)


def window_mask(thw: tuple[int, int, int], kind: str, window: int) -> np.ndarray:
  """bool [N, N] over the raster order of the grid: True where two positions share a window
  (the block mask that full attention needs to equal the windowed one)."""
  t, h, w = np.meshgrid(*(np.arange(n) for n in thw), indexing="ij")
  if kind == "spatial":
    ids = (t * (thw[1] // window) + h // window) * (thw[2] // window) + w // window
  else:
    ids = ((t // (window or thw[0])) * thw[1] + h) * thw[2] + w
  ids = ids.reshape(-1)
  return ids[:, None] == ids[None, :]


def windowed_attention(q_xlnk, k_xlgk, v_xlgk, *, impl: str = "blockwise"):
  """Bidirectional attention inside each window (windows on the leading axis), through the
  LM's attention with every position marked prefix."""
  x, length = q_xlnk.shape[:2]
  ones = jnp.ones((x, length), jnp.int32)
  return prefix_lm_attention(q_xlnk, k_xlgk, v_xlgk, ones, ones, block=0, impl=impl)


# --- the model -------------------------------------------------------------------------

class SuperResolution(nnx.Module):
  """(masked high-res codes, low-res codes, caption) -> logits over codes at every position."""

  def __init__(self, sr: SrModelConfig, lm: LmConfig, *, rngs: nnx.Rngs):
    self.sr, self.lm = sr, lm
    d, v = lm.embed, sr.codes
    normal = lambda shape: jax.random.normal(rngs.params(), shape, jnp.float32) * 0.02
    self.code_embedding = param(normal((v, d)), ("vocab", "embed"))
    self.lowres_embedding = param(normal((v, d)), ("vocab", "embed"))
    self.mask_embedding = param(normal((d,)), ("embed",))
    self.null_lowres = param(normal((d,)), ("embed",))
    self.null_text = param(normal((d,)), ("embed",))
    if sr.text_vocab:
      self.text_embedding = param(normal((sr.text_vocab, d)), (None, "embed"))
    self.pos_t = param(normal((sr.frames, d)), (None, "embed"))
    self.pos_h = param(normal((sr.height, d)), (None, "embed"))
    self.pos_w = param(normal((sr.width, d)), (None, "embed"))

    @nnx.split_rngs(splits=lm.layers // 2)
    @nnx.vmap(in_axes=(0,), out_axes=0)
    @nnx.transform_metadata(in_axes=(0,), out_axes=0, partition="layers")
    def make_blocks(rngs):
      return Block(lm, rngs=rngs)

    self.spatial_blocks = make_blocks(rngs)
    self.temporal_blocks = make_blocks(rngs)
    self.final_norm = RMSNorm(d, eps=lm.norm_eps)
    self.head = _param(rngs, (d, v), d, ("embed", "vocab"))

  @property
  def dtype(self):
    if self.lm.dtype == "auto":
      return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
    return jnp.dtype(self.lm.dtype)

  def inputs(self, high_bn, known_bn, low_bm, text_bp, text_valid_bp, cond_b):
    """The summed input embeddings [B, T, H, W, D] (see the module docstring)."""
    sr, d = self.sr, self.lm.embed
    b = high_bn.shape[0]
    t, h, w = sr.high_thw
    x = jnp.take(self.code_embedding[...], high_bn, axis=0)
    x = jnp.where(known_bn[..., None], x, self.mask_embedding[...])
    low = jnp.take(self.lowres_embedding[...], low_bm, axis=0).reshape(b, t, h // sr.scale, w // sr.scale, d)
    low = jnp.repeat(jnp.repeat(low, sr.scale, axis=2), sr.scale, axis=3).reshape(b, -1, d)
    cond = cond_b[:, None, None]
    x = x + jnp.where(cond, low, self.null_lowres[...])
    if sr.text_vocab:
      valid = text_valid_bp.astype(jnp.float32)[..., None]
      pieces = jnp.take(self.text_embedding[...], jnp.clip(text_bp, 0, sr.text_vocab - 1), axis=0)
      text_bd = jnp.sum(pieces * valid, axis=1) / jnp.maximum(jnp.sum(valid, axis=1), 1.0)
      has_text = cond_b & jnp.any(text_valid_bp, axis=1)
      x = x + jnp.where(has_text[:, None, None], text_bd[:, None], self.null_text[...])
    else:
      x = x + self.null_text[...]
    pos = (self.pos_t[...][:, None, None] + self.pos_h[...][None, :, None] + self.pos_w[...][None, None, :])
    x = x.reshape(b, t, h, w, d) + pos
    return x.astype(self.dtype)

  def __call__(self, high_bn, known_bn, low_bm, text_bp=None, text_valid_bp=None, cond_b=None):
    """float32 logits [B, N, V].

    high_bn: high-res codes in raster order (read only where known_bn); low_bm: low-res codes;
    text_bp / text_valid_bp: caption piece ids and which are real; cond_b: False drops both
    conditions (the unconditional branch of guidance). Defaults: no caption, conditioned."""
    b = high_bn.shape[0]
    if text_bp is None:
      text_bp = jnp.zeros((b, 1), jnp.int32)
      text_valid_bp = jnp.zeros((b, 1), bool)
    if cond_b is None:
      cond_b = jnp.ones((b,), bool)
    sr = self.sr
    t, h, w = sr.high_thw
    x = self.inputs(high_bn, known_bn, low_bm, text_bp, text_valid_bp, cond_b)

    def run(block, x, kind, window):
      x_xld = shard(to_windows(x, kind, window), *ACT_BTD)
      length = x_xld.shape[1]
      ones = jnp.ones(x_xld.shape[:2], jnp.int32)
      positions = jnp.broadcast_to(jnp.arange(length), x_xld.shape[:2])
      y, _ = block(x_xld, ones, ones, positions)
      return from_windows(y, (b, t, h, w), kind, window)

    def layer(x, spatial, temporal):
      x = run(spatial, x, "spatial", sr.window)
      return run(temporal, x, "temporal", sr.temporal_window)

    if self.lm.remat_policy != "none":
      layer = nnx.remat(layer, policy=getattr(jax.checkpoint_policies, self.lm.remat_policy),
                        prevent_cse=False)
    x = nnx.scan(layer, in_axes=(nnx.Carry, 0, 0), out_axes=nnx.Carry)(
        x, self.spatial_blocks, self.temporal_blocks)
    x = self.final_norm(x.reshape(b, t * h * w, -1))
    return jnp.einsum("bnd,dv->bnv", x, self.head[...].astype(x.dtype), preferred_element_type=jnp.float32)
