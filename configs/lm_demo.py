"""The demo's multi-task LM: text, video and audio tokens of the bundled clips (4.2M params).

  kineto demo                                    # builds everything this config reads
  kineto lm train --config configs/lm_demo.py --workdir outputs/demo/lm \
      --set data.tokens_dir=outputs/demo/tokens --set lm.max_len=512 --set train.seq_len=512

Reads the token shards `kineto demo` writes (the demo tokenizer's 10-bit video codes,
caption pieces, and the audio codec's 4 x 256 RVQ codes) and trains the VideoPoet-like
task mixture of `lm/mixture.py`: t2i first, then t2v, i2v, continuation, inpaint,
outpaint, v2a, a2v and av_continuation. The demo's 9-frame clips need sequences of up to
432 tokens (it sets lm.max_len=512); 17-frame clips need the default 1,024. The
vocabulary must equal the shards' own: `kineto demo` sets it from their manifest (and
pads lm.vocab to a multiple of 128); the LM trainer refuses a mismatch.
"""
from configs.schema import Config, LmConfig, LmDataConfig, MeshConfig, TrainConfig, VocabConfig


def get_config() -> Config:
  vocab = VocabConfig(special=32, text=256, video_bits=10, audio_levels=4, audio_codebook=256)
  return Config(
      name="lm_demo",
      vocab=vocab,
      lm=LmConfig(vocab=vocab.size, embed=256, layers=4, heads=4, kv_heads=2, mlp=704,
                  max_len=1024, attention_block=128, loss_chunk=256, remat_policy="nothing_saveable"),
      mesh=MeshConfig(data=1, fsdp=-1, tensor=1),
      train=TrainConfig(steps=300, batch_size=8, seq_len=1024, learning_rate=2e-3,
                        warmup_steps=30, log_every=10, checkpoint_every=100),
      data=LmDataConfig(source="tokens", tokens_dir="outputs/demo/tokens"),
  )
