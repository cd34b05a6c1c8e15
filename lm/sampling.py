"""Samplers: fill the output part of a task sequence with token ids (docs/design.md 4.5, 5).

A prompt comes from `lm.tasks.prompt` (the prefix, ending with the first output's opening
marker); the task layout (`lm.tasks.outputs`) says what follows. A `Plan` turns that
layout into per-position rules: markers and <eos> are forced where the layout fixes them,
and every other position draws only from its modality's id range (an audio position only
from its RVQ level's codes). Three samplers fill a plan:

  * `sample`: autoregressive. `Transformer.prefill` runs the prompt, then one
    `lax.while_loop` feeds each chosen token through `decode_step` (KV cache), all inside
    one `jax.jit`: one compile per (shape, settings), none per token. Temperature, top-k,
    top-p; per-row forced tokens (known tokens of an infilling canvas); stops when every
    row has emitted <eos> (later positions hold <pad>). Position i draws its noise from
    `fold_in(rng, i)`, so `reference_sample` (a full forward pass per token in a Python
    loop, the uncached baseline) consumes randomness identically and gives equal tokens.
  * Classifier-free guidance: the batch holds 1 + K groups of B rows, the conditional
    prompts and one unconditional prompt per guided condition (its condition dropped as in
    training, or a negative prompt), right-padded to one length and run together. The
    logits of a step are combined before the rules apply:

        logits = c + sum_k (s_k - 1) (c - u_k)     (`guidance_weights`)

    which is the usual u + s (c - u) for one condition: s = 0 gives u, s = 1 gives c
    (both exactly, as a weighted sum of rows). The chosen token is fed to every group.
  * `maskgit`: iterative parallel decoding of a video canvas for models trained with a
    masked objective: a bidirectional forward over prefix + canvas (the logits at a canvas
    position give that position's distribution), N steps, cosine schedule, confidence =
    log-probability of the sampled token + annealed Gumbel noise; known tokens never change.

Captions that are a frozen encoder's embeddings (`lm.text_encoder`, a model with lm.text_dim)
travel beside the prompts as `text_emb_xse` [X, budget, E] (zeros past each caption and on the
unconditional rows, whose caption slot is the empty null one); the model projects them into
the caption slot (lm/model.py `embed`).

`generate(model, vocab, task, example, spec, ...)` wires prompts, guidance, infilling masks
and decoding back to codes ({"video": [B, t, h, w], "audio": [B, levels, frames]}) for a
notebook. It pads prompts to the task's longest (`prompt_length`), so a task compiles once
whatever the captions; `TRACES` counts the compiled samplers' traces. Under
`jax.set_mesh(mesh), nnx.logical_axis_rules(rules)` the samplers run
sharded like training: the batch over the data axes, heads and vocab as the rules say.

Shape letters: B samples, X = R * B rows (R guidance groups), P prompt length, N output
positions, V vocab, S MaskGIT steps.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.core import spmd

from configs.schema import ClipSpec
from lm import tasks
from lm.vocab import Vocabulary
from sharding import shard

# How many times each compiled sampler has been traced (a retrace means a recompile).
TRACES: collections.Counter = collections.Counter()

_INPUT_MARKERS = {"text": ("bot_i", "eot_i"), "video": ("bov_i", "eov_i"), "audio": ("boa_i", "eoa_i")}


# --- settings and plans --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Sampling:
  """How a token is drawn from its (guided, constrained) logits.

  temperature 0 is greedy; top_k 0 and top_p 1 switch those filters off. Part of the
  compiled sampler's static key: changing them compiles once more.
  """
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if not self.temperature >= 0 or self.top_k < 0 or not 0 < self.top_p <= 1:
      raise ValueError(f"sampling temperature={self.temperature}, top_k={self.top_k}, "
                       f"top_p={self.top_p}: need temperature >= 0, top_k >= 0 and 0 < top_p <= 1.")


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
  """What each of the N output positions may hold.

  forced_n: int32 [N], the id the layout fixes there (a marker, <eos>) or -1 to sample;
  lo_n, hi_n: int32 [N], the id range [lo, hi) a sampled position draws from;
  slots: the task's output slots (to decode the tokens back to codes); () when free.
  """
  forced_n: np.ndarray
  lo_n: np.ndarray
  hi_n: np.ndarray
  slots: tuple[tasks.OutputSlot, ...] = ()

  @property
  def length(self) -> int:
    return len(self.forced_n)


def layout_plan(task: str, vocab: Vocabulary, spec: ClipSpec = ClipSpec()) -> Plan:
  """The plan of a task's outputs: segment lengths come from the spec, so every closing
  marker, every later opening marker and the final <eos> sit at known positions."""
  forced, lo, hi = [], [], []

  def fix(token_id: int):
    forced.append(token_id)
    lo.append(0)
    hi.append(vocab.size)

  slots = tasks.outputs(task, vocab, spec)
  for slot in slots:
    if slot.open is not None:
      fix(slot.open)
    n = slot.length
    if slot.modality == "audio":
      levels, k = vocab.cfg.audio_levels, vocab.cfg.audio_codebook
      j = np.arange(n)
      level = j // (n // levels) if spec.audio_order == "level" else j % levels
      start = vocab.audio_offset + k * level
      lo.extend(start)
      hi.extend(start + k)
    else:
      a, b = vocab.ranges()[slot.modality]
      lo.extend([a] * n)
      hi.extend([b] * n)
    forced.extend([-1] * n)
    fix(slot.close)
  fix(vocab.special("eos"))
  as_int = lambda x: np.asarray(x, np.int32)
  return Plan(as_int(forced), as_int(lo), as_int(hi), slots)


def free_plan(length: int, vocab: Vocabulary) -> Plan:
  """Up to `length` tokens from the whole vocabulary except <pad>, until <eos>."""
  if length < 1:
    raise ValueError(f"free_plan length={length} must be >= 1.")
  return Plan(np.full(length, -1, np.int32), np.full(length, vocab.special("pad") + 1, np.int32),
              np.full(length, vocab.size, np.int32))


def prompt_length(task: str, vocab: Vocabulary, spec: ClipSpec = ClipSpec()) -> int:
  """The longest prompt of a task (a caption at the full text budget). Padding every prompt
  to it gives one compiled sampler per task, whatever the captions' lengths."""
  return tasks.max_length(task, vocab, spec) - layout_plan(task, vocab, spec).length


