"""The audio codec at VideoPoet's scale: 16 kHz -> 50 Hz latents, 4 RVQ levels x 1,024 codes
(2 kbit/s), with a multi-scale waveform discriminator (SoundStream).

  kineto --distributed audio train --config configs/audio_soundstream.py \
      --workdir /mnt/runs/audio --set train.data_dir=/mnt/data/clips

Its codes fill the pod LM configs' audio range (`configs/_pod.py`: 4 x 1,024 = 4,096 ids);
a 2.125 s clip (17 frames at 8 fps) is 106 latent frames, 424 audio tokens. Base width 32
with widths x (2, 4, 8, 16) and 3 residual units per block: 9.8M codec parameters; on CPU
it encodes about 24x and decodes about 28x faster than real time (`bench/audio_codec.py`).
Sized for accelerators: 1 s crops, batch 32, 100k steps; not trained in this repository,
so there is no measured quality figure yet (a run writes summary.json: spectral distance
and SNR in dB per number of levels, on the validation split's clips with sound).
"""
from configs.schema import AudioCodecConfig, AudioConfig, AudioTrainConfig, MeshConfig


def get_config() -> AudioConfig:
  return AudioConfig(
      name="audio_soundstream",
      codec=AudioCodecConfig(channels=32, channel_mults=(2, 4, 8, 16), residual_units=3, latent_dim=128,
                             levels=4, codebook_size=1024,
                             stft_windows=(2048, 1024, 512, 256, 128, 64), mel_bins=80,
                             discriminator=True, disc_channels=16, disc_scales=3, disc_downsamples=4),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=AudioTrainConfig(steps=100_000, batch_size=32, crop_seconds=1.0, learning_rate=3e-4,
                             warmup_steps=1_000, log_every=100, audio_every=5_000,
                             checkpoint_every=5_000, keep_last=3, keep_every=25_000, eval_clips=64),
  )
