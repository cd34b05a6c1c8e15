"""Recognition score of generated clips: does a clip show what its caption names?

  score = RecognitionEvaluator.fit(train_clips, train_captions, held_clips, held_captions)
  score.ceiling, score.sprite_ceiling        # each reader's accuracy on real held-out clips
  score.rate(generated_clips, captions)      # the fraction read as their intended caption

Two readers, both trained on real training frames, read every clip:
- the demo's game classifier (kineto/demo/recognize.py: colour/layout features, softmax
  regression): a blurry field of the right colours passes it;
- the sprite reader (kineto/eval/sprites.py: a small CNN on recoloured frames, with a "no
  shapes" class): it needs the objects' shapes, and reads a palette-only clip as nothing.
A rate means little without its reader's accuracy on real held-out clips beside it (the
ceiling) and the chance level (the floor); `summary` reports them for both readers. The keys
without a prefix are the colour classifier's (as before the sprite reader was added); the
sprite reader's start with `sprite_`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kineto.demo.recognize import GameClassifier
from kineto.eval.sprites import NONE, SpriteReader


@dataclasses.dataclass(frozen=True)
class RecognitionEvaluator:
  classifier: GameClassifier
  sprites: SpriteReader
  ceiling: float          # the colour classifier's accuracy on real held-out clips
  sprite_ceiling: float   # the sprite reader's
  held_out_clips: int

  @classmethod
  def fit(cls, train_nthwc: np.ndarray, train_captions: Sequence[str], held_nthwc: np.ndarray,
          held_captions: Sequence[str]) -> RecognitionEvaluator:
    """Fits both readers on the training clips, then measures them as `of` does."""
    return cls.of(fit_readers(train_nthwc, train_captions), held_nthwc, held_captions)

  @classmethod
  def of(cls, readers: tuple[GameClassifier, SpriteReader], held_nthwc: np.ndarray,
         held_captions: Sequence[str]) -> RecognitionEvaluator:
    """Readers already fit (`fit_readers`), with their ceilings measured on the held-out clips."""
    clf, sprites = readers
    known = [i for i, c in enumerate(held_captions) if c in clf.labels]
    held, captions = held_nthwc[known], [held_captions[i] for i in known]
    nan = float("nan")
    return cls(clf, sprites, clf.accuracy(held, captions) if known else nan,
               sprites.accuracy(held, captions) if known else nan, len(known))

  @property
  def chance(self) -> float:
    return 1 / len(self.classifier.labels)

  def rate(self, clips_nthwc: np.ndarray, captions: Sequence[str]) -> dict:
    """Recognition rate of clips meant to show `captions`, by each reader (captions the readers
    never saw are left out and counted); `sprite_none`: the fraction the sprite reader saw no
    class's shapes in."""
    known = [i for i, c in enumerate(captions) if c in self.classifier.labels]
    if not known:
      return {"rate": None, "sprite_rate": None, "sprite_none": None, "clips": 0,
              "unknown_captions": len(captions)}
    clips, wanted = np.asarray(clips_nthwc)[known], [captions[i] for i in known]
    colour, sprites = self.classifier.predict(clips), self.sprites.predict(clips)
    return {"rate": float(np.mean([p == c for p, c in zip(colour, wanted)])),
            "sprite_rate": float(np.mean([p == c for p, c in zip(sprites, wanted)])),
            "sprite_none": float(np.mean([p == NONE for p in sprites])),
            "clips": len(known), "unknown_captions": len(captions) - len(known)}

  def summary(self) -> dict:
    return {"classes": list(self.classifier.labels), "chance": self.chance,
            "held_out_real_accuracy": self.ceiling, "held_out_real_clips": self.held_out_clips,
            "sprite_held_out_real_accuracy": self.sprite_ceiling,
            "classifier": "kineto/demo/recognize.py GameClassifier (colour/layout features, softmax "
                          "regression), fit on every captioned training clip",
            "sprite_reader": f"kineto/eval/sprites.py SpriteReader (a CNN on randomly recoloured frames, "
                             f"local shapes only; {NONE!r} when it sees no class's shapes), fit on every "
                             "captioned training clip"}


def fit_readers(train_nthwc: np.ndarray, train_captions: Sequence[str], seed: int = 0
                ) -> tuple[GameClassifier, SpriteReader]:
  """(colour classifier, sprite reader), both fit on the clips labelled with their captions. The
  sprite reader takes ~30 s on 2 cores at the demo's size: fit once, read many (the demo's
  eval stage and report share one pair)."""
  return GameClassifier.fit(train_nthwc, list(train_captions)), SpriteReader.fit(train_nthwc, list(train_captions),
                                                                                   seed=seed)
