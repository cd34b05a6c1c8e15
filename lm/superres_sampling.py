"""MaskGIT sampling over the SR model (lm/superres.py): low-res codes (+ caption) -> high-res codes.

All high-res positions start masked (or some are given: `known_bn`, kept as they are). Each of
`steps` rounds runs the model once on the whole grid, samples a code at every masked position
(temperature), scores it by its log-probability plus Gumbel noise annealed to zero over the
rounds (`MaskGit.choice_temperature`), and keeps the most confident ones so that exactly
`lm.sampling.maskgit_schedule(unknown, steps)[s]` positions stay masked after round s (the
cosine schedule; every round decodes at least one). Guidance: with scale g > 0 the batch also
runs with both conditions dropped (as in training's condition dropout) and the logits become
cond + g * (cond - uncond). One compiled loop (`jax.lax.fori_loop`) per (shape, config).

Shape letters: B batch, N high-res positions, M low-res positions, P caption pieces, V codes,
S steps.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lm.sampling import MaskGit, maskgit_choose, maskgit_schedule
from lm.superres import SuperResolution


@functools.lru_cache(maxsize=8)
def _schedule_table(n: int, steps: int) -> np.ndarray:
  """int32 [n + 1, steps]: the masked count after each step for every starting count."""
  return np.stack([maskgit_schedule(u, steps) for u in range(n + 1)]).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "config", "guided"))
def _upscale(graphdef, state, low_bm, text_bp, text_valid_bp, canvas_bn, known_bn, rng, schedule_us, scale,
             *, config: MaskGit, guided: bool):
  b, n = canvas_bn.shape
  unknown0_b = jnp.sum(~known_bn, axis=1)
  cond_x = jnp.concatenate([jnp.ones(b, bool), jnp.zeros(b, bool)]) if guided else jnp.ones(b, bool)
  rows = (lambda x: jnp.concatenate([x, x])) if guided else (lambda x: x)

  def step(s, carry):
    canvas_bn, unknown_bn, counts_bs, state = carry
    model = nnx.merge(graphdef, state)  # from the carry: nnx modules must be built at the body's trace level
    logits_xnv = model(rows(canvas_bn), rows(~unknown_bn), rows(low_bm), rows(text_bp), rows(text_valid_bp),
                       cond_x)
    logits_bnv = logits_xnv[:b]
    if guided:
      logits_bnv = logits_bnv + scale * (logits_bnv - logits_xnv[b:])
    token_bn, still_bn = maskgit_choose(logits_bnv, canvas_bn, unknown_bn, schedule_us[unknown0_b, s],
                                        jax.random.fold_in(rng, s), s, config)
    return token_bn, still_bn, counts_bs.at[:, s].set(jnp.sum(still_bn, axis=1)), state

  carry = (canvas_bn, ~known_bn, jnp.zeros((b, config.steps), jnp.int32), state)
  canvas_bn, _, counts_bs, _ = jax.lax.fori_loop(0, config.steps, step, carry)
  return canvas_bn, counts_bs


def upscale(model: SuperResolution, low_bm, text_bp=None, text_valid_bp=None, *, rng, config: MaskGit | None = None,
            guidance: float = 0.0, canvas_bn=None, known_bn=None) -> tuple[np.ndarray, np.ndarray]:
  """(high-res codes int32 [B, N], still masked after each step int32 [B, S]).

  low_bm: low-res codes in raster order [B, M] (or [B, T, h, w]); text_bp / text_valid_bp: caption
  pieces and which are real (None: no caption); guidance: scale g >= 0 (0: conditional logits
  only); canvas_bn / known_bn: high-res codes given in advance and where (kept unchanged)."""
  sr, config = model.sr, config or MaskGit()
  low_bm = np.asarray(low_bm, np.int32)
  b = low_bm.shape[0]
  low_bm = low_bm.reshape(b, -1)
  n, m = int(np.prod(sr.high_thw)), int(np.prod(sr.low_thw))
  if low_bm.shape[1] != m:
    raise ValueError(f"low-res codes of {low_bm.shape[1]} positions; this SR model reads "
                     f"{'x'.join(map(str, sr.low_thw))} = {m}.")
  if low_bm.min() < 0 or low_bm.max() >= sr.codes:
    raise ValueError(f"low-res codes must be in [0, {sr.codes}); got [{low_bm.min()}, {low_bm.max()}].")
  if not guidance >= 0:
    raise ValueError(f"guidance={guidance} must be >= 0.")
  if text_bp is None:
    text_bp, text_valid_bp = np.zeros((b, 1), np.int32), np.zeros((b, 1), bool)
  text_bp = np.asarray(text_bp, np.int32)
  text_valid_bp = np.ones(text_bp.shape, bool) if text_valid_bp is None else np.asarray(text_valid_bp, bool)
  canvas_bn = np.zeros((b, n), np.int32) if canvas_bn is None else np.asarray(canvas_bn, np.int32).reshape(b, n)
  known_bn = np.zeros((b, n), bool) if known_bn is None else np.asarray(known_bn, bool).reshape(b, n)
  graphdef, state = nnx.split(model)
  key = rng if isinstance(rng, jax.Array) else jax.random.key(rng)
  codes, counts = _upscale(graphdef, state, low_bm, text_bp, text_valid_bp, canvas_bn, known_bn, key,
                           _schedule_table(n, config.steps), jnp.float32(guidance), config=config,
                           guided=guidance > 0)
  return np.asarray(codes), np.asarray(counts)
