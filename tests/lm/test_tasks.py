"""Task layouts, CFG, inpainting masks, the mixture schedule and length buckets."""
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import configs
from configs import VocabConfig
from configs.schema import ClipSpec
from lm import Transformer, mixture, next_token_loss, tasks
from lm.vocab import TASKS, Vocabulary

VOCAB = Vocabulary(VocabConfig())  # 6-bit LFQ, 2 RVQ levels x 64 codes, 256 text pieces
SPEC = ClipSpec()                  # 17x64x64 -> [5, 8, 8]; 106 audio frames
WORDS = {1: "a", 2: "cat"}
OUTPUT_OPENERS = {VOCAB.special("bov_o"), VOCAB.special("boa_o")}
MARKER_MODALITY = {"bot_i": "text", "bov_i": "video", "boa_i": "audio", "bov_o": "video", "boa_o": "audio"}


def example(seed=0, text=(1, 2), audio=True):
  rng = np.random.default_rng(seed)
  ex = {"text": list(text), "video": rng.integers(0, VOCAB.video_size, SPEC.video_shape)}
  if audio:
    ex["audio"] = rng.integers(0, VOCAB.cfg.audio_codebook, (VOCAB.cfg.audio_levels, SPEC.audio_frames))
  return ex


def build(task, ex=None, **kw):
  kw.setdefault("mask", np.zeros(SPEC.video_shape, bool) if task in ("inpaint", "outpaint") else None)
  return tasks.build(task, example() if ex is None else ex, VOCAB, np.random.default_rng(0), **kw)


def describe(tokens):
  return VOCAB.describe(tokens, decode_text=lambda p: " ".join(WORDS[i] for i in p), video_shape=(5, 8, 8))


GOLDEN = {
    "unconditional": "<bos> <task:unconditional> <bov_o> [video 5x8x8] <eov_o> <eos>",
    "t2v": '<bos> <task:t2v> <bot_i> "a cat" <eot_i> <bov_o> [video 5x8x8] <eov_o> <eos>',
    "t2i": '<bos> <task:t2i> <bot_i> "a cat" <eot_i> <bov_o> [video 64] <eov_o> <eos>',
    "i2v": '<bos> <task:i2v> <bot_i> "a cat" <eot_i> <bov_i> [video 64] <eov_i> <bov_o> [video 256] '
           '<eov_o> <eos>',
    "continuation": '<bos> <task:continuation> <bot_i> "a cat" <eot_i> <bov_i> [video 128] <eov_i> '
                    '<bov_o> [video 192] <eov_o> <eos>',
    "inpaint": '<bos> <task:inpaint> <bot_i> "a cat" <eot_i> <bov_i> [video 5x8x8] <eov_i> <bov_o> '
               '[video 5x8x8] <eov_o> <eos>',
    "outpaint": '<bos> <task:outpaint> <bot_i> "a cat" <eot_i> <bov_i> [video 5x8x8] <eov_i> <bov_o> '
                '[video 5x8x8] <eov_o> <eos>',
    "v2a": "<bos> <task:v2a> <bov_i> [video 5x8x8] <eov_i> <boa_o> [audio 212] <eoa_o> <eos>",
    "a2v": "<bos> <task:a2v> <boa_i> [audio 212] <eoa_i> <bov_o> [video 5x8x8] <eov_o> <eos>",
    # 2 of 5 latent frames = pixel frames 0..4 of 17 -> 31 of 106 audio frames (x 2 levels)
    "av_continuation": "<bos> <task:av_continuation> <bov_i> [video 128] <eov_i> <boa_i> [audio 62] "
                       "<eoa_i> <bov_o> [video 192] <eov_o> <boa_o> [audio 150] <eoa_o> <eos>",
}


def test_every_task_has_a_layout_and_a_golden_string():
  assert set(tasks.TASK_LAYOUTS) == set(TASKS) == set(GOLDEN)


