"""VideoPoet-scale 8B-class prefix-LM: 6.98B non-embedding (9.42B total) parameters, 298,496 ids.

On a TPU v5p-128 or larger (the same command on every host), params, optimizer state and the
batch sharded over fsdp (1,024 rows on 64 chips: 16 rows per chip):
  kineto --distributed lm train --config configs/lm_8b.py --workdir /mnt/shared/lm_8b
`--set mesh.tensor=4` also splits heads/MLP/vocab, but the rows then split over fsdp alone (64 per
chip on v5p-128), which does not fit: bench/NOTES.md has the arithmetic. The loss chunk is 64
positions: 16 rows x 64 x 298,496 x 4 B = 1.2 GB of float32 logits per chip.
"""
from configs._pod import MAX_LEN, VOCAB, pod_config
from configs.schema import LmConfig


def get_config():
  return pod_config("lm_8b", LmConfig(
      vocab=VOCAB, embed=4096, layers=32, heads=32, kv_heads=8, mlp=14336, max_len=MAX_LEN,
      dtype="bfloat16", remat_policy="nothing_saveable", attention_block=512,
      loss_chunk=64), batch_size=1024)
