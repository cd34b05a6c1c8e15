"""The demo audio codec: 16 kHz -> 50 Hz latents, 4 RVQ levels x 256 codes (1.6 kbit/s).

  kineto data demo --out outputs/data/demo
  kineto audio train --config configs/audio_demo.py --workdir outputs/demo/audio

Trains on the audio of the demo dataset's training clips with sound (bigbuckbunny's first
half) plus bundled speech (espeak-ng) for variety, and is scored on the validation split's
clips with sound (bigbuckbunny's second half, never trained on). Narrow (base width 8,
one residual unit per block) so that it trains in about a minute and a half on two CPU
cores; `python -m vidtok.audio.demo` trains the wider `presets.demo()` for longer.
"""
from configs.schema import AudioConfig, AudioCodecConfig, AudioTrainConfig, MeshConfig


def get_config() -> AudioConfig:
  return AudioConfig(
      name="audio_demo",
      codec=AudioCodecConfig(channels=8, channel_mults=(2, 4, 8, 8), residual_units=1, latent_dim=32,
                             levels=4, codebook_size=256, stft_windows=(1024, 512, 256, 128, 64),
                             mel_bins=64, waveform_weight=1.0),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=AudioTrainConfig(data_dir="outputs/data/demo", extra_audio="espeak", steps=300,
                             batch_size=8, crop_seconds=0.4, learning_rate=2e-3, warmup_steps=30,
                             log_every=10, audio_every=100, checkpoint_every=100),
  )
