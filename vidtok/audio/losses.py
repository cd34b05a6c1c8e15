"""Losses and metrics of the audio codec, in pure JAX.

- Multi-scale spectral reconstruction loss: for each STFT window (hop = window / 4, Hann),
  spectral convergence + L1 of log magnitudes, and L1 of log-mel magnitudes (mel
  filterbank built in numpy, HTK mel scale). The STFT is our own: frames cut from the
  padded waveform by reshapes (no gather) and `jnp.fft.rfft`.
- Adversarial losses (hinge or least squares) and feature matching for the optional
  waveform discriminator (`discriminator.py`).
- Metrics: multi-scale log-spectral distance in dB and SNR in dB.

Magnitudes are divided by the window's sum, so a full-scale sine peaks near 0.5 at every
window size and the scales weigh alike. Shape letters: B batch, S samples, F STFT frames,
K frequency bins, M mel bins.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# The metric's windows are fixed (not the config's loss windows), so distances of
# different configs compare. 64..1024 samples = 4..64 ms at 16 kHz.
METRIC_WINDOWS = (1024, 512, 256, 128, 64)
_LOG_EPS = 1e-5
_DB_FLOOR = 1e-4   # magnitude floor of the dB metric: -80 dB re a full-scale sine's 0.5 peak


def stft_magnitude(wave_bs: jax.Array, window: int) -> jax.Array:
  """|STFT| [B, F, window / 2 + 1] with a Hann window, hop window / 4, centered frames."""
  hop, overlap = window // 4, 4
  b, s = wave_bs.shape
  # Pad window/2 on both sides (centered frames), then up to a whole number of hops.
  n_hops = -(-(s + window) // hop)
  x_bs = jnp.pad(wave_bs, ((0, 0), (window // 2, n_hops * hop - s - window // 2)))
  blocks_bnh = x_bs.reshape(b, n_hops, hop)
  n_frames = n_hops - overlap + 1
  frames_bfw = jnp.concatenate([blocks_bnh[:, i:i + n_frames] for i in range(overlap)], axis=-1)
  hann_w = jnp.asarray(np.hanning(window + 1)[:-1], jnp.float32)  # periodic Hann
  spec_bfk = jnp.fft.rfft(frames_bfw * hann_w, axis=-1)
  power = jnp.real(spec_bfk) ** 2 + jnp.imag(spec_bfk) ** 2
  # The epsilon keeps the gradient of sqrt finite at silent bins.
  return jnp.sqrt(power + 1e-12) / jnp.sum(hann_w)


@functools.lru_cache(maxsize=32)
def mel_filterbank(window: int, n_mels: int, sample_rate: int) -> np.ndarray:
  """Triangular filters [K, M] on the HTK mel scale from 0 Hz to Nyquist, area-normalized."""
  def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + f / 700.0)

  def mel_to_hz(m):
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

  freqs_k = np.linspace(0, sample_rate / 2, window // 2 + 1)
  edges = mel_to_hz(np.linspace(0, hz_to_mel(sample_rate / 2), n_mels + 2))
  lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
  rising = (freqs_k[None] - lower) / (center - lower)
  falling = (upper - freqs_k[None]) / (upper - center)
  bank_mk = np.maximum(0.0, np.minimum(rising, falling))
  # Narrow low filters can fall between bins: give such a filter its nearest bin.
  for m in np.flatnonzero(bank_mk.sum(1) == 0):
    bank_mk[m, np.argmin(np.abs(freqs_k - center[m, 0]))] = 1.0
  bank_mk /= bank_mk.sum(1, keepdims=True)
  return bank_mk.T.astype(np.float32)


def mel_bins_for(window: int, mel_bins: int) -> int:
  """Fewer mel bins for short windows (few frequency bins): window / 8, capped at mel_bins."""
  return max(4, min(mel_bins, window // 8))


def spectral_loss(ref_bs: jax.Array, est_bs: jax.Array, windows, *, mel_bins: int = 0,
                  sample_rate: int = 16_000) -> dict[str, jax.Array]:
  """Multi-scale spectral terms, each averaged over the windows.

  stft: spectral convergence ||M - M'||_F / ||M||_F + mean |log M - log M'|;
  mel: mean |log mel - log mel'| (only when mel_bins > 0).
  """
  stft_terms, mel_terms = [], []
  for window in windows:
    mag_ref, mag_est = stft_magnitude(ref_bs, window), stft_magnitude(est_bs, window)
    convergence = (jnp.sqrt(jnp.sum((mag_ref - mag_est) ** 2))
                   / jnp.maximum(jnp.sqrt(jnp.sum(mag_ref ** 2)), 1e-6))
    log_l1 = jnp.mean(jnp.abs(jnp.log(mag_ref + _LOG_EPS) - jnp.log(mag_est + _LOG_EPS)))
    stft_terms.append(convergence + log_l1)
    if mel_bins:
      bank_km = jnp.asarray(mel_filterbank(window, mel_bins_for(window, mel_bins), sample_rate))
      mel_ref, mel_est = mag_ref @ bank_km, mag_est @ bank_km
      mel_terms.append(jnp.mean(jnp.abs(jnp.log(mel_ref + _LOG_EPS) - jnp.log(mel_est + _LOG_EPS))))
  out = {"stft": sum(stft_terms) / len(stft_terms)}
  if mel_terms:
    out["mel"] = sum(mel_terms) / len(mel_terms)
  return out


def spectral_distance_db(ref_bs: jax.Array, est_bs: jax.Array, windows=METRIC_WINDOWS) -> jax.Array:
  """Multi-scale log-spectral distance [B]: mean |dB difference| per time-frequency bin.

  Magnitudes are floored at -80 dB (re a full-scale sine), so silence compares to
  silence as 0 dB; averaged over `windows`. Lower is better.
  """
  dists = []
  for window in windows:
    db_ref = 20 * jnp.log10(jnp.maximum(stft_magnitude(ref_bs, window), _DB_FLOOR))
    db_est = 20 * jnp.log10(jnp.maximum(stft_magnitude(est_bs, window), _DB_FLOOR))
    dists.append(jnp.mean(jnp.abs(db_ref - db_est), axis=(1, 2)))
  return sum(dists) / len(dists)


def snr_db(ref_bs: jax.Array, est_bs: jax.Array) -> jax.Array:
  """Signal-to-noise ratio [B] in dB: 10 log10(sum ref^2 / sum (ref - est)^2)."""
  signal = jnp.sum(ref_bs ** 2, axis=-1)
  noise = jnp.sum((ref_bs - est_bs) ** 2, axis=-1)
  return 10 * jnp.log10(jnp.maximum(signal, 1e-12) / jnp.maximum(noise, 1e-12))


# --- adversarial ------------------------------------------------------------------------
def discriminator_loss(real_logits, fake_logits, kind: str) -> jax.Array:
  """D's loss over the scales: hinge max(0, 1 - D(x)) + max(0, 1 + D(G)), or LS (D(x)-1)^2 + D(G)^2."""
  terms = []
  for real, fake in zip(real_logits, fake_logits):
    if kind == "hinge":
      terms.append(jnp.mean(jax.nn.relu(1 - real)) + jnp.mean(jax.nn.relu(1 + fake)))
    else:
      terms.append(jnp.mean((real - 1) ** 2) + jnp.mean(fake ** 2))
  return sum(terms) / len(terms)


def generator_adversarial_loss(fake_logits, kind: str) -> jax.Array:
  """G's adversarial loss: hinge max(0, 1 - D(G)) (SoundStream) or LS (D(G) - 1)^2."""
  terms = []
  for fake in fake_logits:
    terms.append(jnp.mean(jax.nn.relu(1 - fake)) if kind == "hinge" else jnp.mean((fake - 1) ** 2))
  return sum(terms) / len(terms)


def feature_matching_loss(real_features, fake_features) -> jax.Array:
  """Mean over D's layers of |f(x) - f(G)| / mean |f(x)| (real features held fixed)."""
  terms = []
  for real, fake in zip(real_features, fake_features):
    real = jax.lax.stop_gradient(real)
    terms.append(jnp.mean(jnp.abs(real - fake)) / jnp.maximum(jnp.mean(jnp.abs(real)), 1e-6))
  return sum(terms) / len(terms)
