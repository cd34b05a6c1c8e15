"""VideoPoet-scale 8B-class prefix-LM: 6.98B non-embedding (9.42B total) parameters, 298,496 ids.

On a TPU v5p-256 or larger (the same command on every host), params and optimizer state sharded
over fsdp, heads/MLP/vocab over a tensor axis of 4:
  kineto --distributed lm train --config configs/lm_8b.py --workdir /mnt/shared/lm_8b --set mesh.tensor=4
"""
from configs._pod import MAX_LEN, VOCAB, pod_config
from configs.schema import LmConfig


def get_config():
  return pod_config("lm_8b", LmConfig(
      vocab=VOCAB, embed=4096, layers=32, heads=32, kv_heads=8, mlp=14336, max_len=MAX_LEN,
      dtype="bfloat16", remat_policy="nothing_saveable", attention_block=512,
      loss_chunk=256), batch_size=1024)
