"""The audio codec (vidtok/audio): causality, shapes and rates, RVQ on real audio features,
input errors, resampling, and training steps on the real bigbuckbunny soundtrack."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
from configs import ConfigError
from configs.schema import AudioCodecConfig
from train import audio_step
from train.data import audio as audio_files
from vidtok import audio
from vidtok.audio import losses
from vidtok.audio.rvq import ResidualVQ


def tiny_codec(**overrides) -> AudioCodecConfig:
  """`configs/audio_tiny.py`'s codec with 4 levels and a small discriminator (4 channels,
  2 scales, 2 downsamples) for the adversarial test, plus `overrides`."""
  return dataclasses.replace(configs.load("audio_tiny").codec, levels=4, disc_channels=4,
                             disc_scales=2, disc_downsamples=2, **overrides)


@pytest.fixture(scope="module")
def bunny():
  """The real 5.3 s soundtrack of bigbuckbunny.mp4 at 16 kHz mono, peak-normalized."""
  return audio.peak_normalize(audio_files.load_bigbuckbunny())


@pytest.fixture(scope="module")
def codec():
  return audio.AudioCodec(tiny_codec(), rngs=nnx.Rngs(0))


def test_config_rates_and_validation():
  cfg = AudioCodecConfig()
  assert (cfg.hop, cfg.frame_rate, cfg.clip_samples, cfg.clip_frames) == (320, 50.0, 34_000, 106)
  vp = configs.load("audio_soundstream").codec
  assert (vp.levels, vp.codebook_size, vp.clip_frames) == (4, 1024, 106)
  for bad, message in [(dict(codebook_mode="kmeans"), "codebook_mode='kmeans'"),
                       (dict(channel_mults=(2, 4)), "one multiplier >= 1 per stride"),
                       (dict(quantizer_dropout=1.5), "probability"),
                       (dict(stft_windows=(100,)), "power of two"),
                       (dict(stft_weight=0, mel_weight=0), "no reconstruction loss"),
                       (dict(clip_seconds=0.01), "fewer than one latent frame")]:
    with pytest.raises(ConfigError, match=message):
      AudioCodecConfig(**bad)


def test_encode_decode_shapes_and_rates(codec, bunny):
  cfg = codec.cfg
  for samples in (320, 1000, cfg.clip_samples):
    codes = codec.encode(bunny[None, :samples])
    frames = samples * 50 // 16_000
    assert codes.shape == (1, cfg.levels, frames) and codes.dtype == jnp.int32
    assert 0 <= int(codes.min()) and int(codes.max()) < cfg.codebook_size
    wave = codec.decode(codes)
    assert wave.shape == (1, frames * cfg.hop) and bool(jnp.isfinite(wave).all())
  # Fewer levels decode too (a shorter, coarser token sequence), and differ from all levels.
  coarse = codec.decode(codes[:, :2])
  assert coarse.shape == wave.shape and not np.allclose(coarse, wave)
  assert codec.encode(bunny[None, :cfg.clip_samples], levels=2).shape == (1, 2, 106)


def test_encoder_and_decoder_are_causal(codec, bunny):
  hop = codec.cfg.hop
  wave = bunny[None, 16_000:16_000 + 20 * hop].copy()
  t = 11 * hop + 137                      # inside latent frame 11
  bumped = wave.copy()
  bumped[0, t] += 0.5
  z, z_bumped = codec.latents(wave), codec.latents(bumped)
  codes, codes_bumped = codec.encode(wave), codec.encode(bumped)
  # Frames 0..10 end before sample t: their latents and codes cannot change ...
  np.testing.assert_array_equal(z[:, :11], z_bumped[:, :11])
  np.testing.assert_array_equal(codes[:, :, :11], codes_bumped[:, :, :11])
  # ... and the frame holding t does (so the check above can fail).
  assert not np.allclose(z[:, 11], z_bumped[:, 11])
  # Decoder: changing the codes of frame 7 leaves every sample before 7 * hop unchanged.
  codes_changed = np.asarray(codes).copy()
  codes_changed[:, :, 7] = (codes_changed[:, :, 7] + 1) % codec.cfg.codebook_size
  out, out_changed = codec.decode(codes), codec.decode(codes_changed)
  np.testing.assert_array_equal(out[:, :7 * hop], out_changed[:, :7 * hop])
  assert not np.allclose(out[:, 7 * hop:8 * hop], out_changed[:, 7 * hop:8 * hop])


def test_rvq_each_level_reconstructs_real_features_better(bunny):
  """EMA-trained RVQ on real log-mel frames (50 Hz) of the soundtrack: error falls per level."""
  wave = jnp.asarray(bunny[None])
  mel_tf = jnp.log(losses.stft_magnitude(wave, 1280)[0]
                   @ jnp.asarray(losses.mel_filterbank(1280, 32, 16_000)) + 1e-5)
  mel_tf = (mel_tf - mel_tf.mean(0)) / mel_tf.std(0)
  split = int(0.7 * mel_tf.shape[0])
  fit_x, held_x = mel_tf[None, :split], mel_tf[None, split:]
  rvq = ResidualVQ(4, 32, 32, mode="ema", ema_decay=0.8, dead_code_threshold=0.05, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(rvq)

  @jax.jit
  def ema_step(state, key):
    rvq = nnx.merge(graphdef, state)
    usage = rvq.update_codebooks(rvq(fit_x), key)
    return nnx.state(rvq), usage

  for i in range(40):
    state, usage = ema_step(state, jax.random.key(i))
  rvq = nnx.merge(graphdef, state)
  assert np.all(usage["entropy_bits"] <= 5.0 + 1e-5) and np.all(usage["used_fraction"] > 0.5)
  for x in (fit_x, held_x):
    codes = rvq(x).codes_blt
    errors = [float(jnp.mean(x ** 2))] + [float(jnp.mean((x - rvq.dequantize(codes[:, :n])) ** 2))
                                          for n in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
  assert errors[4] < 0.7 * errors[0]       # held-out: 4 levels remove > 30% of the energy


def test_bad_inputs_are_clear_errors(codec):
  cfg = codec.cfg
  with pytest.raises(ValueError, match="48000 Hz but 16000 Hz is expected; pass resample=True"):
    audio.prepare(np.zeros(4800, np.float32), 48_000, 16_000)
  with pytest.raises(ValueError, match="2 channels but the codec takes mono; pass downmix=True"):
    audio.prepare(np.zeros((1000, 2), np.float32), 16_000)
  with pytest.raises(ValueError, match="channels come first"):
    audio.prepare(np.zeros((2, 1000), np.float32), 16_000, downmix=True)
  with pytest.raises(ValueError, match="empty"):
    audio.prepare(np.zeros(0, np.float32), 16_000)
  with pytest.raises(ValueError, match="non-finite"):
    audio.prepare(np.array([0.0, np.nan], np.float32), 16_000)
  with pytest.raises(ValueError, match="8000 Hz, but the codec runs at 16000 Hz; resample first"):
    codec.encode(np.zeros((1, 3200), np.float32), sample_rate=8_000)
  with pytest.raises(ValueError, match="multi-channel: downmix"):
    codec.encode(np.zeros((1, 3200, 2), np.float32))
  with pytest.raises(ValueError, match="Add a batch axis"):
    codec.encode(np.zeros(3200, np.float32))
  with pytest.raises(ValueError, match="Empty or too-short"):
    codec.encode(np.zeros((1, 0), np.float32))
  with pytest.raises(ValueError, match="non-finite values"):
    codec.encode(np.full((1, 3200), np.inf, np.float32))
  with pytest.raises(ValueError, match="divide by 32768"):
    codec.encode(np.full((1, 3200), 1000.0, np.float32))
  with pytest.raises(ValueError, match="outside the codebook"):
    codec.decode(np.full((1, 2, 3), cfg.codebook_size, np.int32))
  with pytest.raises(ValueError, match="levels=5"):
    codec.encode(np.zeros((1, 3200), np.float32), levels=5)


def test_prepare_resamples_and_downmixes():
  t_48k = np.arange(48_000) / 48_000
  # Polyphase 48 -> 16 kHz keeps an in-band tone (440 Hz) and removes one above 8 kHz.
  tone = audio.prepare(np.sin(2 * np.pi * 440 * t_48k), 48_000, 16_000, resample=True)
  expected = np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
  assert tone.shape == (16_000,) and tone.dtype == np.float32
  assert np.abs(tone[100:-100] - expected[100:-100]).max() < 1e-3
  alias = audio.prepare(np.sin(2 * np.pi * 10_000 * t_48k), 48_000, 16_000, resample=True)
  assert np.sqrt(np.mean(alias[100:-100] ** 2)) < 1e-3
  odd = audio.resample_poly(np.sin(2 * np.pi * 440 * np.arange(44_100) / 44_100), 44_100, 16_000)
  assert odd.shape == (16_000,) and np.abs(odd[100:-100] - expected[100:-100]).max() < 1e-3
  # Downmix = mean of the channels; int16 PCM is scaled by 1 / 32768.
  stereo = np.stack([np.full(100, 0.5), np.full(100, -0.1)], axis=1)
  np.testing.assert_allclose(audio.prepare(stereo, 16_000, downmix=True), 0.2, rtol=1e-6)
  np.testing.assert_allclose(audio.prepare(np.full(10, -16_384, np.int16), 16_000), -0.5)


def test_load_audio_decodes_resamples_and_downmixes(tmp_path):
  import soundfile
  t = np.arange(22_050) / 22_050
  left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.3 * np.sin(2 * np.pi * 440 * t)
  soundfile.write(tmp_path / "tone.flac", np.stack([left, right], axis=1), 22_050, subtype="PCM_16")
  wave = audio_files.load_audio(tmp_path / "tone.flac", 16_000)
  expected = 0.4 * np.sin(2 * np.pi * 440 * np.arange(16_000) / 16_000)
  assert wave.shape == (16_000,) and np.abs(wave[100:-100] - expected[100:-100]).max() < 2e-3
  with pytest.raises(FileNotFoundError, match="does not exist"):
    audio_files.load_audio(tmp_path / "missing.wav")


def test_train_steps_lower_the_loss_on_real_audio(bunny):
  cfg = tiny_codec(quantizer_dropout=0.0)
  split = int(0.7 * len(bunny))
  held = np.stack([bunny[split:split + 8000], bunny[split + 8000:split + 16_000]])
  state = audio_step.init_state(cfg, audio_step.default_train_config(20, batch_size=4, learning_rate=3e-3))
  before = audio.evaluate(state.codec(), held)
  result = audio_step.fit(cfg, [bunny[:split]], steps=20, seed=0, crop_seconds=0.4,
                     train=audio_step.default_train_config(20, batch_size=4, learning_rate=3e-3))
  after = audio.evaluate(result.state.codec(), held)
  losses_ = [h["loss"] for h in result.history]
  assert np.isfinite(losses_).all()
  assert np.mean(losses_[-4:]) < 0.8 * np.mean(losses_[:4]), losses_
  assert after["spectral_distance_db"] < before["spectral_distance_db"] - 2.0, (before, after)
  usage = result.history[-1]
  assert len(usage["codebook_used_fraction"]) == cfg.levels
  used = [u * cfg.codebook_size for u in usage["codebook_used_fraction"]]
  assert all(n == pytest.approx(round(n)) and 1 <= round(n) <= cfg.codebook_size for n in used)  # a count
  assert all(0 <= e <= np.log2(cfg.codebook_size) for e in usage["codebook_entropy_bits"])


def test_adversarial_straight_through_step_updates_everything(bunny):
  cfg = tiny_codec(discriminator=True, codebook_mode="straight_through", adversarial_loss="least_squares")
  train = audio_step.default_train_config(3, batch_size=2, warmup_steps=0)
  state = audio_step.init_state(cfg, train, seed=1)
  before = jax.tree.map(np.asarray, (state.params, state.disc_params))
  step = audio_step.make_train_step(cfg, train)
  batch = jnp.asarray(np.stack([bunny[:6400], bunny[20_000:26_400]]))
  for _ in range(2):
    state, metrics = step(state, batch)
  for key in ("adversarial", "feature_matching", "discriminator", "codebook", "commitment"):
    assert np.isfinite(metrics[key]), key
  after = (state.params, state.disc_params)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), before, after)
  assert all(jax.tree.leaves(changed))      # every codec and discriminator weight moved
  assert int(state.step) == 2
