"""The transformer: prefix-LM masking, padding, KV-cache decoding, attention and loss kernels."""
import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
from lm import Transformer, fused_cross_entropy
from lm.attention import prefix_lm_attention
from lm.layers import rope

IMPLS = ["blockwise", "dot_product_attention", "cpu"]


def tiny_model(*overrides):
  cfg = configs.load("lm_tiny", ["lm.attention_block=8", *overrides]).lm
  return Transformer(cfg, rngs=nnx.Rngs(0))


def random_tokens(shape, vocab=512, seed=0):
  return jax.random.randint(jax.random.key(seed), shape, 0, vocab)


@pytest.mark.parametrize("impl", IMPLS)
def test_prefix_is_bidirectional_and_outputs_are_causal(impl):
  model = tiny_model(f"lm.attention_impl={impl}")
  tokens = random_tokens((2, 40))
  prefix = jnp.zeros((2, 40), bool).at[:, :12].set(True)
  base = model(tokens, prefix)

  changed = model(tokens.at[:, 9].set((tokens[:, 9] + 1) % 512), prefix)  # inside the prefix
  assert np.abs(changed[:, :9] - base[:, :9]).max() > 1e-4, "prefix must see later prefix tokens"

  changed = model(tokens.at[:, 25].set((tokens[:, 25] + 1) % 512), prefix)  # an output token
  np.testing.assert_allclose(changed[:, :25], base[:, :25], atol=1e-6)
  assert np.abs(changed[:, 25:] - base[:, 25:]).max() > 1e-4


