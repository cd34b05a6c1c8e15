"""VideoPoet-scale 300M prefix-LM: 308M non-embedding (920M total) parameters, 298,496-id vocabulary.

On a TPU pod slice or GPU node (the same command on every host):
  kineto --distributed lm train --config configs/lm_300m.py --workdir /mnt/shared/lm_300m
It keeps every projection for the backward pass (no recompute of the matmuls): at 16 rows per
chip (v5p-32) that is 56 GiB of 95; at 32 rows (v5p-16) it needs 112 GiB, and
`--set lm.remat_policy=nothing_saveable` (recompute each layer, ~1/3 more FLOPs) brings it to
44 GiB (bench/MEMORY.md, measured by libtpu's compiler).
"""
from configs._pod import MAX_LEN, VOCAB, pod_config
from configs.schema import LmConfig


def get_config():
  return pod_config("lm_300m", LmConfig(
      vocab=VOCAB, embed=1024, layers=24, heads=16, kv_heads=16, mlp=2816, max_len=MAX_LEN,
      dtype="bfloat16", remat_policy="dots_with_no_batch_dims_saveable", attention_block=512,
      loss_chunk=64), batch_size=256)
