"""VideoPoet-scale 300M prefix-LM: 308M non-embedding (920M total) parameters, 298,496-id vocabulary.

On a TPU pod slice or GPU node (the same command on every host):
  kineto --distributed lm train --config configs/lm_300m.py --workdir /mnt/shared/lm_300m
It keeps every projection for the backward pass (no recompute of the matmuls), which 95 GiB
chips afford at 32 rows per chip (v5p-16); the loss chunk is 64 positions: 32 x 64 x 298,496
x 4 B = 2.4 GB of float32 logits per chip.
"""
from configs._pod import MAX_LEN, VOCAB, pod_config
from configs.schema import LmConfig


def get_config():
  return pod_config("lm_300m", LmConfig(
      vocab=VOCAB, embed=1024, layers=24, heads=16, kv_heads=16, mlp=2816, max_len=MAX_LEN,
      dtype="bfloat16", remat_policy="dots_with_no_batch_dims_saveable", attention_block=512,
      loss_chunk=64), batch_size=256)
