"""The SentencePiece text tokenizer, its CLI, and captions inside task sequences."""
import json

import numpy as np
import pytest

from configs import ConfigError, VocabConfig
from kineto.cli import main
from lm import tasks
from lm.text import TextTokenizer, train_sentencepiece
from lm.vocab import Vocabulary


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  from pydoc_data.topics import topics
  path = tmp_path_factory.mktemp("text") / "pydoc.txt"
  path.write_text("\n\n".join(topics[k] for k in sorted(topics)))
  return path


@pytest.fixture(scope="module")
def model_1k(corpus):
  return train_sentencepiece(corpus, 1000, corpus.parent / "sp1k")


def test_train_encode_decode(model_1k):
  tok = TextTokenizer(model_1k, VocabConfig(text=1024))
  assert tok.vocab_size == 1000
  sentence = "The for statement is used to iterate over the elements of a sequence."
  pieces = tok.encode(sentence)
  assert all(isinstance(p, int) for p in pieces) and 0 <= min(pieces) and max(pieces) < 1000
  assert len(pieces) < len(sentence) / 2  # real subword pieces, not characters
  assert tok.decode(pieces) == sentence
  assert tok.decode(np.array(pieces)) == sentence


def test_a_caption_in_a_task_sequence(model_1k):
  tok = TextTokenizer(model_1k)
  vocab = Vocabulary(VocabConfig(text=1024))
  seq = tasks.build("t2v", {"text": tok.encode("a cat"), "video": np.zeros((5, 8, 8), int)}, vocab)
  assert vocab.describe(seq["tokens"], decode_text=tok.decode, video_shape=(5, 8, 8)) == (
      '<bos> <task:t2v> <bot_i> "a cat" <eot_i> <bov_o> [video 5x8x8] <eov_o> <eos>')


def test_a_model_larger_than_the_text_range_is_refused(model_1k):
  with pytest.raises(ConfigError, match="has 1000 pieces but the vocab config's text range holds 256"):
    TextTokenizer(model_1k, VocabConfig())


def test_cli_trains_a_model(corpus, tmp_path, capsys):
  out = tmp_path / "run" / "captions"
  assert main(["text", "train", "--corpus", str(corpus), "--vocab", "300", "--out", str(out)]) == 0
  summary = json.loads(capsys.readouterr().out)
  assert summary == {"model": str(out) + ".model", "vocab_size": 300}
  assert TextTokenizer(summary["model"], VocabConfig(text=300)).vocab_size == 300


@pytest.mark.parametrize("args, message", [
    (["--vocab", "300", "--config", "lm_tiny"], "vocab_size=300 exceeds the vocab config's text range of 256"),
    (["--vocab", "4"], "vocab_size=4 is too small"),
    (["--vocab", "300", "--corpus", "/nonexistent/corpus.txt"], "does not exist"),
])
def test_cli_bad_input_is_a_clear_error(corpus, tmp_path, capsys, args, message):
  if "--corpus" not in args:
    args = ["--corpus", str(corpus), *args]
  assert main(["text", "train", *args, "--out", str(tmp_path / "m")]) == 2
  assert message in capsys.readouterr().err
  assert not (tmp_path / "m.model").exists()


def test_too_small_a_corpus_names_the_problem(tmp_path):
  tiny = tmp_path / "tiny.txt"
  tiny.write_text("space invaders\npong\n")
  with pytest.raises(ValueError, match="could not train a 5000-piece model"):
    train_sentencepiece(tiny, 5000, tmp_path / "m")
  with pytest.raises(FileNotFoundError, match="kineto text train"):
    TextTokenizer(tmp_path / "missing.model")
