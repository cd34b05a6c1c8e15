"""A tiny prefix-LM for tests and the CPU smoke run (0.16M parameters).

  kineto lm train --config configs/lm_tiny.py --workdir /tmp/lm_tiny --set train.steps=40

Trains in well under a minute on 2 CPU cores; on the bundled text corpus the loss falls
from ~6.8 at step 0 (uniform over 512 ids would be 6.24) to a held-out loss below 3 in 40
steps (2.51-2.65 over seeds 0-2; tests/train/test_train.py holds it to that).
"""
from configs.schema import Config, LmConfig, MeshConfig, TrainConfig


def get_config() -> Config:
  return Config(
      name="lm_tiny",
      lm=LmConfig(vocab=512, embed=64, layers=2, heads=4, kv_heads=2, mlp=176, max_len=128,
                  attention_block=32, loss_chunk=32, remat_policy="nothing_saveable"),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=TrainConfig(steps=40, batch_size=8, seq_len=128, learning_rate=3e-3, warmup_steps=5),
  )
