"""The MAGVIT-v2-scale video tokenizer: 128 base channels x (1, 2, 2, 4), 4 residual blocks
per level, 18-bit LFQ (262,144 codes, entropy over two 9-bit groups); 17x128x128 -> 5x16x16.

  kineto tokenizer train --config configs/vidtok_magvit2.py --workdir /mnt/shared/vidtok_magvit2 \
      --set train.data_dir=/mnt/shared/data/clips128

Sized for accelerators (bench/vidtok_throughput.py times it on CPU).
"""
from configs.schema import MeshConfig, TokenizerConfig, VidtokConfig, VidtokTrainConfig


def get_config() -> TokenizerConfig:
  return TokenizerConfig(
      name="vidtok_magvit2",
      vidtok=VidtokConfig(channels=128, multipliers=(1, 2, 2, 4), res_blocks=4,
                          time_downsample=(False, True, True), bits=18, norm_groups=32,
                          entropy_groups=2),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=VidtokTrainConfig(data_dir="/mnt/shared/data/clips128", frames=17, steps=1_000_000,
                              batch_size=256, learning_rate=1e-4, warmup_steps=5000,
                              checkpoint_every=5000, keep_last=3, keep_every=100_000,
                              perceptual_weight=0.1, perceptual_frames=4, gan_weight=0.1,
                              disc_start=20_000, disc_channels=64, lecam_weight=0.001,
                              ema_decay=0.999, image_every=5000, log_every=100),
  )