@pytest.mark.parametrize("task", TASKS)
def test_layout_matches_the_spec(task):
  seq = build(task)
  tokens, inp, loss = seq["tokens"], seq["input_mask"], seq["loss_mask"]
  assert tokens.dtype == np.int32 and len(tokens) == len(inp) == len(loss)
  assert describe(tokens) == GOLDEN[task]
  assert tokens[0] == VOCAB.special("bos") and tokens[1] == VOCAB.task(task)
  assert tokens[-1] == VOCAB.special("eos")

  # The prefix is one block from <bos> to the first output's opening marker: the prompt.
  n = int(inp.sum())
  assert inp[:n].all() and not inp[n:].any()
  assert tokens[n - 1] in OUTPUT_OPENERS
  np.testing.assert_array_equal(tasks.prompt(task, example(), VOCAB, spec=SPEC,
                                             mask=np.zeros(SPEC.video_shape, bool)), tokens[:n])

  # Loss on everything after the prefix except later outputs' opening markers.
  expected_loss = ~inp & ~np.isin(tokens, list(OUTPUT_OPENERS))
  np.testing.assert_array_equal(loss, expected_loss)
  assert not (loss & inp).any()

  # Between each pair of markers, only ids of that marker's modality.
  names = [VOCAB.token_name(int(t)) for t in tokens]
  for opener, modality in MARKER_MODALITY.items():
    for start in [i for i, s in enumerate(names) if s == f"<{opener}>"]:
      closer = f"<e{opener[1:]}>"  # <bov_i> -> <eov_i>
      stop = names.index(closer, start)
      assert {VOCAB.modality(int(t)) for t in tokens[start + 1:stop]} <= {modality}, (task, opener)

  # The outputs' declared lengths (for samplers) match what was built.
  slots = tasks.outputs(task, VOCAB, SPEC)
  assert int(loss.sum()) == sum(s.length + 1 for s in slots) + 1  # bodies, closing markers, <eos>
  assert len(tokens) - n == sum(s.length + 1 + (s.open is not None) for s in slots) + 1
  assert slots[0].open is None and all(s.open in OUTPUT_OPENERS for s in slots[1:])


@pytest.mark.parametrize("task", TASKS)
def test_max_length_is_reached_at_the_text_budget(task):
  seq = build(task, example(text=range(SPEC.text_budget)))
  uses_text = any(s.modality == "text" for s in tasks.TASK_LAYOUTS[task].inputs)
  assert len(seq["tokens"]) == tasks.max_length(task, VOCAB, SPEC)
  assert len(build(task)["tokens"]) == tasks.max_length(task, VOCAB, SPEC) - (SPEC.text_budget - 2) * uses_text


def test_res_token_joins_the_prefix():
  seq = build("t2v", spec=ClipSpec(res=True))
  assert describe(seq["tokens"]).startswith('<bos> <task:t2v> <bot_i> "a cat" <eot_i> <res> <bov_o>')
  assert seq["input_mask"].sum() == 8
  assert len(seq["tokens"]) == tasks.max_length("t2v", VOCAB, ClipSpec(res=True)) - 14


def test_absent_modalities_drop_their_markers():
  no_text = example(text=())
  assert describe(build("i2v", no_text)["tokens"]) == (
      "<bos> <task:i2v> <bov_i> [video 64] <eov_i> <bov_o> [video 256] <eov_o> <eos>")
  assert describe(build("outpaint", {"video": no_text["video"]})["tokens"]).startswith(
      "<bos> <task:outpaint> <bov_i> [video 5x8x8]")
  # The image alone is enough for an i2v prompt; t2i accepts an image (one latent frame).
  image = {"video": no_text["video"][:1]}
  assert describe(tasks.prompt("i2v", image, VOCAB)) == "<bos> <task:i2v> <bov_i> [video 64] <eov_i> <bov_o>"
  t2i = build("t2i", {"text": [1], "video": image["video"]})
  assert describe(t2i["tokens"]).endswith("<bov_o> [video 64] <eov_o> <eos>")


def test_classifier_free_guidance_drops_the_caption():
  cond = tasks.prompt("t2v", {"text": [1, 2]}, VOCAB)
  null = tasks.prompt("t2v", {"text": [1, 2]}, VOCAB, drop_condition=True)
  assert describe(cond) == '<bos> <task:t2v> <bot_i> "a cat" <eot_i> <bov_o>'
  assert describe(null) == "<bos> <task:t2v> <bot_i> <eot_i> <bov_o>"
  assert describe(tasks.prompt("t2v", {}, VOCAB, drop_condition=True)) == describe(null)
  # The visual condition stays; only the caption goes.
  i2v = tasks.prompt("i2v", example(), VOCAB, drop_condition=True)
  assert describe(i2v) == "<bos> <task:i2v> <bot_i> <eot_i> <bov_i> [video 64] <eov_i> <bov_o>"
  with pytest.raises(ValueError, match="no droppable condition"):
    tasks.prompt("v2a", example(), VOCAB, drop_condition=True)


