"""Shared pieces of the VideoPoet-scale configs (lm_300m, lm_1b, lm_8b); not a config itself.

The vocabulary follows VideoPoet: 256 special and task tokens, 32,000 SentencePiece text
pieces, 262,144 video codes (18-bit LFQ) and 4,096 audio codes (4 RVQ levels x 1,024):
298,496 ids in all, a multiple of 256 so it shards evenly over the tensor axis. A clip is
17 frames at 128x128 -> 5x16x16 = 1,280 video tokens. The longest tasks, inpainting and
outpainting, lay out <bos> <task> + (2 + caption) + (2 + 1,280 masked video) + (2 + 1,280
video) + <eos>: 2,569 + caption tokens, so a caption budget of TEXT_BUDGET = 64 pieces needs
2,633 (bucket 2,640) and MAX_LEN = 2,656 (= 83 x 32) leaves room for captions of up to 80
pieces (`--set data.text_budget=80`). The other tasks need at most 1,715 (av_continuation)
at 64 pieces; tests/train/test_lm_data.py builds every task's buckets at this size.
"""
from configs.schema import Config, LmConfig, LmDataConfig, MeshConfig, TrainConfig, VocabConfig

VOCAB_LAYOUT = VocabConfig(special=256, text=32_000, video_bits=18, audio_levels=4, audio_codebook=1024)
VOCAB = VOCAB_LAYOUT.size  # 256 + 32,000 + 262,144 + 4,096 = 298,496
MAX_LEN = 2656
TEXT_BUDGET = 64


def pod_config(name: str, lm: LmConfig, *, batch_size: int, tensor: int = 1) -> Config:
  return Config(
      name=name, vocab=VOCAB_LAYOUT, lm=lm,
      mesh=MeshConfig(data=1, fsdp=-1, tensor=tensor),
      data=LmDataConfig(text_budget=TEXT_BUDGET),
      train=TrainConfig(steps=500_000, batch_size=batch_size, seq_len=MAX_LEN, learning_rate=3e-4,
                        warmup_steps=2_000, log_every=50),
  )
