"""Captions <-> text pieces: a SentencePiece model trained on the user's corpus (docs/design.md 4.3).

  kineto text train --corpus captions.txt --vocab 1000 --out /tmp/text   # -> /tmp/text.model

Pieces are ids in [0, vocab_size) with no vocabulary offset (`Vocabulary.text_ids` adds
it) and no <bos>/<eos>/<pad> pieces: the unified vocabulary has its own markers. Only
<unk> (piece 0) is reserved. A model larger than the vocab config's text range cannot be
used with it, which `TextTokenizer` checks when given the config.
"""
from __future__ import annotations

import pathlib

from configs.schema import ConfigError, VocabConfig


def train_sentencepiece(corpus_path: str | pathlib.Path, vocab_size: int, out_prefix: str | pathlib.Path, *,
                        model_type: str = "unigram", character_coverage: float = 1.0,
                        vocab: VocabConfig | None = None) -> pathlib.Path:
  """Trains a SentencePiece model on a text file (one sentence per line); returns PREFIX.model.

  A 1k model on ~0.5 MB of text takes about a second. With `vocab`, a size that would not
  fit its text range is refused before training.
  """
  import sentencepiece as spm
  corpus_path, out_prefix = pathlib.Path(corpus_path), pathlib.Path(out_prefix)
  if not corpus_path.is_file():
    raise FileNotFoundError(f"text corpus {corpus_path} does not exist; give a UTF-8 text file.")
  if vocab_size < 8:
    raise ValueError(f"vocab_size={vocab_size} is too small for a SentencePiece model; use >= 8.")
  if vocab is not None and vocab_size > vocab.text:
    raise ConfigError(f"vocab_size={vocab_size} exceeds the vocab config's text range of {vocab.text} "
                      "pieces; train a smaller model or raise vocab.text.")
  out_prefix.parent.mkdir(parents=True, exist_ok=True)
  try:
    spm.SentencePieceTrainer.train(
        input=str(corpus_path), model_prefix=str(out_prefix), vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        bos_id=-1, eos_id=-1, pad_id=-1, unk_id=0, minloglevel=2)
  except RuntimeError as e:  # e.g. "Vocabulary size too high" for a small corpus
    raise ValueError(f"SentencePiece could not train a {vocab_size}-piece model on {corpus_path}: {e}") from e
  return out_prefix.with_name(out_prefix.name + ".model")


class TextTokenizer:
  """A trained SentencePiece model: encode -> int pieces, decode -> text."""

  def __init__(self, model_path: str | pathlib.Path, vocab: VocabConfig | None = None):
    import sentencepiece as spm
    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
      raise FileNotFoundError(f"SentencePiece model {model_path} does not exist; train one with "
                              "`kineto text train --corpus F --vocab N --out PREFIX`.")
    self.path = model_path
    self._sp = spm.SentencePieceProcessor(model_file=str(model_path))
    if vocab is not None:
      self.check_fits(vocab)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def check_fits(self, vocab: VocabConfig) -> None:
    if self.vocab_size > vocab.text:
      raise ConfigError(f"text model {self.path} has {self.vocab_size} pieces but the vocab config's "
                        f"text range holds {vocab.text}; raise vocab.text or train a smaller model.")

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def decode(self, pieces) -> str:
    return self._sp.decode([int(p) for p in pieces])