@pytest.mark.parametrize("impl", IMPLS)
def test_without_prefix_the_model_is_causal(impl):
  model = tiny_model(f"lm.attention_impl={impl}")
  tokens = random_tokens((1, 30))
  base = model(tokens)
  changed = model(tokens.at[:, 5].set((tokens[:, 5] + 1) % 512))
  np.testing.assert_allclose(changed[:, :5], base[:, :5], atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_padding_and_other_segments_never_leak(impl):
  model = tiny_model(f"lm.attention_impl={impl}")
  tokens = random_tokens((2, 36))
  # Row 0: two packed sequences then padding; row 1: one sequence then padding.
  segs = jnp.array([[1] * 14 + [2] * 14 + [0] * 8, [1] * 30 + [0] * 6])
  prefix = jnp.zeros((2, 36), bool).at[0, :5].set(True).at[0, 14:20].set(True).at[1, :10].set(True)
  base = model(tokens, prefix, segs)
  noise = random_tokens((2, 36), seed=1)
  changed = model(jnp.where(segs == 0, noise, tokens), prefix, segs)
  real = np.asarray(segs != 0)
  np.testing.assert_allclose(np.asarray(changed)[real], np.asarray(base)[real], atol=1e-6)
  # A packed sequence gives the logits it has when run alone (positions restart too).
  alone = model(tokens[:1, 14:28], prefix[:1, 14:28])
  np.testing.assert_allclose(base[0, 14:28], alone[0], atol=2e-5)


def test_attention_implementations_agree_in_value_and_gradient():
  b, t, n, g, k = 2, 40, 4, 2, 8
  keys = jax.random.split(jax.random.key(0), 4)
  q = jax.random.normal(keys[0], (b, t, n, k))
  kv = [jax.random.normal(keys[i], (b, t, g, k)) for i in (1, 2)]
  cot = jax.random.normal(keys[3], (b, t, n, k))
  segs = jnp.array([[1] * 25 + [2] * 10 + [0] * 5, [1] * 40])
  prefix = jnp.zeros((b, t), bool).at[0, :20].set(True).at[0, 25:30].set(True).at[1, :3].set(True)

  # Jitted: run eagerly, the blockwise kernel dispatches hundreds of tiny ops (46 s of the suite).
  @functools.partial(jax.jit, static_argnums=(0, 1))
  def run(impl, block):
    f = lambda q, k, v: prefix_lm_attention(q, k, v, segs, prefix, block=block, impl=impl)
    out, vjp = jax.vjp(f, q, *kv)
    return (out, *vjp(cot))

  reference = run("dot_product_attention", 0)  # one block: a single plain kernel call
  for impl in IMPLS:
    for block in (7, 8, 16, 64):  # prefixes shorter and longer than a block, ragged blocks
      for want, got in zip(reference, run(impl, block)):
        np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("tied,kv_heads", [(False, 2), (True, 2), (False, 4)])
def test_kv_cache_decoding_equals_full_forward(tied, kv_heads):
  # kv_heads=4 (= heads): the sequence runs q, k, v as one stacked matmul, decoding as three.
  model = tiny_model("lm.qk_norm=true", f"lm.tie_embeddings={tied}", f"lm.kv_heads={kv_heads}")
  tokens = random_tokens((2, 30))
  prefix = jnp.zeros((2, 30), bool).at[:, :8].set(True)
  full = model(tokens, prefix)
  logits, cache = model.prefill(tokens[:, :20], prefix[:, :20], cache_len=32)
  np.testing.assert_allclose(logits, full[:, 19], atol=2e-5)
  g, k = model.cfg.kv_heads, model.cfg.head_size
  assert len(cache.k) == len(cache.v) == model.cfg.layers  # one [B, G, S, K] array per layer
  assert all(c.shape == (2, g, 32, k) for c in cache.k + cache.v)
  # Per-layer weights made once and passed to every step, as the sampler does; the last
  # steps make them inside the step (the default).
  layers = model.layer_views()
  step = nnx.jit(lambda m, tok, c, layers: m.decode_step(tok, c, layers))
  for i in range(20, 30):
    if i < 27:
      logits, cache = step(model, tokens[:, i], cache, layers)
    else:
      logits, cache = model.decode_step(tokens[:, i], cache)
    np.testing.assert_allclose(logits, full[:, i], atol=2e-5, err_msg=f"position {i}")


def _entry_ops(hlo_text: str) -> list[str]:
  return hlo_text[hlo_text.index("\nENTRY"):].splitlines()[1:]


def _weight_readers(ops: list[str], prefix: str) -> list[str]:
  """The ops that read a weight matrix parameter named `prefix...`, through any bitcasts."""
  name = lambda op: op.split("=")[0].strip().removeprefix("ROOT ").strip()
  weights = {name(op) for op in ops if " parameter(" in op and name(op).startswith(prefix)
             and re.search(r"\[\d+,\d+", op)}
  readers, frontier = [], weights
  while frontier:
    users = [op for op in ops if "=" in op and " parameter(" not in op
             and any(re.search(re.escape(w) + r"[,)]", op.split("=", 1)[1]) for w in frontier)]
    readers += users
    frontier = {name(op) for op in users if " bitcast(" in op}
  return readers


@pytest.mark.parametrize("batch", [1, 2])
def test_compiled_decode_step_reads_weights_and_cache_in_place(batch):
  """The compiled step (cache donated, per-layer weights passed in) writes each layer's
  cache array once, in place, and copies neither cache nor weights: only matmuls (and free
  bitcasts) read the weight matrices. Batch 1 is where XLA's CPU fusion duplicated the
  cache write, and a transposed output projection copied `wo` (lm/model.py Block.decode)."""
  model = tiny_model()
  cfg = model.cfg
  graphdef, state = nnx.split(model)
  layers_graphdef, layers = nnx.split(model.layer_views())
  _, cache = model.prefill(random_tokens((batch, 8)), cache_len=16)
  step = jax.jit(lambda st, ls, tok, c: nnx.merge(graphdef, st).decode_step(tok, c, nnx.merge(layers_graphdef, ls)),
                 donate_argnums=3)
  ops = _entry_ops(step.lower(state, layers, random_tokens((batch,)), cache).compile().as_text())
  cache_shape = f"f32[{batch},{cfg.kv_heads},16,{cfg.head_size}]"
  writes = [op for op in ops if f"= {cache_shape}" in op and "parameter(" not in op]
  assert len(writes) == 2 * cfg.layers, "\n".join(writes)
  assert not any(" copy(" in op or "dynamic-update-slice" not in op for op in writes), "\n".join(writes)
  assert not [op for op in ops if " dynamic-slice(" in op or "dynamic-slice_fusion" in op]
  readers = _weight_readers(ops, "%ls")
  assert len(readers) >= 7 * cfg.layers  # wq, wk, wv, wo, w_gate, w_up, w_out
  bad = [op for op in readers if not re.search(r" (dot|bitcast)\(|= ynn_fusion|%ynn_fusion", op)]
  assert not bad, "\n".join(bad)


def test_rope_rotates_half_pairs():
  x = jax.random.normal(jax.random.key(0), (1, 3, 2, 8))
  pos = jnp.array([[0, 1, 5]])
  got = rope(x, pos, 10_000.0)
  freq = 10_000.0 ** (-np.arange(4) * 2 / 8)
  ang = np.asarray(pos)[..., None, None] * freq
  x1, x2 = np.asarray(x[..., :4]), np.asarray(x[..., 4:])
  want = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1)
  np.testing.assert_allclose(got, want, atol=1e-5)
  np.testing.assert_allclose(got[:, 0], x[:, 0], atol=1e-6)  # position 0 is the identity



