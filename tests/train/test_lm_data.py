"""The pod configs' task mixture at full size (no compute), and the data settings of `data.*`."""
import numpy as np
import pytest

import configs
from configs.schema import ClipSpec, ConfigError
from lm import mixture
from lm.vocab import TASKS, Vocabulary
from train import lm_data

POD_SPEC = dict(frames=17, height=128, width=128, fps=8.0, audio_hz=50.0)  # VideoPoet's clips


def pod_examples(cfg, n=6, caption=None, seed=0):
  """Clips at 17x128x128 with every modality: [5, 16, 16] video codes, [4, 106] audio codes
  and a caption of `caption` pieces (default: the config's full text budget)."""
  rng = np.random.default_rng(seed)
  v = cfg.vocab
  return [{"video": rng.integers(0, 2 ** v.video_bits, (5, 16, 16)),
           "audio": rng.integers(0, v.audio_codebook, (v.audio_levels, 106)),
           "text": rng.integers(0, v.text, caption or cfg.data.text_budget)} for _ in range(n)]


@pytest.mark.parametrize("name", ["lm_300m", "lm_1b", "lm_8b"])
def test_pod_configs_fit_every_task_at_17x128x128(name):
  cfg = configs.load(name)
  assert cfg.data.text_budget >= 64  # a real caption, not the demo's 16 pieces
  vocab = Vocabulary(cfg.vocab)
  spec = ClipSpec(**POD_SPEC, text_budget=cfg.data.text_budget)
  data = lm_data.MixtureData(cfg, vocab, pod_examples(cfg), pod_examples(cfg, seed=1), spec)
  assert set(data.mix.schedule.tasks()) == set(TASKS)  # the videopoet schedule: all ten tasks
  assert data.lengths[-1] <= cfg.lm.max_len == cfg.train.seq_len, (data.lengths, cfg.lm.max_len)
  assert data.mix.lengths["inpaint"] == 2569 + cfg.data.text_budget  # the longest layout
  # One batch of each bucket (a few rows of the global batch): every row fits its bucket.
  seen = set()
  for step in range(200):
    bucket, _ = data.mix.plan(step)
    if bucket in seen:
      continue
    seen.add(bucket)
    batch = data.batch(step, slice(0, 4))
    assert batch["tokens"].shape == (4, bucket)
    assert int(batch["tokens"].max()) < cfg.lm.vocab
  assert seen == set(data.lengths)
  assert data.stats["captions_over_budget"] == 0


def test_over_budget_captions_are_skipped_and_counted():
  cfg = configs.load("lm_1b", ["data.text_budget=64", "data.caption_dropout=0", "train.batch_size=16"])
  vocab = Vocabulary(cfg.vocab)
  spec = ClipSpec(**POD_SPEC, text_budget=64)
  examples = pod_examples(cfg, n=4)
  examples[2]["text"] = np.arange(65)  # one piece over the budget: skipped, not an error
  data = lm_data.MixtureData(cfg, vocab, examples, pod_examples(cfg, n=2, seed=1), spec)
  assert data.stats["captions_over_budget"] == 1 and data.stats["held_out_captions_over_budget"] == 0
  assert "skipped 1 training and 0 held-out captions over the text budget of 64" in data.describe
  # Its clip still trains tasks that need no caption; captioned tasks never draw it.
  assert 2 not in data.mix.eligible["t2v"] and 2 in data.mix.eligible["unconditional"]
  for step in range(6):
    data.batch(step)  # no row raises "exceeds the text budget" mid-training
  assert "text" in examples[2]  # the caller's examples are untouched


def test_schedule_dropout_and_budget_come_from_the_config():
  cfg = configs.load("lm_tiny", ["data.schedule=0:t2i=1;0.5:t2v=0.6,unconditional=0.4",
                                 "data.caption_dropout=0.5", "data.text_budget=80"])
  assert cfg.data.caption_dropout == 0.5 and cfg.data.text_budget == 80
  schedule = mixture.parse_schedule(cfg.data.schedule)
  assert schedule.weights(0.1) == {"t2i": 1.0}
  assert schedule.weights(0.7) == pytest.approx({"t2v": 0.6, "unconditional": 0.4})
  assert mixture.parse_schedule("videopoet") is mixture.DEMO_SCHEDULE
  with pytest.raises(ConfigError, match="data.schedule"):
    configs.load("lm_tiny", ["data.schedule=t2v:0.5"])
  with pytest.raises(ConfigError, match="unknown tasks"):
    mixture.parse_schedule("t2x=1")
  with pytest.raises(ConfigError, match="caption_dropout"):
    configs.load("lm_tiny", ["data.caption_dropout=1.5"])
