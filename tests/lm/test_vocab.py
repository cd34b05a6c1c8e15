"""The unified vocabulary: ranges, named tokens, modality ids and `describe`."""
import numpy as np
import pytest

import configs
from configs import ConfigError, VocabConfig
from lm.vocab import SPECIAL_TOKENS, TASKS, Vocabulary


def test_videopoet_layout():
  vocab = Vocabulary(configs.load("lm_8b").vocab)
  assert vocab.ranges() == {"special": (0, 256), "text": (256, 32_256),
                            "video": (32_256, 294_400), "audio": (294_400, 298_496)}
  assert vocab.size == configs.load("lm_8b").lm.vocab


def test_names_and_ids_stay_in_their_ranges():
  vocab = Vocabulary(VocabConfig())
  assert vocab.special("pad") == 0 and vocab.token_name(vocab.special("bov_o")) == "<bov_o>"
  assert vocab.token_name(vocab.task("t2v")) == "<task:t2v>"
  assert {vocab.modality(i) for i in vocab.text_ids([0, 255])} == {"text"}
  assert {vocab.modality(i) for i in vocab.video_ids(np.arange(64).reshape(4, 4, 4))} == {"video"}
  audio = vocab.audio_ids(np.array([[0, 1, 2], [0, 1, 63]]))
  assert {vocab.modality(i) for i in audio} == {"audio"}
  # Level-major: all of level 0, then level 1; each level has its own id range.
  assert list(audio - vocab.audio_offset) == [0, 1, 2, 64, 65, 127]
  time_major = vocab.audio_ids(np.array([[0, 1, 2], [0, 1, 63]]), order="time")
  assert list(time_major - vocab.audio_offset) == [0, 64, 1, 65, 2, 127]


def test_describe_golden_example():
  vocab = Vocabulary(configs.load("lm_8b").vocab)
  words = {1: "a", 2: "cat"}
  ids = np.concatenate([[vocab.special("bos"), vocab.task("t2v"), vocab.special("bot_i")],
                        vocab.text_ids([1, 2]), [vocab.special("eot_i"), vocab.special("bov_o")],
                        vocab.video_ids(np.zeros((5, 16, 16), int)),
                        [vocab.special("eov_o"), vocab.special("eos")]])
  text = vocab.describe(ids, decode_text=lambda p: " ".join(words[i] for i in p), video_shape=(5, 16, 16))
  assert text == '<bos> <task:t2v> <bot_i> "a cat" <eot_i> <bov_o> [video 5x16x16] <eov_o> <eos>'
  assert vocab.describe(ids) == ("<bos> <task:t2v> <bot_i> [text 2] <eot_i> <bov_o> [video 1280] "
                                 "<eov_o> <eos>")


@pytest.mark.parametrize("call, message", [
    (lambda v: v.text_ids([256]), "text piece 256 is outside"),
    (lambda v: v.video_ids([-1]), "video code -1 is outside"),
    (lambda v: v.audio_ids(np.zeros((3, 2), int)), "expected \\[levels <= 2"),
    (lambda v: v.task("dance"), "unknown task"),
    (lambda v: v.modality(10_000), "outside the vocabulary"),
])
def test_bad_ids_are_clear_errors(call, message):
  with pytest.raises((ValueError, KeyError), match=message):
    call(Vocabulary(VocabConfig()))


def test_layouts_that_do_not_fit_are_refused():
  with pytest.raises(ConfigError, match="cannot hold"):
    Vocabulary(VocabConfig(special=len(SPECIAL_TOKENS) + len(TASKS) - 1))
  with pytest.raises(ConfigError, match="smaller than the vocabulary layout"):
    configs.load("lm_tiny", ["vocab.text=1000"])
