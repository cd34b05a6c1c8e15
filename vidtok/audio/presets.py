"""Named audio codec configs: `tiny()` for tests, `demo()` for a few CPU minutes, and
`soundstream()` at VideoPoet's scale (4 levels x 1024 codes, 50 Hz latents at 16 kHz).

The trainer's config files (`configs/audio_*.py`, `kineto audio train`) build their own
`AudioCodecConfig`; these presets serve the library demo, tests and benchmarks.
"""
from __future__ import annotations

from configs.schema import AudioCodecConfig


def tiny(**overrides) -> AudioCodecConfig:
  """Unit tests: the real 320x hop (strides 2, 4, 5, 8), very narrow, 4 levels x 32 codes."""
  base = dict(channels=4, channel_mults=(2, 4, 8, 8), residual_units=1, kernel_size=5,
              latent_dim=16, levels=4, codebook_size=32, stft_windows=(512, 128), mel_bins=32,
              disc_channels=4, disc_scales=2, disc_downsamples=2)
  return AudioCodecConfig(**{**base, **overrides})


def demo(**overrides) -> AudioCodecConfig:
  """Trains on CPU in a few minutes: base width 16, 3 residual units, 4 levels x 128 codes."""
  base = dict(channels=16, channel_mults=(2, 4, 8, 8), residual_units=3, latent_dim=32,
              levels=4, codebook_size=128, stft_windows=(1024, 512, 256, 128, 64), mel_bins=64,
              waveform_weight=1.0)
  return AudioCodecConfig(**{**base, **overrides})


def soundstream(**overrides) -> AudioCodecConfig:
  """VideoPoet scale: 4 levels x 1024 codes, 106 frames per 2.125 s clip, with a discriminator."""
  base = dict(channels=32, channel_mults=(2, 4, 8, 16), residual_units=3, latent_dim=128,
              levels=4, codebook_size=1024, stft_windows=(2048, 1024, 512, 256, 128, 64),
              mel_bins=80, discriminator=True, disc_channels=16, disc_scales=3, disc_downsamples=4)
  return AudioCodecConfig(**{**base, **overrides})