def test_condition_dropout_rate_and_determinism():
  def dropped(seed, p):
    seq = tasks.build("t2v", example(), VOCAB, np.random.default_rng(seed), cond_dropout=p)
    return not np.isin(seq["tokens"], VOCAB.text_ids([1, 2])).any()
  assert not any(dropped(s, 0.0) for s in range(20)) and all(dropped(s, 1.0) for s in range(20))
  rate = np.mean([dropped(s, 0.25) for s in range(400)])
  assert 0.18 < rate < 0.32, rate
  assert [dropped(s, 0.25) for s in range(50)] == [dropped(s, 0.25) for s in range(50)]


@pytest.mark.parametrize("task", ["inpaint", "outpaint"])
def test_explicit_masks_put_mask_tokens_exactly_there(task):
  ex = example()
  mask = np.random.default_rng(3).random(SPEC.video_shape) < 0.3
  seq = build(task, ex, mask=mask)
  tokens = seq["tokens"]
  bov_i = list(tokens).index(VOCAB.special("bov_i"))
  cond = tokens[bov_i + 1:bov_i + 1 + mask.size]
  np.testing.assert_array_equal(cond == VOCAB.special("mask"), mask.reshape(-1))
  np.testing.assert_array_equal(cond[~mask.reshape(-1)], VOCAB.video_ids(ex["video"])[~mask.reshape(-1)])
  # The output is the whole, unmasked clip.
  bov_o = list(tokens).index(VOCAB.special("bov_o"))
  np.testing.assert_array_equal(tokens[bov_o + 1:bov_o + 1 + mask.size], VOCAB.video_ids(ex["video"]))


def _drawn_mask(task, seed):
  seq = tasks.build(task, example(), VOCAB, np.random.default_rng(seed))
  tokens = seq["tokens"]
  bov_i = list(tokens).index(VOCAB.special("bov_i"))
  return (tokens[bov_i + 1:bov_i + 1 + 320] == VOCAB.special("mask")).reshape(SPEC.video_shape)


def test_drawn_masks_are_seeded_and_shaped_as_their_task_says():
  for seed in range(20):
    inner = _drawn_mask("inpaint", seed)
    assert inner.any() and not inner.all()
    np.testing.assert_array_equal(inner, _drawn_mask("inpaint", seed))
    outer = _drawn_mask("outpaint", seed)
    # Outpainting masks whole border strips in every frame and keeps the centre.
    assert (outer == outer[:1]).all() and not outer[:, 2:6, 2:6].any()
    edges = [outer[0, 0], outer[0, -1], outer[0, :, 0], outer[0, :, -1]]
    assert any(e.all() for e in edges)
  assert len({_drawn_mask("inpaint", s).tobytes() for s in range(20)}) > 10


def test_mask_generators():
  rng = np.random.default_rng(0)
  for _ in range(50):
    box = tasks.rectangle_mask((5, 8, 8), rng)
    ys, xs = np.nonzero(box[0])
    assert (box == box[:1]).all()  # the same box in every frame ...
    assert box[0].sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # ... and a full box
    assert 2 <= ys.max() - ys.min() + 1 <= 6 and 2 <= xs.max() - xs.min() + 1 <= 6
    regions = tasks.region_mask((5, 8, 8), rng)
    assert regions.any() and not regions.all()


