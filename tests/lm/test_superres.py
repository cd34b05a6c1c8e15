"""The SR stage's model, masked objective and MaskGIT sampler (lm/superres.py, lm/masked.py,
lm/superres_sampling.py) on a tiny config: windowed attention equals full attention under the
windows' block mask, the loss counts only masked positions, one train step is the same on 1
and 8 devices."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
import sharding
from lm.attention import attend
from lm.masked import cosine_mask, masked_loss
from lm.superres import from_windows, to_windows, window_mask, windowed_attention
from train import sr_step

CFG = configs.load("sr_tiny")
B = 8


def _batch(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  n, m = np.prod(CFG.sr.high_thw), np.prod(CFG.sr.low_thw)
  return {"high": rng.integers(0, CFG.sr.codes, (B, n)).astype(np.int32),
          "masked": cosine_mask(rng, B, n),
          "low": rng.integers(0, CFG.sr.codes, (B, m)).astype(np.int32),
          "text": rng.integers(0, 200, (B, 4)).astype(np.int32),
          "text_valid": rng.uniform(size=(B, 4)) < 0.7,
          "cond": rng.uniform(size=B) < 0.8}


@pytest.mark.parametrize("kind,window", [("spatial", 4), ("spatial", 2), ("temporal", 0), ("temporal", 1)])
def test_windowed_attention_equals_full_attention_with_the_block_mask(kind, window):
  b, (t, h, w), n, g, k = 2, (3, 8, 8), 4, 2, 8
  ks = jax.random.split(jax.random.key(1), 3)
  q = jax.random.normal(ks[0], (b, t, h, w, n * k))
  kv = [jax.random.normal(key, (b, t, h, w, g * k)) for key in ks[1:]]
  win = lambda x, heads: to_windows(x, kind, window).reshape(-1, to_windows(x, kind, window).shape[1], heads, k)
  out = windowed_attention(win(q, n), win(kv[0], g), win(kv[1], g))
  got = from_windows(out.reshape(out.shape[0], out.shape[1], -1), (b, t, h, w), kind, window)
  flat = lambda x, heads: x.reshape(b, t * h * w, heads, k)
  mask = jnp.broadcast_to(window_mask((t, h, w), kind, window), (b, t * h * w, t * h * w))
  want = attend(flat(q, n), flat(kv[0], g), flat(kv[1], g), mask)
  np.testing.assert_allclose(got.reshape(b, t * h * w, n, k), want, atol=2e-5)
  assert 0 < mask.mean() < 1  # the windows do cut the grid


def test_masked_loss_counts_only_masked_positions():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 10, 7)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, (2, 10)), jnp.int32)
  masked = jnp.asarray(rng.uniform(size=(2, 10)) < 0.4)
  loss, metrics = masked_loss(logits, targets, masked)
  logp = jax.nn.log_softmax(logits)
  ce = -np.take_along_axis(np.asarray(logp), np.asarray(targets)[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, ce[np.asarray(masked)].mean(), rtol=1e-6)
  assert metrics["tokens"] == masked.sum()
  # Anything at an unmasked position - its logits or its target - changes neither loss nor gradient.
  noisy = jnp.where(masked[..., None], logits, 100 * jnp.asarray(rng.normal(size=logits.shape), jnp.float32))
  other = jnp.where(masked, targets, (targets + 3) % 7)
  assert float(masked_loss(noisy, other, masked)[0]) == pytest.approx(float(loss), rel=1e-6)
  grad = jax.grad(lambda x: masked_loss(x, targets, masked)[0])(logits)
  assert np.all(np.asarray(grad)[~np.asarray(masked)] == 0)


def test_cosine_mask_hides_between_one_and_all_positions():
  counts = cosine_mask(np.random.default_rng(0), 4000, 192).sum(1)
  assert counts.min() >= 1 and counts.max() <= 192
  # E[cos(pi/2 r)] = 2/pi: the mean masking ratio is ~0.64.
  assert abs(counts.mean() / 192 - 2 / np.pi) < 0.02


def _one_step(mesh_shape, devices, state=None):
  """One train step on a mesh, from `state` (moved onto its shards) or a fresh init."""
  mesh = sharding.make_mesh(mesh_shape, devices)
  if state is None:
    ts = sr_step.init_state(CFG, mesh, seed=0)
  else:  # the same initial values, resharded: one init compile instead of two
    ts = sr_step.abstract_state(CFG, mesh, seed=0)
    ts.state = jax.device_put(state, ts.shardings)
  initial = jax.device_get(ts.state)
  step = sr_step.make_sr_step(CFG, mesh, ts)
  shardings = sr_step.batch_shardings(CFG, mesh)
  batch = {k: jax.device_put(v, shardings[k]) for k, v in _batch().items()}
  state, metrics = step(ts.state, batch)
  model = nnx.merge(ts.graphdef, state)[0]
  return jax.device_get(metrics), jax.device_get(nnx.to_pure_dict(nnx.state(model, nnx.Param))), initial


def test_train_step_on_one_device_equals_eight():
  one = _one_step((1, 1, 1), jax.devices()[:1])
  eight = _one_step((2, 4, 1), jax.devices(), state=one[2])
  for key in ("loss", "grad_norm", "tokens"):
    np.testing.assert_allclose(one[0][key], eight[0][key], rtol=1e-5)
  assert bool(one[0]["finite"]) and float(one[0]["loss"]) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5), one[1], eight[1])


def test_maskgit_upscale_keeps_known_tokens_and_fills_the_scheduled_count_per_step():
  from lm.sampling import MaskGit, maskgit_schedule
  from lm.superres import SuperResolution
  from lm.superres_sampling import upscale
  model = SuperResolution(CFG.sr, CFG.lm, rngs=nnx.Rngs(0))
  batch, config = _batch(2), MaskGit(steps=5)
  known = ~batch["masked"][:3]
  known[0] = False  # one row from nothing, the others around given tokens
  # Guided: the conditional and the condition-dropped rows run in one batch (the demo runs unguided).
  codes, masked = upscale(model, batch["low"][:3], batch["text"][:3], batch["text_valid"][:3], rng=1,
                          config=config, guidance=2.0, canvas_bn=batch["high"][:3], known_bn=known)
  np.testing.assert_array_equal(codes[known], batch["high"][:3][known])
  assert codes.min() >= 0 and codes.max() < CFG.sr.codes
  for row in range(3):
    np.testing.assert_array_equal(masked[row], maskgit_schedule(int((~known[row]).sum()), config.steps))
  assert masked[:, -1].sum() == 0 and len(set(np.diff(np.r_[80, masked[0]]))) > 1  # cosine, not linear
