"""Held-out quality of the audio codec: reconstruction with the first n levels, multi-scale
spectral distance (dB) and SNR (dB). Shape letters: B batch, S samples."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import vidtok.audio.losses as losses
from vidtok.audio.codec import AudioCodec


def reconstruct(codec: AudioCodec, wave_bs, *, levels: int | None = None) -> jax.Array:
  """decode(encode(wave)) with the first `levels` levels: [B, floor(S / hop) * hop]."""
  return codec.decode(codec.encode(wave_bs, levels=levels))


def evaluate(codec: AudioCodec, waves_bs, *, levels: int | None = None
             ) -> dict[str, float]:
  """Held-out reconstruction quality: multi-scale spectral distance (dB) and SNR (dB).

  Both are means over the batch; the reference is the encoded part of each wave (its
  first floor(S / hop) * hop samples).
  """
  waves_bs = np.asarray(waves_bs, np.float32)
  recon_bs = reconstruct(codec, waves_bs, levels=levels)
  distance_b, snr_b = _quality(jnp.asarray(waves_bs[:, :recon_bs.shape[1]]), recon_bs)
  return {"spectral_distance_db": float(jnp.mean(distance_b)), "snr_db": float(jnp.mean(snr_b)),
          "levels": codec._check_levels(levels)}


@jax.jit
def _quality(ref_bs, est_bs):
  return losses.spectral_distance_db(ref_bs, est_bs), losses.snr_db(ref_bs, est_bs)