@pytest.mark.parametrize("call, message", [
    (lambda: build("dance"), r"unknown task 'dance'; known tasks: \['unconditional', 't2v'"),
    (lambda: build("t2v", {**example(), "video": np.zeros((4, 8, 8), int)}),
     r"video codes of shape \(4, 8, 8\), expected \[5, 8, 8\] latents \(17 frames of 64x64"),
    (lambda: build("v2a", {**example(), "audio": np.zeros((2, 100), int)}),
     r"audio codes of shape \(2, 100\), expected \[2 levels, 106 frames\]: a clip of 17 frames at 8 fps"),
    (lambda: build("a2v", {**example(), "audio": np.zeros((1, 106), int)}), r"expected \[2 levels"),
    (lambda: build("t2v", example(text=range(17))), "caption of 17 pieces exceeds the text budget of 16"),
    (lambda: build("t2v", example(text=())), "task t2v needs 'text' in the example"),
    (lambda: build("v2a", example(audio=False)), "outputs 'audio' but the example has none"),
    (lambda: build("inpaint", mask=np.zeros((5, 8, 7), bool)),
     r"mask of shape \(5, 8, 7\), expected \(5, 8, 8\)"),
    (lambda: tasks.build("inpaint", example(), VOCAB), "draws a random mask: pass rng="),
    (lambda: build("t2v", cond_dropout=1.5), "cond_dropout=1.5 must be in"),
    (lambda: build("t2v", {**example(), "video": np.full((5, 8, 8), 64)}), "video code 64 is outside"),
    (lambda: ClipSpec(frames=16), "frames=16 must be 1 \\+ 4k"),
    (lambda: ClipSpec(height=60), "not divisible"),
    (lambda: ClipSpec(continuation_frames=5), "continuation_frames=5 must be in \\[1, 5\\)"),
    (lambda: tasks.Task("t2v", inputs=(tasks.Segment("video"), tasks.Segment("text")),
                        outputs=(tasks.Segment("video"),)), "in that order"),
])
def test_bad_inputs_are_clear_errors(call, message):
  with pytest.raises(ValueError, match=message):
    call()


# --- mixture and buckets -------------------------------------------------------------

GAMES = ["space invaders", "pong", "breakout", "ms pacman", "seaquest", "enduro", "boxing", "freeway",
         "asteroids", "montezuma revenge"]


@pytest.fixture(scope="module")
def demo_examples(tmp_path_factory):
  """Game-name captions through a real 256-piece SentencePiece model; every other clip has audio."""
  from pydoc_data.topics import topics

  from lm.text import TextTokenizer, train_sentencepiece
  corpus = tmp_path_factory.mktemp("text") / "corpus.txt"
  corpus.write_text("\n".join(list(topics.values()) + GAMES))
  tok = TextTokenizer(train_sentencepiece(corpus, 256, corpus.parent / "sp"), VOCAB.cfg)
  out = []
  for i, game in enumerate(GAMES * 2):
    ex = example(seed=i, text=tok.encode(game), audio=i % 2 == 0)
    assert len(ex["text"]) <= SPEC.text_budget, game
    out.append(ex)
  return out


def test_schedule_is_image_heavy_first_then_video_heavy(demo_examples):
  mix = mixture.demo_mixture(demo_examples, VOCAB, total_steps=400, batch_size=8)
  assert mixture.DEMO_SCHEDULE.weights(0.1)["t2i"] == 0.5 and mixture.DEMO_SCHEDULE.weights(0.9)["t2i"] == 0.1
  early = [t for s in range(100) for t in mix.plan(s)[1]]
  late = [t for s in range(100, 400) for t in mix.plan(s)[1]]
  assert 0.4 < early.count("t2i") / len(early) < 0.6 and late.count("t2i") / len(late) < 0.15
  assert set(late) == set(mixture.DEMO_SCHEDULE.tasks())
  for s in range(0, 400, 7):  # one bucket per batch, and it is each task's bucket
    bucket, names = mix.plan(s)
    assert {mix.bucket_of[n] for n in names} == {bucket}


def test_mixture_is_deterministic_and_rows_compose(demo_examples):
  mix = mixture.demo_mixture(demo_examples, VOCAB, total_steps=100, batch_size=4, seed=1)
  again = mixture.demo_mixture(demo_examples, VOCAB, total_steps=100, batch_size=4, seed=1)
  other = mixture.demo_mixture(demo_examples, VOCAB, total_steps=100, batch_size=4, seed=2)
  for step in (0, 3, 57):
    a, b = mix.batch(step), again.batch(step)
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
    halves = [mix.batch(step, rows=slice(0, 2)), mix.batch(step, rows=slice(2, 4))]
    for k in a:
      np.testing.assert_array_equal(np.concatenate([h[k] for h in halves]), a[k])
  assert any(not np.array_equal(mix.batch(s)["tokens"], other.batch(s)["tokens"]) for s in range(5))


