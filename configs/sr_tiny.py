"""A tiny token-space SR stage for tests and the CPU smoke run (5x2x2 -> 5x4x4 codes of 8 bits).

  kineto sr train --config configs/sr_tiny.py --workdir /tmp/sr_tiny --set data.tokens_dir=TOKENS

TOKENS: shards of `kineto tokenize --lowres 2` of 17x32x32 clips with vidtok_tiny (8 bits, 8x
spatial compression: the tests' chain). A few steps take seconds on 2 CPU cores.
"""
from configs.schema import LmConfig, MeshConfig, SrConfig, SrDataConfig, SrModelConfig, TrainConfig


def get_config() -> SrConfig:
  return SrConfig(
      name="sr_tiny",
      sr=SrModelConfig(video_bits=8, frames=5, height=4, width=4, scale=2, window=2, text_vocab=256),
      lm=LmConfig(vocab=64, embed=32, layers=2, heads=2, kv_heads=1, mlp=96, max_len=80,
                  attention_block=0, remat_policy="none"),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=TrainConfig(steps=4, batch_size=8, seq_len=80, learning_rate=3e-3, warmup_steps=1,
                        log_every=1, checkpoint_every=2),
      data=SrDataConfig(tokens_dir="", cond_dropout=0.1),
  )
