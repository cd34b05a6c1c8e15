"""The demo audio codec: 16 kHz -> 50 Hz latents, 4 RVQ levels x 256 codes (1.6 kbit/s).

  kineto data demo --out outputs/data/demo
  kineto audio train --config configs/audio_demo.py --workdir outputs/demo/audio

Trains on the sound of the demo dataset's training clips: the Atari games' own audio
(recorded with the screens, in real time) and bigbuckbunny's first half; it is scored on
the validation split's clips with sound (other game episodes, bigbuckbunny's second half),
never trained on. `--set train.extra_audio=espeak,sonic_pi` adds espeak-ng speech and
Debian's sonic-pi samples (both installed with apt) for variety. Narrow (base width 8, one
residual unit per block) so that 400 steps take about 1.5 minutes on two CPU cores (~0.2 s
a step); `configs/audio_soundstream.py` is VideoPoet's scale. Short training: expect a
spectral envelope, not clean audio (see summary.json).
"""
from configs.schema import AudioCodecConfig, AudioConfig, AudioTrainConfig, MeshConfig


def get_config() -> AudioConfig:
  return AudioConfig(
      name="audio_demo",
      codec=AudioCodecConfig(channels=8, channel_mults=(2, 4, 8, 8), residual_units=1, latent_dim=32,
                             levels=4, codebook_size=256, stft_windows=(1024, 512, 256, 128, 64),
                             mel_bins=64, waveform_weight=1.0),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=AudioTrainConfig(data_dir="outputs/data/demo", extra_audio="",
                             extra_max_seconds=1.0, steps=400, batch_size=8, crop_seconds=0.25,
                             gain_db=12.0, learning_rate=3e-3, warmup_steps=30, log_every=10,
                             audio_every=100, checkpoint_every=100),
  )
