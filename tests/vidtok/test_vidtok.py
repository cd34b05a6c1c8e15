"""The causal video tokenizer: shapes, causality, chunking, LFQ, FSQ, input errors, sharded step."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
import sharding
from configs.schema import ConfigError, VidtokConfig
from train import tokenizer_step
from vidtok import fsq, lfq, metrics
from vidtok.layers import Stream
from vidtok.model import VideoTokenizer, decode_chunks, depth_to_space, encode_chunks, space_to_depth

CFG = configs.load("vidtok_tiny").vidtok


@pytest.fixture(scope="module")
def tok():
  return VideoTokenizer(CFG, rngs=nnx.Rngs(0))


def _video(frames: int, seed: int = 0, size: int = 32) -> jax.Array:
  return jax.random.uniform(jax.random.key(seed), (2, frames, size, size, 3), minval=-1, maxval=1)


@pytest.mark.parametrize("frames", [1, 5, 17])
def test_shapes(tok, frames):
  video = _video(frames)
  codes = tok.encode(video)
  assert codes.shape == (2, 1 + (frames - 1) // 4, 4, 4) and codes.dtype == jnp.int32
  assert int(codes.min()) >= 0 and int(codes.max()) < 2 ** CFG.bits
  assert tok.decode(codes).shape == video.shape
  assert CFG.latent_shape(frames, 32, 32) == codes.shape[1:]


def test_causality(tok):
  """Changing frame t changes no latent frame before the one that covers t."""
  video = _video(17)
  base = tok.encoder(video, Stream())
  for t in (1, 4, 5, 9, 16):
    changed = tok.encoder(video.at[:, t].set(-video[:, t]), Stream())
    differs = np.abs(np.asarray(changed - base)).max(axis=(0, 2, 3, 4)) > 0
    first = -(-t // 4)  # latent frame j covers video frames 4j-3 .. 4j
    assert not differs[:first].any(), (t, differs)
    assert differs[first], (t, differs)  # the test can fail: t does reach its own latent frame


def test_first_frame_is_encoded_like_an_image(tok):
  video = _video(9)
  np.testing.assert_array_equal(tok.encode(video[:, :1])[:, 0], tok.encode(video)[:, 0])


@pytest.mark.parametrize("frames,chunk", [(17, 2), (25, 3), (13, 1)])
def test_chunked_encode_and_decode_equal_one_pass(tok, frames, chunk):
  video = _video(frames, seed=3)
  codes = tok.encode(video)
  chunked = encode_chunks(tok, video, chunk_latents=chunk)
  np.testing.assert_array_equal(chunked, codes)
  np.testing.assert_allclose(decode_chunks(tok, codes, chunk_latents=chunk), tok.decode(codes), atol=1e-5)


def test_lfq_index_bits_round_trip():
  codes = jnp.arange(2 ** 10)
  bits = lfq.index_to_bits(codes, 10)
  np.testing.assert_array_equal(lfq.bits_to_index(bits), codes)
  latent = lfq.index_to_latent(codes, 10)
  _, again = lfq.quantize(latent)
  np.testing.assert_array_equal(again, codes)
  assert set(np.unique(latent).tolist()) == {-1.0, 1.0}


def test_quantize_passes_gradients_straight_through():
  z = jnp.array([[0.3, -0.2, 1.5]])
  grad = jax.grad(lambda z: jnp.sum(lfq.quantize(z)[0] * jnp.array([1.0, 2.0, 3.0])))(z)
  np.testing.assert_allclose(grad, [[1.0, 2.0, 3.0]])


@pytest.mark.parametrize("d", [3, 6])
def test_entropy_matches_brute_force(d):
  """Factorized per-position and batch entropies equal the 2**d-way softmax computed whole."""
  z = jax.random.normal(jax.random.key(d), (50, d)) * 0.3
  temperature = 0.5
  codes = np.array(list(itertools.product([-1.0, 1.0], repeat=d)))       # [2**d, d]
  dist = ((np.asarray(z)[:, None, :] - codes[None]) ** 2).sum(-1)        # [N, 2**d]
  p = jax.nn.softmax(-dist / temperature, axis=-1)
  per_position = float(-(p * jnp.log(p)).sum(-1).mean())
  mean_p = p.mean(0)
  batch = float(-(mean_p * jnp.log(mean_p)).sum())
  got_position, got_batch = lfq.entropy_terms(z, temperature, groups=1)
  np.testing.assert_allclose([got_position, got_batch], [per_position, batch], rtol=1e-5)
  loss = lfq.entropy_loss(z, temperature, gamma=0.7)
  np.testing.assert_allclose(loss, per_position - 0.7 * batch, rtol=1e-5)
  if d % 3 == 0:  # sub-groups: a sum of marginal entropies bounds the joint one from above
    assert float(lfq.entropy_terms(z, temperature, groups=3)[1]) >= batch - 1e-5


@pytest.mark.parametrize("levels", [(4, 4, 4, 4, 4), (2, 8, 4, 16)])
def test_fsq_codes_latents_round_trip(levels):
  """Every one of the 2**bits codes maps to a distinct grid point that quantizes back to it."""
  codes = jnp.arange(int(np.prod(levels)))
  latent = fsq.index_to_latent(codes, levels)
  assert latent.shape == (len(codes), len(levels))
  for i, n in enumerate(levels):  # each channel takes exactly its n evenly spaced values in [-1, 1]
    np.testing.assert_allclose(np.unique(latent[:, i]), np.linspace(-1, 1, n), atol=1e-6)
  # Latents whose tanh lies within 0.4 of a grid step of a point (inside the grid) quantize to it.
  half = (np.asarray(levels) - 1) / 2
  z = jnp.arctanh(latent * (1 - 0.4 / half))
  q, again = fsq.quantize(z, levels)
  np.testing.assert_array_equal(again, codes)
  np.testing.assert_allclose(q, latent, atol=1e-6)


def test_fsq_rounds_to_the_nearest_level_with_straight_through_gradients():
  levels = (4,)
  z = jnp.array([[-3.0], [-0.2], [0.1], [3.0]])
  q, codes = fsq.quantize(z, levels)
  # tanh(z) * 1.5 + 1.5: -3 -> 0.01 (digit 0), -0.2 -> 1.2 (1), 0.1 -> 1.65 (2), 3 -> 2.99 (3)
  np.testing.assert_array_equal(codes, [0, 1, 2, 3])
  np.testing.assert_allclose(q[:, 0], [-1, -1 / 3, 1 / 3, 1], atol=1e-6)
  grad = jax.grad(lambda z: jnp.sum(fsq.quantize(z, levels)[0]))(z)
  np.testing.assert_allclose(grad, 1 - jnp.tanh(z) ** 2, rtol=1e-5)  # d(soft)/dz, the rounding skipped


def test_an_fsq_tokenizer_encodes_decodes_and_trains():
  cfg = configs.load("vidtok_tiny", ["vidtok.quantizer=fsq", "vidtok.fsq_levels=4,4,4,4"])
  model = VideoTokenizer(cfg.vidtok, rngs=nnx.Rngs(0))
  video = _video(5)
  codes = model.encode(video)
  assert codes.shape == (2, 2, 4, 4) and int(codes.max()) < 2 ** CFG.bits
  np.testing.assert_array_equal(encode_chunks(model, video, chunk_latents=1), codes)
  assert model.decode(codes).shape == video.shape
  mesh = sharding.make_mesh((1, 1, 1), jax.devices()[:1])
  cfg = configs.load("vidtok_tiny", ["vidtok.quantizer=fsq", "vidtok.fsq_levels=4,4,4,4",
                                     "train.gan_weight=0", "train.perceptual_weight=0"])
  ts = tokenizer_step.init_state(cfg, mesh)
  step = tokenizer_step.make_step(cfg, mesh, ts)
  clip = np.random.default_rng(0).integers(0, 255, (2, 5, 32, 32, 3), dtype=np.uint8)
  state, losses = ts.state, []
  for i in range(4):
    state, out = step(state, clip, jnp.int32(i), None)
    losses.append(float(out["recon"]))
  assert "commit" not in out and "entropy_batch" not in out  # LFQ's terms only
  assert losses[-1] < losses[0], losses


def test_a_patched_tokenizer_folds_pixels_into_channels_and_stays_causal():
  """patch=2: space-to-depth before the encoder, its inverse after the decoder; one level fewer."""
  x = _video(3)
  np.testing.assert_array_equal(depth_to_space(space_to_depth(x, 2), 2), x)
  np.testing.assert_array_equal(space_to_depth(x, 2)[0, 0, 1, 2], x[0, 0, 2:4, 4:6].reshape(-1))
  cfg = configs.load("vidtok_tiny", ["vidtok.patch=2", "vidtok.multipliers=1,2,2",
                                     "vidtok.time_downsample=True,True"]).vidtok
  assert cfg.space_factor == 8 and cfg.latent_shape(9, 32, 32) == (3, 4, 4)
  model = VideoTokenizer(cfg, rngs=nnx.Rngs(0))
  assert model.encoder.conv_in.w.shape[-2] == 12 and model.decoder.conv_out.w.shape[-1] == 12
  video = _video(9)
  codes = model.encode(video)
  assert codes.shape == (2, 3, 4, 4) and model.decode(codes).shape == video.shape
  np.testing.assert_array_equal(encode_chunks(model, video, chunk_latents=1), codes)
  np.testing.assert_allclose(decode_chunks(model, codes, chunk_latents=1), model.decode(codes), atol=1e-5)
  z = model.encoder(video, Stream())
  changed = model.encoder(video.at[:, 4].set(-video[:, 4]), Stream())  # frame 4: latent frame 1's last
  np.testing.assert_array_equal(changed[:, :1], z[:, :1])
  assert (changed[:, 1] != z[:, 1]).any()
  for bad in (0, 1.5):
    with pytest.raises(ConfigError, match="patch"):
      VidtokConfig(patch=bad)


def test_codebook_health_counts():
  codes = jnp.array([0, 0, 1, 3])
  health = lfq.codebook_health(codes, 2)
  assert int(health["codes_used"]) == 3 and float(health["usage_fraction"]) == 0.75
  np.testing.assert_allclose(health["usage_entropy_bits"], 1.5)  # p = (1/2, 1/4, 1/4)
  np.testing.assert_allclose([health["bit_balance_min"], health["bit_balance_max"]], [0.25, 0.5])


@pytest.mark.parametrize("shape,message", [
    ((1, 4, 32, 32, 3), "1 \\+ 4k frames"),
    ((1, 5, 32, 32, 4), "RGB"),
    ((5, 32, 32, 3), "batch"),
    ((1, 5, 30, 32, 3), "multiples of 8"),
])
def test_bad_video_shapes_are_named(tok, shape, message):
  with pytest.raises(ValueError, match=message):
    tok.encode(jnp.zeros(shape))


def test_pixel_range_is_checked(tok):
  with pytest.raises(ValueError, match="x / 127.5 - 1"):
    tok.encode(jnp.full((1, 5, 32, 32, 3), 200.0))


def test_config_errors():
  with pytest.raises(ConfigError, match="1 \\+ 4k"):
    configs.load("vidtok_tiny", ["train.frames=8"])
  with pytest.raises(ConfigError, match="time_downsample"):
    VidtokConfig(multipliers=(1, 2), time_downsample=(True, True))
  with pytest.raises(ConfigError, match="entropy_groups"):
    VidtokConfig(bits=18, entropy_groups=1)
  with pytest.raises(ConfigError, match="quantizer"):
    VidtokConfig(quantizer="vq")
  with pytest.raises(ConfigError, match="power of two"):
    VidtokConfig(bits=8, quantizer="fsq", fsq_levels=(8, 5, 5))
  with pytest.raises(ConfigError, match="2\\*\\*vidtok.bits"):
    VidtokConfig(bits=8, quantizer="fsq", fsq_levels=(4, 4, 4))
  with pytest.raises(ConfigError, match="quantizer=fsq"):
    VidtokConfig(bits=4, fsq_levels=(4, 4))


def test_metrics_are_sane():
  video = _video(5)
  assert np.isinf(np.asarray(metrics.psnr(video, video))).all()
  noisy = jnp.clip(video + 0.1 * jax.random.normal(jax.random.key(1), video.shape), -1, 1)
  assert 15 < float(metrics.psnr(noisy, video).mean()) < 40
  assert float(metrics.ssim(noisy, video).mean()) < float(metrics.ssim(video, video).mean())
  assert float(metrics.lpips(video, video).max()) < 1e-6 < float(metrics.lpips(noisy, video).mean())


@pytest.mark.slow
def test_train_step_equal_on_1_and_8_devices():
  """GAN, LPIPS, LeCAM, R1 and EMA all on: one and eight devices give the same losses."""
  cfg = configs.load("vidtok_tiny")
  video = np.random.default_rng(0).integers(0, 255, (8, 5, 32, 32, 3), dtype=np.uint8)
  results = []
  for shape in [(1, 1, 1), (2, 2, 2)]:
    mesh = sharding.make_mesh(shape, jax.devices()[:int(np.prod(shape))])
    ts = tokenizer_step.init_state(cfg, mesh)
    step = tokenizer_step.make_step(cfg, mesh, ts)
    state, out = ts.state, None
    for i in range(2):
      state, out = step(state, video, jnp.int32(i), metrics.lpips_params())
    results.append({k: float(v) for k, v in out.items()})
  one, eight = results
  assert one["finite"] == 1.0 and one["d_loss"] > 0 and one["perceptual"] > 0
  for key in ("loss", "recon", "perceptual", "entropy_batch", "d_loss", "codes_used"):
    np.testing.assert_allclose(eight[key], one[key], rtol=2e-4, err_msg=key)
