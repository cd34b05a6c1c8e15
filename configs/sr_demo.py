"""The demo's token-space super-resolution stage: 3x8x8 -> 3x16x16 codes of 10 bits (64x64 -> 128x128).

  kineto demo                                    # builds everything this config reads
  kineto sr train --config configs/sr_demo.py --workdir outputs/demo/sr \
      --set data.tokens_dir=outputs/demo/sr_tokens

Reads pairs written by `kineto tokenize --lowres 2` of the demo's 9x128x128 clips with the
demo tokenizer (fully convolutional, so 128x128 clips give 3x16x16 codes and their 64x64
downsampled versions the 3x8x8 codes the base LM generates). Spatial layers attend in 4x4
windows of one latent frame, temporal layers along all 3 latent frames. Small (0.2M
parameters, 150 steps, ~0.3-0.6 s a step on 2 CPU cores) to fit the demo's budget.
"""
from configs.schema import LmConfig, MeshConfig, SrConfig, SrDataConfig, SrModelConfig, TrainConfig


def get_config() -> SrConfig:
  return SrConfig(
      name="sr_demo",
      sr=SrModelConfig(video_bits=10, frames=3, height=16, width=16, scale=2, window=4, temporal_window=0,
                       text_vocab=256, text_budget=16),
      lm=LmConfig(vocab=1024, embed=64, layers=2, heads=2, kv_heads=1, mlp=176, max_len=768,
                  attention_block=0, remat_policy="none"),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=TrainConfig(steps=150, batch_size=8, seq_len=768, learning_rate=3e-3, warmup_steps=15,
                        log_every=10, checkpoint_every=50),
      data=SrDataConfig(tokens_dir="outputs/demo/sr_tokens", cond_dropout=0.1),
  )
