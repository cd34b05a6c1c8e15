"""A small game classifier for judging text-to-video samples: which game does a clip show?

  clf = GameClassifier.fit(train_clips_nthwc, captions)     # real frames of the training split
  clf.accuracy(held_out_clips, held_out_captions)            # how well it knows real clips
  clf.predict(generated_clips)                               # the caption it reads in each clip

The demo asks its LM for "pong", "breakout", ... and counts how often the classifier
recognizes the prompted game in the generated clip. The classifier is deliberately simple
and blur-tolerant, since generated clips come out of a small tokenizer: per frame, the
colours of a coarse 8x8 grid plus a per-channel colour histogram, standardized, into a
softmax regression (L2-regularized, zero-initialized, full-batch Adam: a few hundred
steps in one jit, deterministic). A
clip's prediction sums its frames' log-probabilities.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

GRID = 8   # coarse layout: GRID x GRID cells of mean colour
BINS = 8   # histogram bins per colour channel


def frame_features(frames_nhwc: np.ndarray) -> np.ndarray:
  """uint8 [N, H, W, 3] -> float32 [N, 3 * GRID**2 + 3 * BINS] layout and colour features."""
  frames = np.asarray(frames_nhwc)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise ValueError(f"frames of shape {frames.shape} and dtype {frames.dtype}: expected uint8 "
                     "[N, H, W, 3] (e.g. clips.reshape(-1, H, W, 3)).")
  n, h, w, _ = frames.shape
  if h % GRID or w % GRID:
    raise ValueError(f"frames of {h}x{w} pixels: height and width must be multiples of {GRID}.")
  x = frames.astype(np.float32) / 255.0
  grid = x.reshape(n, GRID, h // GRID, GRID, w // GRID, 3).mean(axis=(2, 4)).reshape(n, -1)
  bins = np.minimum((x * BINS).astype(np.int32), BINS - 1)  # [N, H, W, 3]
  hist = np.stack([(bins[..., c, None] == np.arange(BINS)).mean(axis=(1, 2)) for c in range(3)], 1)
  return np.concatenate([grid, hist.reshape(n, -1)], axis=1)


@dataclasses.dataclass(frozen=True)
class GameClassifier:
  """Softmax regression on `frame_features`; `labels` are the class names (captions)."""
  labels: tuple[str, ...]
  mean: np.ndarray
  scale: np.ndarray
  weights: np.ndarray   # [F, C]
  bias: np.ndarray      # [C]

  @classmethod
  def fit(cls, clips_nthwc: np.ndarray, captions: Sequence[str], *, steps: int = 400,
          l2: float = 1e-3, learning_rate: float = 0.05) -> GameClassifier:
    """Fits on every frame of the given clips, each labelled with its clip's caption."""
    clips = np.asarray(clips_nthwc)
    if len(clips) != len(captions) or len(clips) == 0:
      raise ValueError(f"{len(clips)} clips and {len(captions)} captions: need one caption per clip.")
    labels = tuple(sorted(set(captions)))
    if len(labels) < 2:
      raise ValueError(f"captions {labels}: a classifier needs at least two classes.")
    t = clips.shape[1]
    feats = frame_features(clips.reshape(-1, *clips.shape[2:]))
    y = np.repeat([labels.index(c) for c in captions], t)
    mean, scale = feats.mean(0), feats.std(0) + 1e-6
    x = jnp.asarray((feats - mean) / scale)
    params = {"w": jnp.zeros((x.shape[1], len(labels))), "b": jnp.zeros(len(labels))}
    opt = optax.adam(learning_rate)

    def loss_fn(p):
      logits = x @ p["w"] + p["b"]
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def fit_all(p):
      def step(carry, _):
        p, s = carry
        g = jax.grad(loss_fn)(p)
        u, s = opt.update(g, s)
        return (optax.apply_updates(p, u), s), None
      (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
      return p

    params = jax.device_get(fit_all(params))
    return cls(labels, mean, scale, np.asarray(params["w"]), np.asarray(params["b"]))

  def log_probs(self, clips_nthwc: np.ndarray) -> np.ndarray:
    """[N, C] per-clip scores: the sum over frames of each frame's log-probabilities."""
    clips = np.asarray(clips_nthwc)
    n, t = clips.shape[:2]
    x = (frame_features(clips.reshape(-1, *clips.shape[2:])) - self.mean) / self.scale
    logp = np.asarray(jax.nn.log_softmax(x @ self.weights + self.bias, axis=-1))
    return logp.reshape(n, t, -1).sum(1)

  def predict(self, clips_nthwc: np.ndarray) -> list[str]:
    return [self.labels[i] for i in self.log_probs(clips_nthwc).argmax(1)]

  def accuracy(self, clips_nthwc: np.ndarray, captions: Sequence[str]) -> float:
    return float(np.mean([p == c for p, c in zip(self.predict(clips_nthwc), captions)]))