def test_rope_gradient_matches_autodiff_of_the_plain_rotation():
  x = jax.random.normal(jax.random.key(0), (2, 5, 3, 8))
  pos = jnp.array([[0, 1, 2, 7, 9], [3, 0, 1, 2, 4]])

  def plain(x):  # the rotation spelled out with slices, differentiated by JAX
    freq = jnp.tile(10_000.0 ** (-jnp.arange(4) * 2 / 8), 2)
    ang = pos[..., None, None] * freq
    swapped = jnp.concatenate([-x[..., 4:], x[..., :4]], -1)
    return x * jnp.cos(ang) + swapped * jnp.sin(ang)

  loss = lambda f: lambda x: jnp.sum(jnp.sin(f(x)) * jnp.arange(8.0))
  np.testing.assert_allclose(rope(x, pos, 10_000.0), plain(x), atol=1e-5)
  np.testing.assert_allclose(jax.grad(loss(lambda x: rope(x, pos, 10_000.0)))(x), jax.grad(loss(plain))(x),
                             atol=1e-5)

def test_fused_cross_entropy_matches_plain_loss_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 50, 16))
  w = jax.random.normal(jax.random.key(1), (16, 30))
  targets = jax.random.randint(jax.random.key(2), (2, 50), 0, 30)
  weights = jax.random.uniform(jax.random.key(3), (2, 50)) / 100

  def plain(x, w):
    logits = x @ w
    lse = jax.nn.logsumexp(logits, -1)
    ce = lse - jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return jnp.sum(weights * (ce + 1e-2 * lse ** 2)), ce

  for chunk in (7, 16, 50):  # ragged and exact chunking
    fused = lambda x, w, chunk=chunk: fused_cross_entropy(x, w, targets, weights, chunk, 1e-2)
    (want, want_ce), (got, got_ce) = plain(x, w), fused(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(got_ce, want_ce, rtol=1e-5)
    g_want = jax.grad(lambda x, w: plain(x, w)[0], (0, 1))(x, w)
    g_got = jax.grad(lambda x, w, fused=fused: fused(x, w)[0], (0, 1))(x, w)
    for a, b in zip(g_got, g_want):
      np.testing.assert_allclose(a, b, atol=1e-5)


def test_swiglu_gradient_matches_autodiff():
  from lm.layers import swiglu
  reference = lambda x, a, b, c: (jax.nn.silu(x @ a) * (x @ b)) @ c
  loss = lambda f: lambda *args: jnp.sum(jnp.sin(f(*args)))
  # In float64 the hand-written backward equals autodiff to rounding; in float32 they may
  # sum in different orders, so they agree to float32 precision relative to the
  # gradients' scale (unit-normal weights make outputs ~100).
  for dtype, rel in ((jnp.float64, 1e-10), (jnp.float32, 2e-5)):
    with jax.enable_x64(dtype == jnp.float64):
      ks = jax.random.split(jax.random.key(0), 4)
      x = jax.random.normal(ks[0], (2, 5, 8), dtype)
      ws = (jax.random.normal(ks[1], (8, 12), dtype), jax.random.normal(ks[2], (8, 12), dtype),
            jax.random.normal(ks[3], (12, 8), dtype))
      for got, want in zip(jax.grad(loss(swiglu), (0, 1, 2, 3))(x, *ws),
                           jax.grad(loss(reference), (0, 1, 2, 3))(x, *ws)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=rel, atol=rel * float(jnp.max(jnp.abs(want))))


def test_bfloat16_compute_keeps_float32_params():
  model = tiny_model("lm.dtype=bfloat16")
  logits = model(random_tokens((1, 16)))
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
