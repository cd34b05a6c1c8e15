"""The benchmark shape: d=512, 8 layers, 8 heads, 4x-equivalent MLP, vocab 8192, seq 1280.

  python bench/lm_step.py            # measures MFU and tokens/s of one training step

float32, batch 4, no rematerialization (activations fit easily at this size). The SwiGLU
width 1408 is 8/3 x 512 rounded up to a multiple of 128: the same MLP parameter count
(+3%) as the 4x GELU MLP of a plain decoder, so tokens/s compare at equal work.
"""
from configs.schema import Config, LmConfig, MeshConfig, TrainConfig, VocabConfig


def get_config() -> Config:
  return Config(
      name="lm_bench",
      # 8,192 ids: 256 special, 256 byte pieces (the bundled text corpus), 2**12 video codes,
      # and 4 x 896 audio codes.
      vocab=VocabConfig(special=256, text=256, video_bits=12, audio_levels=4, audio_codebook=896),
      lm=LmConfig(vocab=8192, embed=512, layers=8, heads=8, kv_heads=8, mlp=1408, max_len=1280,
                  qk_norm=False, attention_block=256, attention_impl="cpu", matmul_impl="cpu", loss_chunk=640,
                  remat_policy="none", scan_unroll=8, z_loss=0.0),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=TrainConfig(steps=10, batch_size=4, seq_len=1280, learning_rate=1e-3, warmup_steps=2),
  )
