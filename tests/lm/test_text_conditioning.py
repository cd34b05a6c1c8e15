"""Captions as a frozen encoder's embeddings (lm.text_dim): placement in the prefix, no loss on
them, batches, and classifier-free guidance with the null caption (lm/model.py, tasks, sampling)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import configs
from configs import VocabConfig
from configs.schema import ClipSpec
from lm import Transformer, mixture, sampling, tasks
from lm.loss import next_token_loss
from lm.sampling import Sampling
from lm.vocab import Vocabulary

VOCAB = Vocabulary(VocabConfig())
SPEC = ClipSpec(frames=9, height=32, width=32, audio_hz=16.0, text_budget=6, continuation_frames=1)
E = 8  # a toy encoder width: these tests check the wiring; tests/lm/test_text_encoder.py the real encoder


@pytest.fixture(scope="module")
def model():
  cfg = configs.load("lm_tiny", ["lm.attention_block=0", "text.encoder=t5", "text.path=unused",
                                 f"lm.text_dim={E}"]).lm
  build = lambda: Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, _ = nnx.split(nnx.eval_shape(build))
  return nnx.merge(graphdef, jax.jit(lambda: nnx.state(build()))())


def example(seed=0, rows=3):
  rng = np.random.default_rng(seed)
  return {"text": rng.normal(size=(rows, E)).astype(np.float32),
          "video": rng.integers(0, VOCAB.video_size, SPEC.video_shape)}


def test_build_places_placeholders_and_returns_the_rows():
  ex = example(rows=4)
  seq = tasks.build("t2v", ex, VOCAB, spec=SPEC)
  tokens = seq["tokens"]
  bot = int(np.flatnonzero(tokens == VOCAB.special("bot_i"))[0])
  assert tokens[bot + 5] == VOCAB.special("eot_i")
  assert (tokens[bot + 1:bot + 5] == VOCAB.special("mask")).all()
  assert seq["input_mask"][:bot + 6].all() and not seq["loss_mask"][:bot + 6].any()
  np.testing.assert_array_equal(seq["text_emb"], ex["text"])
  dropped = tasks.build("t2v", ex, VOCAB, spec=SPEC, drop_condition=True)
  assert dropped["text_emb"].shape == (0, E)
  with pytest.raises(ValueError, match="text budget of 6"):
    tasks.build("t2v", example(rows=7), VOCAB, spec=SPEC)
  # Over the budget: skipped by the mixture (counted), never a crash.
  mix = mixture.Mixture([example(0, 7), example(1, 2)], VOCAB, mixture.Schedule.constant({"t2v": 1.0}),
                        total_steps=2, batch_size=2, spec=SPEC, text_dim=E)
  assert mix.skipped_captions == 1
  batch = mix.batch(0)
  assert batch["text_emb"].shape == (2, SPEC.text_budget, E)


def test_embeddings_condition_the_model_and_only_their_own_rows_count(model):
  ex = example(rows=3)
  seq = tasks.build("t2v", ex, VOCAB, spec=SPEC)
  batch = mixture.pad_batch([seq], len(seq["tokens"]), VOCAB.special("pad"), (SPEC.text_budget, E))
  tokens, emb = jnp.asarray(batch["tokens"]), jnp.asarray(batch["text_emb"])
  # One compiled call: three forward passes (the caption, padding rows changed, its last row
  # changed) and the gradient of the loss.
  @nnx.jit
  def run(m, emb):
    logits = [m(tokens, batch["input_mask"], text_emb_bse=e) for e in (emb, emb.at[:, 3:].set(5.0),
                                                                        emb.at[:, 2].add(1.0))]
    grads = nnx.grad(lambda m: next_token_loss(m, tokens, batch["input_mask"], batch["loss_mask"],
                                               text_emb_bse=emb)[0])(m)
    return logits, jnp.abs(grads.text_proj[...]).sum()
  (base, padded, other), grad_proj = run(model, emb)
  np.testing.assert_array_equal(padded, base)  # rows past the caption: no position reads them
  bot = int(np.flatnonzero(batch["tokens"][0] == VOCAB.special("bot_i"))[0])
  # Bidirectional prefix: the last caption row changes what the first caption position sees.
  assert not np.allclose(other[0, bot + 1], base[0, bot + 1])
  assert float(grad_proj) > 0  # the projection E -> D is learned


def test_guidance_scale_0_with_null_embedding_is_unconditional(model):
  examples = [example(0, 3), example(1, 5)]
  kw = dict(rng=3, temperature=1.0, top_k=40)
  guided = sampling.generate(model, VOCAB, "t2v", examples, SPEC, cfg_scale=0.0, **kw)["tokens"]
  # The unconditional sampler alone: null captions (<bot_i> <eot_i>), no embedding rows, no guidance.
  plan = sampling.layout_plan("t2v", VOCAB, SPEC)
  rows = [tasks.prompt("t2v", ex, VOCAB, spec=SPEC, drop_condition=True) for ex in examples]
  p, v = sampling.pad_prompts(rows, VOCAB.special("pad"), sampling.prompt_length("t2v", VOCAB, SPEC))
  uncond = sampling.sample(model, VOCAB, p, v, plan, rng=3, sampling=Sampling(1.0, 40),
                           text_emb_xse=np.zeros((2, SPEC.text_budget, E), np.float32))
  np.testing.assert_array_equal(guided, np.asarray(uncond))
  # ... and it is not the conditional sampler: the same rows with the captions' embeddings differ.
  rows = [tasks.prompt("t2v", ex, VOCAB, spec=SPEC) for ex in examples]
  p, v = sampling.pad_prompts(rows, VOCAB.special("pad"), sampling.prompt_length("t2v", VOCAB, SPEC))
  cond = sampling.sample(model, VOCAB, p, v, plan, rng=3, sampling=Sampling(1.0, 40),
                         text_emb_xse=sampling.caption_embeddings(rows, examples, VOCAB, SPEC.text_budget))
  assert (np.asarray(cond) != guided).any()
