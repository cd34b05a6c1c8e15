"""A tiny video tokenizer for tests (4x8x8 compression, 8-bit LFQ, 256 codes).

  kineto tokenizer train --config configs/vidtok_tiny.py --workdir /tmp/vidtok_tiny --set train.steps=4
"""
from configs.schema import MeshConfig, TokenizerConfig, VidtokConfig, VidtokTrainConfig


def get_config() -> TokenizerConfig:
  return TokenizerConfig(
      name="vidtok_tiny",
      vidtok=VidtokConfig(channels=8, multipliers=(1, 2, 2, 2), res_blocks=1,
                          time_downsample=(False, True, True), bits=8, norm_groups=4),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=VidtokTrainConfig(frames=5, steps=4, batch_size=8, learning_rate=2e-3, warmup_steps=2,
                              log_every=1, perceptual_weight=0.1, perceptual_frames=2,
                              gan_weight=0.1, disc_channels=8, lecam_weight=0.001, r1_weight=0.1,
                              ema_decay=0.9),
  )
