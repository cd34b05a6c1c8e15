"""Shared pieces of the VideoPoet-scale configs (lm_300m, lm_1b, lm_8b); not a config itself.

The vocabulary follows VideoPoet: 256 special and task tokens, 32,000 SentencePiece text
pieces, 262,144 video codes (18-bit LFQ) and 4,096 audio codes (4 RVQ levels x 1,024):
298,496 ids in all, a multiple of 256 so it shards evenly over the tensor axis. A clip is
17 frames at 128x128 -> 5x16x16 = 1,280 video tokens; with text and a visual condition a
sequence fits in 2,048 positions.
"""
from configs.schema import Config, LmConfig, MeshConfig, TrainConfig, VocabConfig

VOCAB_LAYOUT = VocabConfig(special=256, text=32_000, video_bits=18, audio_levels=4, audio_codebook=1024)
VOCAB = VOCAB_LAYOUT.size  # 256 + 32,000 + 262,144 + 4,096 = 298,496
MAX_LEN = 2048


def pod_config(name: str, lm: LmConfig, *, batch_size: int, tensor: int = 1) -> Config:
  return Config(
      name=name, vocab=VOCAB_LAYOUT, lm=lm,
      mesh=MeshConfig(data=1, fsdp=-1, tensor=tensor),
      train=TrainConfig(steps=500_000, batch_size=batch_size, seq_len=MAX_LEN, learning_rate=3e-4,
                        warmup_steps=2_000, log_every=50),
  )
