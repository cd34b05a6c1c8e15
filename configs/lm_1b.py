"""VideoPoet-scale 1B prefix-LM: 1.13B non-embedding (2.36B total) parameters, 298,496-id vocabulary.

On a TPU pod slice or GPU cluster (the same command on every host):
  kineto --distributed lm train --config configs/lm_1b.py --workdir /mnt/shared/lm_1b
The loss chunk is 128 positions: at 8 rows per chip (v5e-64) 8 x 128 x 298,496 x 4 B = 1.2 GB of
float32 logits, which is what lets the step fit 16 GiB chips.
"""
from configs._pod import MAX_LEN, VOCAB, pod_config
from configs.schema import LmConfig


def get_config():
  return pod_config("lm_1b", LmConfig(
      vocab=VOCAB, embed=2048, layers=24, heads=16, kv_heads=8, mlp=5632, max_len=MAX_LEN,
      dtype="bfloat16", remat_policy="nothing_saveable", attention_block=512,
      loss_chunk=128), batch_size=512)
