"""Samplers: KV-cached == uncached, layout constraints, guidance, infilling, MaskGIT, sharding."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

import configs
import sharding
from configs import VocabConfig
from configs.schema import ClipSpec
from lm import Transformer, sampling, tasks
from lm.sampling import Sampling
from lm.vocab import Vocabulary

VOCAB = Vocabulary(VocabConfig())  # 480 ids: 32 special, 256 text, 64 video, 2 x 64 audio
# 9 frames of 32x32 -> latents [3, 4, 4] (48 tokens); 9/8 s of audio at 16 Hz -> 18 frames.
SPEC = ClipSpec(frames=9, height=32, width=32, audio_hz=16.0, text_budget=6, continuation_frames=1)
VIDEO = VOCAB.ranges()["video"]
SAMPLED = Sampling(temperature=1.0, top_k=40, top_p=0.95)
MASKGIT = sampling.MaskGit(steps=5)


def tiny_model():
  """lm_tiny, its parameters made in one compiled call (cheaper than ~10 eager op compiles)."""
  cfg = configs.load("lm_tiny", ["lm.attention_block=0"]).lm
  build = lambda: Transformer(cfg, rngs=nnx.Rngs(0))
  graphdef, _ = nnx.split(nnx.eval_shape(build))
  return nnx.merge(graphdef, jax.jit(lambda: nnx.state(build()))())


@pytest.fixture(scope="module")
def model():
  return tiny_model()


def example(seed=0, text=(5, 9, 2)):
  rng = np.random.default_rng(seed)
  return {"text": list(text), "video": rng.integers(0, VOCAB.video_size, SPEC.video_shape),
          "audio": rng.integers(0, VOCAB.cfg.audio_codebook, (VOCAB.cfg.audio_levels, SPEC.audio_frames))}


def prompts(task, examples, drop=(False,)):
  """Prompt groups (conditional, then unconditional when drop=(False, True)) padded to the
  task's longest prompt, as `generate` pads them: tests share compiled samplers."""
  rows = [tasks.prompt(task, ex, VOCAB, spec=SPEC, drop_condition=d) for d in drop for ex in examples]
  return sampling.pad_prompts(rows, VOCAB.special("pad"), sampling.prompt_length(task, VOCAB, SPEC))


def assert_follows_plan(tokens, plan):
  tokens = np.asarray(tokens)
  fixed = plan.forced_n >= 0
  np.testing.assert_array_equal(tokens[:, fixed], np.broadcast_to(plan.forced_n[fixed], tokens[:, fixed].shape))
  free = tokens[:, ~fixed]
  assert ((free >= plan.lo_n[~fixed]) & (free < plan.hi_n[~fixed])).all()


