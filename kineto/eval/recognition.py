"""Recognition score of generated clips: does a clip show what its caption names?

  score = RecognitionEvaluator.fit(train_clips, train_captions, held_clips, held_captions)
  score.ceiling                              # accuracy on real held-out clips
  score.rate(generated_clips, captions)      # the fraction read as their intended caption

The demo's game classifier (kineto/demo/recognize.py: colour/layout features, softmax
regression), trained on real training frames. A rate means little without the classifier's
accuracy on real held-out clips beside it (the ceiling) and the chance level (the floor);
`summary` reports all three.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from kineto.demo.recognize import GameClassifier


@dataclasses.dataclass(frozen=True)
class RecognitionEvaluator:
  classifier: GameClassifier
  ceiling: float        # accuracy on real held-out clips
  held_out_clips: int

  @classmethod
  def fit(cls, train_nthwc: np.ndarray, train_captions: Sequence[str], held_nthwc: np.ndarray,
          held_captions: Sequence[str]) -> RecognitionEvaluator:
    clf = GameClassifier.fit(train_nthwc, list(train_captions))
    known = [i for i, c in enumerate(held_captions) if c in clf.labels]
    ceiling = clf.accuracy(held_nthwc[known], [held_captions[i] for i in known]) if known else float("nan")
    return cls(clf, ceiling, len(known))

  @property
  def chance(self) -> float:
    return 1 / len(self.classifier.labels)

  def rate(self, clips_nthwc: np.ndarray, captions: Sequence[str]) -> dict:
    """Recognition rate of clips meant to show `captions` (captions the classifier never saw
    are left out and counted)."""
    known = [i for i, c in enumerate(captions) if c in self.classifier.labels]
    if not known:
      return {"rate": None, "clips": 0, "unknown_captions": len(captions)}
    predicted = self.classifier.predict(np.asarray(clips_nthwc)[known])
    hits = [p == captions[i] for p, i in zip(predicted, known)]
    return {"rate": float(np.mean(hits)), "clips": len(known), "unknown_captions": len(captions) - len(known)}

  def summary(self) -> dict:
    return {"classes": list(self.classifier.labels), "chance": self.chance,
            "held_out_real_accuracy": self.ceiling, "held_out_real_clips": self.held_out_clips,
            "classifier": "kineto/demo/recognize.py GameClassifier (colour/layout features, softmax "
                          "regression), fit on every captioned training clip"}
