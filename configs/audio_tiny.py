"""A tiny audio codec for tests: the real 320x hop (16 kHz -> 50 Hz), 2 levels x 32 codes.

  kineto audio train --config configs/audio_tiny.py --workdir /tmp/audio_tiny \
      --set train.data_dir=DATASET
"""
from configs.schema import AudioCodecConfig, AudioConfig, AudioTrainConfig, MeshConfig


def get_config() -> AudioConfig:
  return AudioConfig(
      name="audio_tiny",
      codec=AudioCodecConfig(channels=4, channel_mults=(2, 4, 8, 8), residual_units=1, kernel_size=5,
                             latent_dim=16, levels=2, codebook_size=32, stft_windows=(512, 128),
                             mel_bins=32, quantizer_dropout=0.5),
      mesh=MeshConfig(data=-1, fsdp=1, tensor=1),
      train=AudioTrainConfig(steps=4, batch_size=8, crop_seconds=0.2, learning_rate=2e-3,
                             warmup_steps=1, log_every=1, audio_every=2, checkpoint_every=2,
                             eval_clips=2),
  )