def test_layout_plan_forces_markers_and_keeps_each_modality_in_its_range():
  plan = sampling.layout_plan("av_continuation", VOCAB, SPEC)
  t, h, w = SPEC.video_shape
  n_video = (t - 1) * h * w
  n_audio = (SPEC.audio_frames - SPEC.audio_split(1)) * VOCAB.cfg.audio_levels
  assert plan.length == n_video + 1 + 1 + n_audio + 1 + 1
  sp = VOCAB.special
  assert [VOCAB.token_name(i) for i in plan.forced_n[plan.forced_n >= 0]] == \
      ["<eov_o>", "<boa_o>", "<eoa_o>", "<eos>"]
  assert plan.forced_n[n_video] == sp("eov_o") and plan.forced_n[-1] == sp("eos")
  assert (plan.lo_n[:n_video] == VIDEO[0]).all() and (plan.hi_n[:n_video] == VIDEO[1]).all()
  # Level-major audio: the first half of the segment is level 0, the second level 1.
  audio_lo = plan.lo_n[n_video + 2:n_video + 2 + n_audio]
  k = VOCAB.cfg.audio_codebook
  np.testing.assert_array_equal(audio_lo, VOCAB.audio_offset + k * (np.arange(n_audio) >= n_audio // 2))
  # Decoding a plan's tokens gives back the codes that were laid out.
  ex = example()
  built = tasks.build("av_continuation", ex, VOCAB, spec=SPEC)["tokens"]
  start = len(tasks.prompt("av_continuation", ex, VOCAB, spec=SPEC))
  out = sampling.decode_outputs(built[None, start:], "av_continuation", VOCAB, SPEC)
  np.testing.assert_array_equal(out["video"][0], ex["video"][1:])
  np.testing.assert_array_equal(out["audio"][0], ex["audio"][:, SPEC.audio_split(1):])


@pytest.mark.parametrize("task,settings", [("t2v", SAMPLED), ("av_continuation", Sampling(temperature=0.0))])
def test_cached_sampler_equals_uncached_full_forward(model, task, settings):
  # t2v: captions of different lengths, so the shorter prompt is right-padded.
  tokens, valid = prompts(task, [example(0, (5, 9, 2)), example(1, (7,))])
  assert valid[1].all() == (task == "av_continuation")
  plan = sampling.layout_plan(task, VOCAB, SPEC)
  got = sampling.sample(model, VOCAB, tokens, valid, plan, rng=3, sampling=settings)
  want = sampling.reference_sample(model, VOCAB, tokens, valid, plan, rng=3, sampling=settings)
  np.testing.assert_array_equal(got, want)
  assert_follows_plan(got, plan)
  assert len(np.unique(np.asarray(got)[:, :16])) > 4, "sampled tokens should vary"


def test_one_compile_per_shape_and_top_k_1_is_greedy(model):
  plan = sampling.layout_plan("av_continuation", VOCAB, SPEC)
  tokens, valid = prompts("av_continuation", [example(0), example(1)])
  before = sampling.TRACES["autoregressive"]
  top1 = [sampling.sample(model, VOCAB, tokens, valid, plan, rng=0, sampling=Sampling(1.0, top_k=1))]
  traced = sampling.TRACES["autoregressive"]
  top1.append(sampling.sample(model, VOCAB, tokens, valid, plan, rng=1, sampling=Sampling(1.0, top_k=1)))
  other_prompts, other_valid = prompts("av_continuation", [example(2), example(3)])
  other = sampling.sample(model, VOCAB, other_prompts, other_valid, plan, rng=5,
                          sampling=Sampling(1.0, top_k=1))
  # One trace for the whole sequence, not one per token, seed or prompt (none at all when an
  # earlier test compiled this shape).
  assert traced - before <= 1 and sampling.TRACES["autoregressive"] == traced
  assert (np.asarray(other) != np.asarray(top1[0])).any()
  greedy = sampling.sample(model, VOCAB, tokens, valid, plan, rng=0, sampling=Sampling(0.0))
  for got in top1:
    np.testing.assert_array_equal(got, greedy)
  assert_follows_plan(greedy, plan)


def test_free_sampling_stops_at_eos_and_pads_the_rest(model):
  tokens, valid = prompts("t2v", [example(0), example(1, (4,))])
  t2v = sampling.layout_plan("t2v", VOCAB, SPEC)
  n = t2v.length  # the shapes of the t2v tests: no new compile
  plan, eos, pad = sampling.free_plan(n, VOCAB), VOCAB.special("eos"), VOCAB.special("pad")
  forced = np.full((2, n), -1, np.int32)
  forced[0, 5], forced[1, 9] = eos, eos
  sampling.sample(model, VOCAB, tokens, valid, t2v, rng=0, sampling=SAMPLED)  # t2v's program, here or before
  before = sampling.TRACES["autoregressive"]
  got = np.asarray(sampling.sample(model, VOCAB, tokens, valid, plan, rng=0, sampling=SAMPLED, forced_bn=forced))
  assert sampling.TRACES["autoregressive"] == before
  for row, stop in enumerate((5, 9)):
    assert got[row, stop] == eos and (got[row, stop + 1:] == pad).all()
    assert ((got[row, :stop] != pad) & (got[row, :stop] < VOCAB.size)).all()


def test_sampling_draws_from_the_full_distribution_and_filters_it(model):
  tokens, valid = prompts("t2v", [example(0, (5, 9, 2)), example(1, (7,))])
  n = sampling.layout_plan("t2v", VOCAB, SPEC).length
  seq = np.concatenate([tokens, np.zeros((2, n), np.int32)], axis=1)
  static, state = sampling._static(model, VOCAB, Sampling())  # the uncached sampler's forward
  logits_v = sampling._uncached_logits(state, seq, valid, 0, static=static)[0]
  rows = 20_000
  logits_xv = jnp.tile(logits_v, (rows, 1))
  no_force, lo, hi = np.full((rows, 1), -1, np.int32), np.array([VIDEO[0]]), np.array([VIDEO[1]])

  def draw(settings):
    return np.asarray(sampling._choose_jit(logits_xv, 0, jax.random.key(0), no_force, lo, hi,
                                           jnp.ones(1), sampling=settings)) - VIDEO[0]

  probs = np.asarray(jax.nn.softmax(logits_v[VIDEO[0]:VIDEO[1]]), np.float64)
  probs /= probs.sum()
  counts = np.bincount(draw(Sampling(1.0)), minlength=len(probs))
  assert counts.sum() == rows and probs.max() < 0.5, "the test needs a spread-out distribution"
  _, p_value = scipy.stats.chisquare(counts, probs * rows)
  assert p_value > 1e-3, f"temperature 1, top-p 1 must follow softmax(logits); p={p_value}"

  order = np.argsort(-probs)
  assert set(np.unique(draw(Sampling(1.0, top_k=5)))) <= set(order[:5].tolist())
  nucleus = order[:int(np.searchsorted(np.cumsum(probs[order]), 0.5)) + 1]
  seen = np.unique(draw(Sampling(1.0, top_p=0.5)))
  assert set(seen) == set(nucleus.tolist())


def test_guidance_scale_0_is_unconditional_and_1_is_conditional(model):
  examples = [example(0, (5, 9, 2, 11)), example(1, (7,))]
  cond, cond_valid = prompts("t2v", examples)
  uncond, uncond_valid = prompts("t2v", examples, drop=(True,))
  # Guidance rows: group 0 the conditional prompts, group 1 the unconditional ones.
  both, both_valid = prompts("t2v", examples, drop=(False, True))
  plan = sampling.layout_plan("t2v", VOCAB, SPEC)
  run = lambda p, v, weights=None: np.asarray(sampling.sample(model, VOCAB, p, v, plan, rng=7, sampling=SAMPLED,
                                                              weights=weights))
  alone_cond, alone_uncond = run(cond, cond_valid), run(uncond, uncond_valid)
  assert (alone_cond != alone_uncond).any()
  np.testing.assert_array_equal(run(both, both_valid, sampling.guidance_weights([0.0])), alone_uncond)
  np.testing.assert_array_equal(run(both, both_valid, sampling.guidance_weights([1.0])), alone_cond)
  guided = run(both, both_valid, sampling.guidance_weights([3.0]))
  assert (guided != alone_cond).any()
  assert_follows_plan(guided, plan)


def test_negative_prompt_replaces_the_unconditional_prefix(model):
  examples, negative = [example(0, (5, 9, 2)), example(1, (4,))], {"text": [40, 41]}
  kw = dict(rng=11, temperature=SAMPLED.temperature, top_k=SAMPLED.top_k, top_p=SAMPLED.top_p)
  guided = sampling.generate(model, VOCAB, "t2v", examples, SPEC, cfg_scale=0.0, negative=negative, **kw)
  plain = sampling.generate(model, VOCAB, "t2v", [{**ex, **negative} for ex in examples], SPEC, **kw)
  np.testing.assert_array_equal(guided["video"], plain["video"])
  assert guided["video"].shape == (2, *SPEC.video_shape)


def test_autoregressive_infilling_keeps_known_tokens(model):
  ex = example(4)
  region = sampling.box_to_tokens((0, 9, 8, 20, 4, 15), SPEC)  # pixels -> latent box to fill
  out = sampling.generate(model, VOCAB, "inpaint", ex, SPEC, known=~region, rng=2, num_samples=2,
                          cfg_scale=2.0, top_k=SAMPLED.top_k, top_p=SAMPLED.top_p)
  video = out["video"]
  assert video.shape == (2, *SPEC.video_shape)
  np.testing.assert_array_equal(video[:, ~region], np.broadcast_to(ex["video"][~region], (2, (~region).sum())))
  assert (video[:, region] != ex["video"][region]).any(), "the region must be generated"
  assert (video[0] != video[1]).any(), "two samples of one prompt differ"
  assert_follows_plan(out["tokens"], sampling.layout_plan("inpaint", VOCAB, SPEC))



def test_maskgit_fills_unknown_tokens_on_schedule_and_never_changes_known_ones(model):
  t, h, w = SPEC.video_shape
  examples = [example(0), example(1, (3,))]
  known = np.zeros((2, t, h, w), bool)
  known[0, :1] = True                                              # continuation: the first latent frame
  known[1] = ~sampling.box_to_tokens((0, 9, 8, 24, 8, 24), SPEC)  # inpainting a box
  # The canvas is also the prefix condition (inpaint layout: unknown tokens show <mask>).
  rows = [tasks.prompt("inpaint", ex, VOCAB, spec=SPEC, mask=~k, drop_condition=d)
          for d in (False, True) for ex, k in zip(examples, known)]
  tokens, valid = sampling.pad_prompts(rows, VOCAB.special("pad"), sampling.prompt_length("inpaint", VOCAB, SPEC))
  canvas = np.stack([VOCAB.video_ids(ex["video"]) for ex in examples]).astype(np.int32)
  known = known.reshape(2, -1)
  before = traced = sampling.TRACES["maskgit"]
  for seed in (0, 1):
    ids, masked = sampling.maskgit(model, VOCAB, tokens, valid, canvas, known, rng=seed,
                                   suffix=(VOCAB.special("eov_o"), VOCAB.special("eos")),
                                   config=MASKGIT, weights=sampling.guidance_weights([2.5]))
    ids, masked = np.asarray(ids), np.asarray(masked)
    traced = traced if seed else sampling.TRACES["maskgit"]  # after the first call
    np.testing.assert_array_equal(ids[known], canvas[known])
    assert ((ids >= VIDEO[0]) & (ids < VIDEO[1])).all(), "every unknown token is filled with a video id"
    assert (ids[~known] != canvas[~known]).any()
    for row in range(2):
      want = sampling.maskgit_schedule(int((~known[row]).sum()), MASKGIT.steps)
      np.testing.assert_array_equal(masked[row], want)
    assert masked[:, -1].sum() == 0 and (np.diff(masked, axis=1) < 0).all()
  # One compile for every seed: the first call traces (unless an earlier test compiled this
  # shape), the second seed does not.
  assert traced - before <= 1 and sampling.TRACES["maskgit"] == traced, "one compile for every seed"

  # Through generate: the same compiled program (same shapes), the same guarantees.
  out = sampling.generate(model, VOCAB, "inpaint", examples, SPEC, known=known.reshape(2, t, h, w),
                          rng=3, cfg_scale=2.5, method="maskgit", maskgit_config=MASKGIT)
  assert sampling.TRACES["maskgit"] == traced
  np.testing.assert_array_equal(out["video"].reshape(2, -1)[known], (canvas - VIDEO[0])[known])
  assert_follows_plan(out["tokens"], sampling.layout_plan("inpaint", VOCAB, SPEC))


def test_pixel_regions_map_to_covering_latent_tokens():
  # Pixel frame 0 is latent frame 0; frames 1-4 are latent 1, 5-8 latent 2; 8x8 pixels per token.
  got = sampling.box_to_tokens((4, 6, 7, 9, 16, 24), SPEC)
  want = np.zeros(SPEC.video_shape, bool)
  want[1:3, 0:2, 2:3] = True
  np.testing.assert_array_equal(got, want)
  assert sampling.box_to_tokens((0, 1, 0, 1, 0, 1), SPEC).sum() == 1
  with pytest.raises(ValueError, match="rows"):
    sampling.box_to_tokens((0, 1, 30, 40, 0, 1), SPEC)
  with pytest.raises(ValueError, match="pixel mask of shape"):
    sampling.pixel_mask_to_tokens(np.zeros((8, 32, 32), bool), SPEC)


def test_null_prompts_drop_one_condition_each():
  ex, sp = example(0, (5, 9)), VOCAB.special
  cond = tasks.prompt("i2v", ex, VOCAB, spec=SPEC)
  text = sampling.null_prompt("i2v", ex, "text", VOCAB, SPEC)  # the trained null: empty caption
  np.testing.assert_array_equal(text, tasks.prompt("i2v", ex, VOCAB, spec=SPEC, drop_condition=True))
  assert len(text) == len(cond) - 2 and sp("bot_i") in text
  video = sampling.null_prompt("i2v", ex, "video", VOCAB, SPEC)  # no trained null: <mask> tokens
  changed = video != cond
  assert len(video) == len(cond) and (video[changed] == sp("mask")).all() and changed.sum() == 16
  negative = sampling.null_prompt("i2v", ex, "text", VOCAB, SPEC, negative={"text": [7]})
  np.testing.assert_array_equal(negative, tasks.prompt("i2v", {**ex, "text": [7]}, VOCAB, spec=SPEC))
  with pytest.raises(ValueError, match="no 'audio' condition"):
    sampling.null_prompt("i2v", ex, "audio", VOCAB, SPEC)


def test_user_errors_are_clear(model):
  with pytest.raises(ValueError, match="text budget"):
    sampling.generate(model, VOCAB, "t2v", example(0, tuple(range(10))), SPEC, rng=0)
  with pytest.raises(ValueError, match="known mask of shape"):
    sampling.generate(model, VOCAB, "inpaint", example(0), SPEC, known=np.ones((3, 4, 5), bool), rng=0)
  with pytest.raises(ValueError, match="needs known="):
    sampling.generate(model, VOCAB, "inpaint", example(0), SPEC, rng=0)
  with pytest.raises(ValueError, match="video codes of shape"):
    sampling.generate(model, VOCAB, "i2v", {"video": np.zeros((1, 8, 8), int)}, SPEC, rng=0)
  small = nnx.eval_shape(lambda: Transformer(dataclasses.replace(model.cfg, vocab=256), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match="vocabulary"):
    sampling.generate(small, VOCAB, "t2v", example(0), SPEC, rng=0)
  with pytest.raises(ValueError, match="negative prompt for"):
    sampling.generate(model, VOCAB, "t2v", example(0), SPEC, rng=0, negative={"text": [3]})
  with pytest.raises(ValueError, match="no droppable condition"):
    sampling.generate(model, VOCAB, "v2a", example(0), SPEC, rng=0, cfg_scale=3.0)


def run_everything(model):
  """Greedy autoregressive, guided sampled autoregressive and guided MaskGIT results of a
  fixed batch (shapes shared with the tests above, so one device compiles nothing new)."""
  examples = [example(2, (3, 4)), example(3, (8,))]
  kw = dict(cfg_scale=2.5, top_k=SAMPLED.top_k, top_p=SAMPLED.top_p)
  greedy = sampling.generate(model, VOCAB, "av_continuation", examples, SPEC, rng=0, temperature=0.0)
  guided = sampling.generate(model, VOCAB, "t2v", examples, SPEC, rng=1, **kw)["video"]
  known = ~sampling.box_to_tokens((0, 9, 0, 16, 0, 32), SPEC)
  masked = sampling.generate(model, VOCAB, "inpaint", examples, SPEC, rng=2, method="maskgit", known=known,
                             maskgit_config=MASKGIT, **kw)["video"]
  return greedy["video"], greedy["audio"], guided, masked


def test_sharded_sampling_equals_single_device(model):
  single = run_everything(model)
  mesh = sharding.make_mesh((2, 2, 2))
  rules = configs.load("lm_tiny").mesh.rules
  with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
    model = tiny_model()
    wq = model.blocks.attn.wq[...]
    assert wq.sharding.num_devices == 8 and not wq.sharding.is_fully_replicated
    sharded = run_everything(model)
  for want, got in zip(single, sharded):
    np.testing.assert_array_equal(got, want)