def test_demo_mixture_padding_below_ten_percent(demo_examples):
  mix = mixture.demo_mixture(demo_examples, VOCAB, total_steps=200, batch_size=8)
  batches = [mix.batch(s) for s in range(200)]
  assert mix.buckets == (88, 352, 544, 672)
  assert {b["tokens"].shape[1] for b in batches} == set(mix.buckets)
  for b in batches:
    pad = b["segment_ids"] == 0
    assert (b["tokens"][pad] == VOCAB.special("pad")).all()
    assert not b["input_mask"][pad].any() and not b["loss_mask"][pad].any()
  fraction = mixture.padding_fraction(batches)
  print(f"demo mixture padding fraction: {fraction:.4f}")
  assert 0 < fraction < 0.10


def test_default_buckets_merge_the_cheapest_neighbours():
  assert mixture.default_buckets([87, 325, 343, 345, 665, 539], max_buckets=4) == (88, 352, 544, 672)
  assert mixture.default_buckets([10, 20], max_buckets=1) == (24,)


def test_mixture_errors(demo_examples):
  silent = [{k: v for k, v in ex.items() if k != "audio"} for ex in demo_examples]
  with pytest.raises(ValueError, match="task v2a needs \\['audio', 'video'\\] but no example has them"):
    mixture.demo_mixture(silent, VOCAB, total_steps=10)
  with pytest.raises(ValueError, match="unknown tasks \\['dance'\\]"):
    mixture.Schedule.constant({"dance": 1.0})
  with pytest.raises(ValueError, match="must begin at 0.0"):
    mixture.Schedule.of([(0.5, {"t2v": 1.0})])
  with pytest.raises(ValueError, match="cond_dropout=-0.1 must be in"):
    mixture.Mixture(demo_examples, VOCAB, mixture.DEMO_SCHEDULE, total_steps=10, batch_size=2, cond_dropout=-0.1)
  with pytest.raises(ValueError, match="longer than the largest bucket 352"):
    mixture.Mixture(demo_examples, VOCAB, mixture.Schedule.constant({"inpaint": 1.0}), total_steps=10,
                    batch_size=2, buckets=(352,))


# --- the batch through the model's loss ----------------------------------------------

def test_loss_counts_exactly_the_loss_mask():
  cfg = configs.load("lm_tiny", ["lm.attention_block=16", "lm.loss_chunk=16", "lm.remat_policy=none"])
  model = Transformer(cfg.lm, rngs=nnx.Rngs(0))
  # Small clips keep this fast: latents [3, 2, 2], 9 audio frames.
  spec = ClipSpec(frames=9, height=16, width=16, audio_hz=8.0, continuation_frames=1)
  rng = np.random.default_rng(0)
  ex = {"text": [1, 2], "video": rng.integers(0, 64, spec.video_shape), "audio": rng.integers(0, 64, (2, 9))}
  seqs = [tasks.build(t, e, VOCAB, rng, spec=spec, cond_dropout=0.0)
          for t, e in [("t2v", ex), ("i2v", {"video": ex["video"]}), ("av_continuation", ex)]]
  batch = mixture.pad_batch(seqs, 48, VOCAB.special("pad"))
  args = [jnp.asarray(batch[k]) for k in ("tokens", "input_mask", "loss_mask", "segment_ids")]
  _, metrics = nnx.jit(next_token_loss)(model, *args)
  # Every loss_mask position is a label (no output token is lost to the prefix rule) ...
  assert float(metrics["tokens"]) == sum(int(s["loss_mask"].sum()) for s in seqs)
  # ... and the mean is the plain cross-entropy of predicting exactly those tokens.
  tokens, inp, loss, segs = args
  logits = nnx.jit(lambda m, *a: m(*a))(model, tokens[:, :-1], inp[:, :-1], segs[:, :-1])
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
  np.testing.assert_allclose(float(metrics["loss"]), float(jnp.sum(ce * loss[:, 1:]) / loss[:, 1:].sum()),
                             rtol=1e-4)