def pad_prompts(prompts: Sequence[np.ndarray], pad_id: int,
                length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Right-pads prompts to `length` (default: the longest): (tokens int32 [X, P], valid [X, P])."""
  if not prompts:
    raise ValueError("pad_prompts: no prompts given.")
  p = max(len(x) for x in prompts)
  if length is not None:
    if length < p:
      raise ValueError(f"pad_prompts: a prompt of {p} tokens does not fit length={length}.")
    p = length
  tokens = np.full((len(prompts), p), pad_id, np.int32)
  valid = np.zeros((len(prompts), p), bool)
  for i, x in enumerate(prompts):
    tokens[i, :len(x)] = x
    valid[i, :len(x)] = True
  return tokens, valid


def guidance_weights(scales: Sequence[float]) -> np.ndarray:
  """Row-group weights [1 + K] for logits = c + sum_k (s_k - 1)(c - u_k) (module docstring)."""
  s = np.asarray(scales, np.float64).reshape(-1)
  return np.concatenate([[1.0 + np.sum(s - 1.0)], 1.0 - s]).astype(np.float32)


# --- choosing one token ----------------------------------------------------------------

def filter_logits(logits_bv: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
  """Sets logits outside the top-k and outside the nucleus of mass top_p to -inf.

  The nucleus is the smallest set of highest-probability ids whose mass reaches top_p
  (always at least the most likely id).
  """
  if top_k > 0 and top_k < logits_bv.shape[-1]:
    kth_b = jax.lax.top_k(logits_bv, top_k)[0][:, -1:]
    logits_bv = jnp.where(logits_bv >= kth_b, logits_bv, -jnp.inf)
  if top_p < 1.0:
    sorted_bv = -jnp.sort(-logits_bv, axis=-1)
    probs_bv = jax.nn.softmax(sorted_bv, axis=-1)
    before_bv = jnp.cumsum(probs_bv, axis=-1) - probs_bv  # mass of strictly likelier ids
    keep_b = jnp.sum(before_bv < top_p, axis=-1, keepdims=True)
    cutoff_b = jnp.take_along_axis(sorted_bv, keep_b - 1, axis=-1)
    logits_bv = jnp.where(logits_bv >= cutoff_b, logits_bv, -jnp.inf)
  return logits_bv


def constrain(logits_bv: jax.Array, lo, hi) -> jax.Array:
  """-inf outside the id range [lo, hi) (scalars, or [B] per row)."""
  ids_v = jnp.arange(logits_bv.shape[-1])
  lo, hi = jnp.asarray(lo)[..., None], jnp.asarray(hi)[..., None]
  return jnp.where((ids_v >= lo) & (ids_v < hi), logits_bv, -jnp.inf)


def _combine(logits_xv: jax.Array, weights_r: jax.Array) -> jax.Array:
  """Guidance: sum_r w_r * logits of group r; [R * B, V] -> [B, V]."""
  r = weights_r.shape[0]
  groups = logits_xv.reshape(r, logits_xv.shape[0] // r, logits_xv.shape[-1])
  out = weights_r[0] * groups[0]
  for i in range(1, r):  # an explicit sum: weights (1, 0) and (0, 1) give c and u exactly
    out = out + weights_r[i] * groups[i]
  return out


def choose(logits_xv, i, rng, forced_bn, lo_n, hi_n, weights_r, sampling: Sampling):
  """The token of output position i for every row: guided, constrained, filtered, drawn
  with key fold_in(rng, i), and replaced by the forced id where there is one."""
  logits_bv = constrain(_combine(logits_xv, weights_r), lo_n[i], hi_n[i])
  if sampling.temperature == 0:
    token_b = jnp.argmax(logits_bv, axis=-1)
  else:
    logits_bv = filter_logits(logits_bv / sampling.temperature, sampling.top_k, sampling.top_p)
    token_b = jax.random.categorical(jax.random.fold_in(rng, i), logits_bv, axis=-1)
  forced_b = forced_bn[:, i]
  return jnp.where(forced_b >= 0, forced_b, token_b).astype(jnp.int32)


# --- autoregressive sampling with the KV cache ------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Static:
  """Everything the compiled samplers specialize on besides array shapes."""
  graphdef: Any
  sampling: Sampling
  pad: int
  eos: int
  rules: tuple


def _static(model, vocab: Vocabulary, sampling: Sampling) -> tuple[_Static, Any]:
  graphdef, state = nnx.split(model)
  rules = tuple((k, v) for k, v in spmd.get_logical_axis_rules())  # part of the key: shard() reads it
  return _Static(graphdef, sampling, vocab.special("pad"), vocab.special("eos"), rules), state


@functools.partial(jax.jit, static_argnames=("static",))
def _autoregressive(state, prompt_xp, valid_xp, forced_bn, lo_n, hi_n, weights_r, rng, static: _Static,
                    text_emb_xse=None):
  TRACES["autoregressive"] += 1
  model = nnx.merge(static.graphdef, state)
  r, (b, n), p = weights_r.shape[0], forced_bn.shape, prompt_xp.shape[1]
  prompt_xp = shard(prompt_xp, "act_batch", "act_length")
  valid_xp = shard(valid_xp, "act_batch", "act_length")
  # The last output token is never fed back, so the cache needs P + N - 1 slots.
  logits_xv, cache = model.prefill(prompt_xp, valid_xp, valid_xp, cache_len=p + n - 1, text_emb_bse=text_emb_xse)
  pick = functools.partial(choose, rng=rng, forced_bn=forced_bn, lo_n=lo_n, hi_n=hi_n,
                           weights_r=weights_r, sampling=static.sampling)
  first_b = pick(logits_xv, 0)
  tokens_bn = shard(jnp.full((b, n), static.pad, jnp.int32).at[:, 0].set(first_b), "act_batch", None)

  def more(carry):
    i, _, _, _, done_b, _ = carry
    return (i < n) & ~jnp.all(done_b)

  # Each layer's weights sliced out of the stacked blocks once, here: sliced inside the loop,
  # every step would copy them (lm.model.Transformer.layer_views).
  layers_graphdef, layers_state = nnx.split(model.layer_views())

  # The parameters ride in the carry: nnx modules must be built at the loop body's trace
  # level (closing over the outer ones fails nnx's trace-level check).
  def step(carry):
    i, last_b, cache, tokens_bn, done_b, (state, layers_state) = carry
    model = nnx.merge(static.graphdef, state)
    logits_xv, cache = model.decode_step(jnp.tile(last_b, r), cache, nnx.merge(layers_graphdef, layers_state))
    token_b = jnp.where(done_b, static.pad, pick(logits_xv, i))
    tokens_bn = jax.lax.dynamic_update_slice_in_dim(tokens_bn, token_b[:, None], i, axis=1)
    return i + 1, token_b, cache, tokens_bn, done_b | (token_b == static.eos), (state, layers_state)

  carry = (jnp.asarray(1, jnp.int32), first_b, cache, tokens_bn, first_b == static.eos, (state, layers_state))
  return jax.lax.while_loop(more, step, carry)[3]


def _check_batch(model, vocab: Vocabulary, prompts_xp, valid_xp, plan: Plan, forced_bn, weights):
  prompts_xp = np.asarray(prompts_xp, np.int32)
  valid_xp = np.ones(prompts_xp.shape, bool) if valid_xp is None else np.asarray(valid_xp, bool)
  if prompts_xp.ndim != 2 or valid_xp.shape != prompts_xp.shape or not valid_xp[:, 0].all():
    raise ValueError(f"prompts {prompts_xp.shape} / valid {valid_xp.shape}: expected equal [X, P] "
                     "shapes, right-padded (valid[:, 0] True); see pad_prompts.")
  if model.cfg.vocab < vocab.size:
    raise ValueError(f"the model's vocabulary ({model.cfg.vocab} ids) is smaller than the vocab "
                     f"config's ({vocab.size}); load the checkpoint with the vocab config it was "
                     "trained with.")
  weights = np.ones(1, np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
  r = len(weights)
  if prompts_xp.shape[0] % r:
    raise ValueError(f"{prompts_xp.shape[0]} prompt rows do not split into {r} guidance groups.")
  b = prompts_xp.shape[0] // r
  forced = np.broadcast_to(plan.forced_n, (b, plan.length)).copy()
  if forced_bn is not None:
    forced_bn = np.asarray(forced_bn, np.int32)
    if forced_bn.shape != (b, plan.length):
      raise ValueError(f"forced tokens of shape {forced_bn.shape}, expected {(b, plan.length)} "
                       "(-1 where the sampler chooses).")
    forced = np.where(forced_bn >= 0, forced_bn, forced)
  return prompts_xp, valid_xp, forced, weights


def _text_emb(text_emb_xse, prompts_xp):
  """The captions' embeddings as float32 [X, S, E], checked against the prompt rows (or None)."""
  if text_emb_xse is None:
    return None
  text_emb_xse = np.asarray(text_emb_xse, np.float32)
  if text_emb_xse.ndim != 3 or text_emb_xse.shape[0] != prompts_xp.shape[0]:
    raise ValueError(f"text embeddings of shape {text_emb_xse.shape}, expected [{prompts_xp.shape[0]} prompt "
                     "rows, budget, E].")
  return text_emb_xse


def caption_embeddings(prompts: Sequence[np.ndarray], examples: Sequence[Mapping], vocab: Vocabulary,
                       budget: int) -> np.ndarray | None:
  """text_emb [X, budget, E] of prompt rows built from `examples` (one per row): each row's
  caption slot's embedding rows (none for a null caption), zeros after; None for pieces."""
  embedded = [ex for ex in examples if tasks.is_embedding(ex.get("text"))]
  if not embedded:
    return None
  out = np.zeros((len(prompts), budget, np.shape(embedded[0]["text"])[1]), np.float32)
  for i, (p, ex) in enumerate(zip(prompts, examples)):
    if tasks.is_embedding(ex.get("text")):
      emb = tasks.text_embedding(p, ex, vocab)
      out[i, :len(emb)] = emb
  return out


def _key(rng) -> jax.Array:
  if isinstance(rng, (int, np.integer)):
    return jax.random.key(int(rng))
  return rng


def sample(model, vocab: Vocabulary, prompts_xp, valid_xp, plan: Plan, *, rng,
           sampling: Sampling = Sampling(), forced_bn=None, weights=None, text_emb_xse=None) -> jax.Array:
  """Autoregressive KV-cached sampling in one compiled loop: int32 [B, N] output tokens.

  prompts_xp/valid_xp: R groups of B right-padded prompts (`pad_prompts`), R = len(weights)
  (default 1: no guidance); forced_bn: int32 [B, N] ids to force per row (-1: free), on
  top of the plan's markers; rng: a key or an int seed; text_emb_xse: the captions' encoder
  embeddings [X, budget, E] for a model with lm.text_dim (see the module docstring).
  """
  prompts_xp, valid_xp, forced, weights = _check_batch(model, vocab, prompts_xp, valid_xp, plan,
                                                       forced_bn, weights)
  static, state = _static(model, vocab, sampling)
  return _autoregressive(state, prompts_xp, valid_xp, forced, plan.lo_n, plan.hi_n, weights,
                         _key(rng), static=static, text_emb_xse=_text_emb(text_emb_xse, prompts_xp))


@functools.partial(jax.jit, static_argnames=("static",))
def _uncached_logits(state, seq_xt, valid_xp, i, static: _Static, text_emb_xse=None):
  """Logits [X, V] predicting output i, from one full forward pass over the sequence."""
  x, p = valid_xp.shape
  # Prompt padding sits between the prompt and the outputs: segment id 0 hides it and the
  # positions skip it, exactly as the cache's valid slots and rotary positions do.
  segment_xt = jnp.concatenate([valid_xp, jnp.ones((x, seq_xt.shape[1] - p), bool)], 1).astype(jnp.int32)
  positions_xt = jnp.cumsum(segment_xt, axis=1) - 1
  input_mask_xt = jnp.pad(valid_xp, [(0, 0), (0, seq_xt.shape[1] - p)])
  logits_xtv = nnx.merge(static.graphdef, state)(seq_xt, input_mask_xt, segment_xt, positions_xt, text_emb_xse)
  at_x = jnp.where(i == 0, jnp.sum(valid_xp, axis=1) - 1, p + i - 1)
  return jnp.take_along_axis(logits_xtv, at_x[:, None, None], axis=1)[:, 0]


_choose_jit = jax.jit(choose, static_argnames="sampling")


def reference_sample(model, vocab: Vocabulary, prompts_xp, valid_xp, plan: Plan, *, rng,
                     sampling: Sampling = Sampling(), forced_bn=None, weights=None,
                     max_positions: int | None = None, text_emb_xse=None) -> np.ndarray:
  """`sample` without a cache, for tests and benchmarks: a Python loop running one full
  forward pass over the whole (fixed-length, so compiled once) sequence per token.

  max_positions stops early (a benchmark: every position costs the same full pass).
  """
  prompts_xp, valid_xp, forced, weights = _check_batch(model, vocab, prompts_xp, valid_xp, plan,
                                                       forced_bn, weights)
  static, state = _static(model, vocab, sampling)
  r, (b, n), p = len(weights), forced.shape, prompts_xp.shape[1]
  seq = np.concatenate([prompts_xp, np.full((r * b, n), static.pad, np.int32)], axis=1)
  tokens = np.full((b, n), static.pad, np.int32)
  done = np.zeros(b, bool)
  key = _key(rng)
  forward = dataclasses.replace(static, sampling=Sampling())  # the forward pass ignores it
  for i in range(n if max_positions is None else min(n, max_positions)):
    logits_xv = _uncached_logits(state, seq, valid_xp, i, static=forward,
                                 text_emb_xse=_text_emb(text_emb_xse, prompts_xp))
    token = np.asarray(_choose_jit(logits_xv, i, key, forced, plan.lo_n, plan.hi_n, weights,
                                   sampling=sampling))
    token = np.where(done, static.pad, token)
    tokens[:, i] = token
    seq[:, p + i] = np.tile(token, r)
    done |= token == static.eos
    if done.all():
      break
  return tokens


# --- MaskGIT ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MaskGit:
  """Iterative parallel decoding: `steps` rounds, cosine schedule; the confidence of a
  sampled token is its log-probability plus Gumbel noise scaled by
  choice_temperature * (1 - (s + 1) / steps) (MaskGIT's annealed randomness)."""
  steps: int = 12
  temperature: float = 1.0
  choice_temperature: float = 4.5

  def __post_init__(self):
    if self.steps < 1 or not self.temperature >= 0 or not self.choice_temperature >= 0:
      raise ValueError(f"MaskGit steps={self.steps}, temperature={self.temperature}, "
                       f"choice_temperature={self.choice_temperature}: need steps >= 1, the rest >= 0.")


def maskgit_schedule(unknown: int, steps: int) -> np.ndarray:
  """Tokens still masked after each step: floor(unknown * cos(pi/2 * (s + 1) / steps)),
  kept below the count before the step so every step decodes at least one token."""
  left, out = unknown, []
  for s in range(steps):
    target = math.floor(unknown * math.cos(math.pi / 2 * (s + 1) / steps))
    left = max(min(target, left - 1), 0)
    out.append(left)
  return np.asarray(out, np.int64)


@functools.lru_cache(maxsize=8)
def _schedule_table(n: int, steps: int) -> np.ndarray:
  """int32 [n + 1, steps]: `maskgit_schedule(u, steps)` for every u, looked up inside the
  compiled loop so the counts match the host formula exactly (no float32 cos rounding)."""
  return np.stack([maskgit_schedule(u, steps) for u in range(n + 1)]).astype(np.int32)


@functools.partial(jax.jit, static_argnames=("static", "config"))
def _maskgit(state, prompt_xp, valid_xp, canvas_bn, known_bn, suffix, lo_n, hi_n, weights_r, rng,
             mask_id, schedule_us, static: _Static, config: MaskGit, text_emb_xse=None):
  TRACES["maskgit"] += 1
  r, (b, n), p = weights_r.shape[0], canvas_bn.shape, prompt_xp.shape[1]
  x = r * b
  segment_xt = jnp.concatenate([valid_xp, jnp.ones((x, n + suffix.shape[0]), bool)], 1).astype(jnp.int32)
  positions_xt = jnp.cumsum(segment_xt, axis=1) - 1
  unknown0_b = jnp.sum(~known_bn, axis=1)

  def step(s, carry):
    canvas_bn, unknown_bn, counts_bs, state = carry
    model = nnx.merge(static.graphdef, state)  # built at the body's trace level (see above)
    seq_xt = jnp.concatenate([prompt_xp, jnp.tile(jnp.where(unknown_bn, mask_id, canvas_bn), (r, 1)),
                              jnp.broadcast_to(suffix, (x, suffix.shape[0]))], axis=1)
    logits_xnv = model(shard(seq_xt, "act_batch", "act_length"), segment_xt > 0, segment_xt,
                       positions_xt, text_emb_xse)[:, p:p + n]
    logits_bnv = _combine(logits_xnv.reshape(x, -1), weights_r).reshape(b, n, -1)
    logits_bnv = constrain(logits_bnv, lo_n[None, :], hi_n[None, :])
    token_bn, still_bn = maskgit_choose(logits_bnv, canvas_bn, unknown_bn, schedule_us[unknown0_b, s],
                                        jax.random.fold_in(rng, s), s, config)
    counts_bs = counts_bs.at[:, s].set(jnp.sum(still_bn, axis=1))
    return token_bn, still_bn, counts_bs, state

  carry = (canvas_bn, ~known_bn, jnp.zeros((b, config.steps), jnp.int32), state)
  canvas_bn, _, counts_bs, _ = jax.lax.fori_loop(0, config.steps, step, carry)
  return canvas_bn, counts_bs


def maskgit_choose(logits_bnv, canvas_bn, unknown_bn, target_b, rng, step, config: MaskGit):
  """One MaskGIT step's choice: samples every unknown position, then keeps the `target_b` least
  confident of them masked (confidence = log-prob + annealed Gumbel noise). Returns (tokens,
  still-unknown mask); known and already decoded tokens stay."""
  key_sample, key_choice = jax.random.split(rng)
  if config.temperature == 0:
    logp_bnv = jax.nn.log_softmax(logits_bnv, axis=-1)
    token_bn = jnp.argmax(logits_bnv, axis=-1)
  else:
    logp_bnv = jax.nn.log_softmax(logits_bnv / config.temperature, axis=-1)
    token_bn = jax.random.categorical(key_sample, logp_bnv, axis=-1)
  logp_bn = jnp.take_along_axis(logp_bnv, token_bn[..., None], axis=-1)[..., 0]
  token_bn = jnp.where(unknown_bn, token_bn, canvas_bn).astype(jnp.int32)
  anneal = config.choice_temperature * (1.0 - (step + 1) / config.steps)
  confidence_bn = logp_bn + anneal * jax.random.gumbel(key_choice, logp_bn.shape)
  confidence_bn = jnp.where(unknown_bn, confidence_bn, jnp.inf)
  rank_bn = jnp.argsort(jnp.argsort(confidence_bn, axis=1), axis=1)  # 0 = least confident
  return token_bn, rank_bn < target_b[:, None]


def maskgit(model, vocab: Vocabulary, prompts_xp, valid_xp, canvas_bn, known_bn, *, rng,
            suffix: Sequence[int] = (), config: MaskGit = MaskGit(), weights=None,
            modality: str = "video", text_emb_xse=None) -> tuple[jax.Array, jax.Array]:
  """MaskGIT decoding of a canvas after the prompts: (ids int32 [B, N], masked [B, S]).

  canvas_bn: vocabulary ids of the canvas (ignored where unknown); known_bn: True where a
  token is given and must stay; suffix: ids after the canvas (its closing marker, <eos>).
  masked[:, s] counts the tokens still masked after step s (0 after the last step).
  """
  canvas_bn, known_bn = np.asarray(canvas_bn, np.int32), np.asarray(known_bn, bool)
  if canvas_bn.ndim != 2 or known_bn.shape != canvas_bn.shape:
    raise ValueError(f"canvas {canvas_bn.shape} and known {known_bn.shape}: expected equal [B, N].")
  lo, hi = vocab.ranges()[modality]
  n = canvas_bn.shape[1]
  plan = Plan(np.full(n, -1, np.int32), np.full(n, lo, np.int32), np.full(n, hi, np.int32))
  prompts_xp, valid_xp, _, weights = _check_batch(model, vocab, prompts_xp, valid_xp, plan,
                                                  None, weights)
  if prompts_xp.shape[0] != len(weights) * canvas_bn.shape[0]:
    raise ValueError(f"{prompts_xp.shape[0]} prompt rows for {canvas_bn.shape[0]} canvases and "
                     f"{len(weights)} guidance groups.")
  bad = known_bn & ((canvas_bn < lo) | (canvas_bn >= hi))
  if bad.any():
    raise ValueError(f"known canvas ids {np.unique(canvas_bn[bad])[:5]} are not {modality} ids "
                     f"[{lo}, {hi}); pass vocabulary ids (vocab.video_ids).")
  static, state = _static(model, vocab, Sampling())
  return _maskgit(state, prompts_xp, valid_xp, canvas_bn, known_bn, np.asarray(suffix, np.int32),
                  plan.lo_n, plan.hi_n, weights, _key(rng), np.int32(vocab.special("mask")),
                  _schedule_table(n, config.steps), static=static, config=config,
                  text_emb_xse=_text_emb(text_emb_xse, prompts_xp))


# --- pixel regions -> token masks ---------------------------------------------------------

def pixel_mask_to_tokens(mask_thw: np.ndarray, spec: ClipSpec = ClipSpec()) -> np.ndarray:
  """bool [frames, height, width] pixels -> bool latent [t, h, w]: True where any pixel of
  the token's cell is True (a conservative cover). Frame 0 is its own latent frame; latent
  frame j > 0 covers pixel frames 4j-3 .. 4j (compression 4x8x8 by default)."""
  mask_thw = np.asarray(mask_thw, bool)
  if mask_thw.shape != (spec.frames, spec.height, spec.width):
    raise ValueError(f"pixel mask of shape {mask_thw.shape}, expected {(spec.frames, spec.height, spec.width)} "
                     "(the ClipSpec's frames, height, width).")
  ct, ch, cw = spec.compression
  t, h, w = spec.video_shape
  frames = np.concatenate([mask_thw[:1], mask_thw[1:].reshape(t - 1, ct, *mask_thw.shape[1:]).any(1)])
  return frames.reshape(t, h, ch, w, cw).any(axis=(2, 4))


def box_to_tokens(box: Sequence[int], spec: ClipSpec = ClipSpec()) -> np.ndarray:
  """A pixel box (t0, t1, y0, y1, x0, x1), half-open, -> bool latent [t, h, w] covering it."""
  if len(box) != 6:
    raise ValueError(f"box {tuple(box)}: expected (t0, t1, y0, y1, x0, x1) in pixels.")
  t0, t1, y0, y1, x0, x1 = (int(v) for v in box)
  sizes = (spec.frames, spec.height, spec.width)
  for (a, b), size, name in zip(((t0, t1), (y0, y1), (x0, x1)), sizes, ("frames", "rows", "columns")):
    if not 0 <= a < b <= size:
      raise ValueError(f"box {tuple(box)}: {name} [{a}, {b}) must be a non-empty range inside [0, {size}).")
  mask = np.zeros(sizes, bool)
  mask[t0:t1, y0:y1, x0:x1] = True
  return pixel_mask_to_tokens(mask, spec)


# --- from task layouts to codes --------------------------------------------------------------

def decode_outputs(tokens_bn, task: str, vocab: Vocabulary, spec: ClipSpec = ClipSpec()) -> dict:
  """Output tokens of a layout plan -> {"video": int32 [B, t, h, w] codes,
  "audio": int32 [B, levels, frames] codes} (the modalities the task outputs)."""
  tokens_bn = np.asarray(tokens_bn)
  _, h, w = spec.video_shape
  out, i = {}, 0
  for slot in tasks.outputs(task, vocab, spec):
    i += slot.open is not None
    ids = tokens_bn[:, i:i + slot.length].astype(np.int64)
    i += slot.length + 1
    lo, hi = vocab.ranges()[slot.modality]
    if ids.size and (ids.min() < lo or ids.max() >= hi):
      raise ValueError(f"{slot.modality} output holds ids outside [{lo}, {hi}): not a layout plan's tokens.")
    if slot.modality == "video":
      out["video"] = (ids - lo).reshape(len(ids), -1, h, w).astype(np.int32)
    else:
      levels, k = vocab.cfg.audio_levels, vocab.cfg.audio_codebook
      if spec.audio_order == "level":
        ids_blf = ids.reshape(len(ids), levels, -1)
      else:
        ids_blf = ids.reshape(len(ids), -1, levels).transpose(0, 2, 1)
      out["audio"] = ((ids_blf - lo) - k * np.arange(levels)[None, :, None]).astype(np.int32)
  return out


def _input_segment(task: str, modality: str) -> tasks.Segment:
  layout = tasks.get_task(task)
  for seg in layout.inputs:
    if seg.modality == modality:
      return seg
  raise ValueError(f"task {task} has no {modality!r} condition to guide; its conditions: "
                   f"{[s.modality for s in layout.inputs]}.")


def null_prompt(task: str, example: Mapping, modality: str, vocab: Vocabulary,
                spec: ClipSpec = ClipSpec(), mask: np.ndarray | None = None,
                negative: Mapping | None = None) -> np.ndarray:
  """The prefix with one condition removed, as guidance's unconditional row.

  A negative prompt for the modality replaces it; else the trained null: the droppable
  caption becomes empty markers, an optional segment is left out. A required video/audio
  condition has no trained null in the current mixture: its tokens become <mask> (what
  inpainting shows for unknown video), an approximation; prefer a negative there.
  """
  seg = _input_segment(task, modality)
  if negative is not None and modality in negative:
    return tasks.prompt(task, {**example, modality: negative[modality]}, vocab, spec=spec, mask=mask)
  if seg.droppable:
    return tasks.prompt(task, example, vocab, spec=spec, mask=mask, drop_condition=True)
  if seg.optional:
    return tasks.prompt(task, {**example, modality: None}, vocab, spec=spec, mask=mask)
  ids = tasks.prompt(task, example, vocab, spec=spec, mask=mask).copy()
  open_, close = (vocab.special(m) for m in _INPUT_MARKERS[modality])
  start, stop = int(np.argmax(ids == open_)), int(np.argmax(ids == close))
  ids[start + 1:stop] = vocab.special("mask")
  return ids


def _scales(task: str, cfg_scale) -> dict[str, float]:
  if isinstance(cfg_scale, Mapping):
    scales = {k: float(v) for k, v in cfg_scale.items()}
  else:
    droppable = [s.modality for s in tasks.get_task(task).inputs if s.droppable]
    if float(cfg_scale) != 1.0 and not droppable:
      raise ValueError(f"cfg_scale={cfg_scale}: task {task} has no droppable condition; give a "
                       "mapping {modality: scale} of its conditions instead.")
    scales = {m: float(cfg_scale) for m in droppable}
  for m in scales:
    _input_segment(task, m)
  return {m: s for m, s in scales.items() if s != 1.0}  # a scale of 1 adds nothing


def generate(model, vocab: Vocabulary, task: str, example: Mapping | Sequence[Mapping],
             spec: ClipSpec = ClipSpec(), *, rng, num_samples: int = 1, temperature: float = 1.0,
             top_k: int = 0, top_p: float = 1.0, cfg_scale: float | Mapping[str, float] = 1.0,
             negative: Mapping | None = None, known: np.ndarray | None = None,
             method: str = "autoregressive", maskgit_config: MaskGit = MaskGit()) -> dict:
  """Samples a task's outputs for one example or a list of them, `num_samples` each.

  example: the conditions as `lm.tasks` takes them ({"text": pieces, "video": codes, ...}).
  cfg_scale: one scale for the droppable caption, or {modality: scale} per condition;
  negative: conditions ({"text": pieces}) whose prefix replaces the unconditional one.
  known: for inpaint/outpaint, bool [t, h, w] (or [E, t, h, w], one per example) of the
  canvas tokens (example["video"]) to keep; the rest is generated (the prefix shows them as
  <mask>, and the output forces the known ones). Inpainting: known = ~box_to_tokens(box);
  interpolation: known[[0, -1]] = True; continuation: known[:k] = True.
  method: "autoregressive" or "maskgit" (for models trained with a masked objective).
  Returns {"video": [B, t, h, w], "audio": [B, levels, frames] (when output), "tokens":
  [B, N] output ids}, rows ordered example-major (B = examples x num_samples).
  """
  examples = [example] if isinstance(example, Mapping) else list(example)
  if not examples or num_samples < 1:
    raise ValueError(f"need at least one example and num_samples >= 1 (got {num_samples}).")
  if method not in ("autoregressive", "maskgit"):
    raise ValueError(f"method={method!r}: expected 'autoregressive' or 'maskgit'.")
  layout = tasks.get_task(task)
  masked_input = any(s.view == "masked" for s in layout.inputs)
  plan = layout_plan(task, vocab, spec)
  t, h, w = spec.video_shape
  known_e = None
  if masked_input:
    if known is None:
      raise ValueError(f"task {task} needs known= (bool [{t}, {h}, {w}], True where the canvas "
                       "example['video'] is kept); see box_to_tokens for pixel regions.")
    known_e = np.asarray(known, bool)
    known_e = np.broadcast_to(known_e, (len(examples),) + known_e.shape[-3:]) if known_e.ndim == 3 else known_e
    if known_e.shape != (len(examples), t, h, w):
      raise ValueError(f"known mask of shape {np.shape(known)}, expected [{t}, {h}, {w}] or "
                       f"[{len(examples)}, {t}, {h}, {w}] latent tokens ({spec.frames} frames of "
                       f"{spec.height}x{spec.width} at compression {spec.compression}).")
  elif known is not None:
    raise ValueError(f"known= is for tasks with a masked canvas (inpaint, outpaint), not {task}.")

  scales = _scales(task, cfg_scale)
  unused = sorted(set(negative or ()) - set(scales))
  if unused:
    raise ValueError(f"negative prompt for {unused} but no guidance scale != 1 for it "
                     f"(cfg_scale={cfg_scale}); the negative replaces the unconditional row of "
                     "a guided condition, e.g. cfg_scale=3.0 for the caption.")
  groups = [[], *([] for _ in scales)]
  row_examples = [[], *([] for _ in scales)]  # the example each prompt row's caption comes from
  forced_rows, canvas_rows, known_rows = [], [], []
  for e, ex in enumerate(examples):
    mask = None if known_e is None else ~known_e[e]
    cond = tasks.prompt(task, ex, vocab, spec=spec, mask=mask)
    nulls = [null_prompt(task, ex, m, vocab, spec, mask, negative) for m in scales]
    forced = np.full(plan.length, -1, np.int32)
    canvas = np.zeros(plan.slots[0].length, np.int32)
    if known_e is not None:
      canvas = vocab.video_ids(ex["video"]).astype(np.int32)
      forced[:len(canvas)] = np.where(known_e[e].reshape(-1), canvas, -1)
    for _ in range(num_samples):
      for g, p in zip(groups, [cond, *nulls]):
        g.append(p)
      for g, n_ in zip(row_examples, [ex, *[negative or ex] * len(nulls)]):
        g.append(n_)
      forced_rows.append(forced)
      canvas_rows.append(canvas)
      known_rows.append(np.zeros(len(canvas), bool) if known_e is None else known_e[e].reshape(-1))
  prompts, valid = pad_prompts([p for g in groups for p in g], vocab.special("pad"),
                               prompt_length(task, vocab, spec))
  weights = guidance_weights(list(scales.values()))
  text_emb = caption_embeddings([p for g in groups for p in g], [e for g in row_examples for e in g], vocab,
                                spec.text_budget)

  if method == "maskgit":
    if len(plan.slots) != 1 or plan.slots[0].modality != "video":
      raise ValueError(f"maskgit decodes one video output; task {task} outputs "
                       f"{[s.modality for s in plan.slots]}.")
    suffix = (plan.slots[0].close, vocab.special("eos"))
    ids, _ = maskgit(model, vocab, prompts, valid, np.stack(canvas_rows), np.stack(known_rows),
                     rng=rng, suffix=suffix, config=maskgit_config, weights=weights, text_emb_xse=text_emb)
    tokens = np.concatenate([np.asarray(ids), np.tile(np.array(suffix, np.int32), (len(ids), 1))], 1)
  else:
    sampling = Sampling(temperature, top_k, top_p)
    tokens = np.asarray(sample(model, vocab, prompts, valid, plan, rng=rng, sampling=sampling,
                               forced_bn=np.stack(forced_rows), weights=weights, text_emb_xse=text_emb))
  return {**decode_outputs(tokens, task, vocab, spec), "tokens": tokens}
