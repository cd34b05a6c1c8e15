"""A reader that needs the sprites: which game does a clip show, read from its shapes alone?

  reader = SpriteReader.fit(train_clips_nthwc, captions)   # real frames of the training split
  reader.accuracy(held_out_clips, held_out_captions)        # its ceiling: real held-out clips
  reader.predict(generated_clips)                           # a caption, or NONE, per clip

The demo's colour/layout classifier (kineto/demo/recognize.py) reads an 8x8 grid of mean
colours and a colour histogram, so a blurry field of the right colours passes it. This reader
is built so that neither colour nor coarse layout is evidence of anything:

- colour: every training frame is recoloured at random (each channel through a random
  non-monotone curve, then the channels mixed by a random 3x3 matrix: permutations, inversions,
  brightness and contrast are special cases), so no colour and no colour relation names a class;
- mean colour and contrast: each frame is standardized (per-channel mean removed, divided by
  its spread); a flat frame is all zeros whatever its colour;
- coarse layout: a small CNN whose receptive field is 16 pixels, its channels averaged and
  max-pooled over the frame: it sees which local shapes occur (paddles, bricks, invaders, lane
  marks, maze walls, digits), not where the big colour fields lie;
- an extra class, NONE, trained on frames whose shapes were destroyed and whose colours were
  kept: frames averaged over the cells of a 4x4 or 8x8 grid and stretched back, or flat in their
  mean colour (colour fields), and frames with their pixels shuffled inside the cells of a 4x4
  or 16x16 grid. A clip without sprites is read as NONE (never a hit) rather than as the class
  its leftover colour statistics lean to. The positives are softened at random (mixed with a
  1-pixel blur) so that sprites a decoder draws soft-edged still count.

The colour classifier's exact evidence with the sprites gone - each clip's pixels shuffled inside
the cells of its 8x8 grid, a grid the NONE class is never shown shuffled - passes the colour
classifier and reads as NONE here (tests/kineto/test_demo.py; the demo's figures are in
bench/NOTES.md).
Training: class-balanced batches of frames, AdamW with a cosine schedule, deterministic for a
seed. A clip's reading sums its frames' log-probabilities.

Shapes: N clips or frames, T frames, H W pixels, C classes (+ NONE), D channels.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

NONE = "(none)"       # the reading of a clip with no class's shapes in it
KNOTS = 4             # segments of the random per-channel colour curve
# The NONE class's frames are cut into grids of this many cells a side. The colour classifier's
# grid (kineto/demo/recognize.py GRID = 8) is left out of the shuffles, so the forgery that keeps
# its features exactly (shuffles inside its cells) is never trained on.
FIELD_GRIDS = (8, 4)       # smooth fields: cell means stretched back (8, 16 pixels at 64x64)
SHUFFLE_GRIDS = (16, 4)    # pixels shuffled inside each cell (4, 16 pixels at 64x64)


class SpriteNet(nnx.Module):
  """Standardized frames [N, H, W, 3] -> logits [N, C]: three convolutions (receptive field
  16 pixels), then each channel's mean and max over the frame."""

  def __init__(self, classes: int, width: int = 24, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(3, width, (4, 4), strides=2, rngs=rngs)
    self.conv2 = nnx.Conv(width, 2 * width, (3, 3), strides=2, rngs=rngs)
    self.conv3 = nnx.Conv(2 * width, 2 * width, (3, 3), rngs=rngs)
    self.head = nnx.Linear(4 * width, classes, rngs=rngs)

  def __call__(self, x_nhwc):
    h_nhwd = jax.nn.relu(self.conv3(jax.nn.relu(self.conv2(jax.nn.relu(self.conv1(x_nhwc))))))
    return self.head(jnp.concatenate([h_nhwd.mean((1, 2)), h_nhwd.max((1, 2))], -1))


def standardize(x_nhwc):
  """Float frames -> per frame, each channel minus its mean, all divided by the frame's spread
  (the floor keeps near-flat frames from being blown up into noise)."""
  x = x_nhwc - x_nhwc.mean((1, 2), keepdims=True)
  return x / (jnp.sqrt((x ** 2).mean((1, 2, 3), keepdims=True)) + 0.05)


def recolour(key, x_nhwc):
  """Frames in [0, 1] -> the same frames in random colours, a draw per frame: each channel
  through a random piecewise-linear curve (KNOTS segments, knot values uniform in [0, 1]),
  then the channels mixed by a random Gaussian 3x3 matrix."""
  n = x_nhwc.shape[0]
  k_curve, k_mix = jax.random.split(key)
  curve = jax.random.uniform(k_curve, (n, 1, 1, KNOTS + 1, 3))
  pos = jnp.clip(x_nhwc, 0, 1) * KNOTS
  i = jnp.minimum(pos.astype(jnp.int32), KNOTS - 1)[:, :, :, None]   # [N, H, W, 1, 3]
  lo = jnp.take_along_axis(curve, i, axis=3)[:, :, :, 0]
  hi = jnp.take_along_axis(curve, i + 1, axis=3)[:, :, :, 0]
  y = lo + (pos - i[:, :, :, 0]) * (hi - lo)
  return jnp.einsum("nhwc,ncd->nhwd", y, jax.random.normal(k_mix, (n, 3, 3)))


def soften(key, x_nhwc):
  """Frames -> each mixed with its Gaussian blur (sigma 1 pixel) by a random weight in [0, 1]."""
  taps = jnp.exp(-0.5 * jnp.arange(-2.0, 3.0) ** 2)
  k_hw = jnp.outer(taps, taps) / taps.sum() ** 2
  blurred = jax.lax.conv_general_dilated(x_nhwc, jnp.tile(k_hw[:, :, None, None], (1, 1, 1, 3)), (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=3)
  a = jax.random.uniform(key, (x_nhwc.shape[0], 1, 1, 1))
  return (1 - a) * x_nhwc + a * blurred


def _cells(x_nhwc, g):
  """[N, H, W, 3] -> [N, g, g, H/g * W/g, 3]: the pixels of each cell of a g x g grid."""
  n, h, w, c = x_nhwc.shape
  return x_nhwc.reshape(n, g, h // g, g, w // g, c).transpose(0, 1, 3, 2, 4, 5).reshape(n, g, g, -1, c)


def _uncells(cells_nggpc, shape):
  """The inverse of `_cells`."""
  n, h, w, c = shape
  g = cells_nggpc.shape[1]
  return cells_nggpc.reshape(n, g, g, h // g, w // g, c).transpose(0, 1, 3, 2, 4, 5).reshape(shape)


def _one_per_frame(key, variants):
  """One of the stacked variants [K, N, ...] per frame, drawn at random."""
  pick = jax.random.randint(key, (variants.shape[1],), 0, variants.shape[0])
  return variants[pick, jnp.arange(variants.shape[1])]


def _grids(grids, h, w):
  usable = [g for g in grids if h % g == 0 and w % g == 0]
  if not usable:
    raise ValueError(f"frames of {h}x{w} pixels: fitting the reader cuts them into grids of {grids} "
                     "cells a side, so height and width must be multiples of one of them (e.g. 32 or 64).")
  return usable


def smooth_fields(key, x_nhwc):
  """Frames -> colour fields without sprites: each averaged over the cells of a FIELD_GRIDS
  grid and bilinearly stretched back, or flat in its mean colour (drawn per frame)."""
  _, h, w, _ = x_nhwc.shape
  fields = [jax.image.resize(_cells(x_nhwc, g).mean(3), x_nhwc.shape, "linear") for g in _grids(FIELD_GRIDS, h, w)]
  flat = jnp.broadcast_to(x_nhwc.mean((1, 2), keepdims=True), x_nhwc.shape)
  return _one_per_frame(key, jnp.stack([*fields, flat]))


def shuffled_cells(key, x_nhwc):
  """Frames -> their pixels shuffled inside the cells of a SHUFFLE_GRIDS grid (drawn per
  frame): each cell keeps its colours and their counts, not its shapes."""
  _, h, w, _ = x_nhwc.shape
  k_grid, k_order = jax.random.split(key)
  variants = []
  for g in _grids(SHUFFLE_GRIDS, h, w):
    cells = _cells(x_nhwc, g)
    order = jnp.argsort(jax.random.uniform(jax.random.fold_in(k_order, g), cells.shape[:-1]), axis=-1)
    variants.append(_uncells(jnp.take_along_axis(cells, order[..., None], axis=-2), x_nhwc.shape))
  return _one_per_frame(k_grid, jnp.stack(variants))


def _frames(clips_nthwc) -> np.ndarray:
  clips = np.asarray(clips_nthwc)
  if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
    raise ValueError(f"clips of shape {clips.shape} and dtype {clips.dtype}: expected uint8 "
                     "[N, T, H, W, 3].")
  return clips.reshape(-1, *clips.shape[2:])


@functools.partial(jax.jit, static_argnums=0)
def _frame_log_probs(graphdef, state, frames_nhwc):
  return jax.nn.log_softmax(nnx.merge(graphdef, state)(standardize(frames_nhwc.astype(jnp.float32) / 255.0)), -1)


@dataclasses.dataclass(frozen=True)
class SpriteReader:
  """A trained `SpriteNet`; `labels` are the class names (captions), its last output is NONE."""
  labels: tuple[str, ...]
  graphdef: nnx.GraphDef
  state: nnx.State

  @classmethod
  def fit(cls, clips_nthwc: np.ndarray, captions: Sequence[str], *, steps: int = 200, batch: int = 32,
          negatives: int = 16, width: int = 24, learning_rate: float = 3e-3, seed: int = 0) -> SpriteReader:
    """Fits on every frame of the given clips, each labelled with its clip's caption; each
    step also shows `negatives` frames with their shapes destroyed, labelled NONE."""
    frames = _frames(clips_nthwc)
    for grids in (FIELD_GRIDS, SHUFFLE_GRIDS):  # the NONE frames are cut from them
      _grids(grids, *frames.shape[1:3])
    if len(clips_nthwc) != len(captions) or len(captions) == 0:
      raise ValueError(f"{len(clips_nthwc)} clips and {len(captions)} captions: need one caption per clip.")
    labels = tuple(sorted(set(captions)))
    if len(labels) < 2:
      raise ValueError(f"captions {labels}: a reader needs at least two classes.")
    y = np.repeat([labels.index(c) for c in captions], frames.shape[0] // len(captions))
    # Class-balanced draws: the demo has half as many Breakout clips as of the other games.
    weight = 1.0 / np.bincount(y, minlength=len(labels))[y]
    key_init, key_train = jax.random.split(jax.random.key(seed))
    graphdef, params = nnx.split(SpriteNet(len(labels) + 1, width, rngs=nnx.Rngs(key_init)))
    opt = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=1e-4)
    half = batch + negatives // 2

    def loss_fn(p, x_nhwc, y_n):
      logits = nnx.merge(graphdef, p)(standardize(x_nhwc))
      return optax.softmax_cross_entropy_with_integer_labels(logits, y_n).mean()

    # A Python loop over a jitted step, not a `lax.scan`: XLA:CPU runs these convolutions ~20x
    # slower inside a while loop (measured: 5 s against 0.25 s a step of 48 frames at 64x64).
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, key, frames_nhwc, y_n, p_n):
      k_pick, k_soft, k_field, k_shuffle, k_colour = jax.random.split(key, 5)
      pick = jax.random.choice(k_pick, y_n.shape[0], (batch + negatives,), p=p_n)
      x = frames_nhwc[pick].astype(jnp.float32) / 255.0
      x = jnp.concatenate([soften(k_soft, x[:batch]), smooth_fields(k_field, x[batch:half]),
                           shuffled_cells(k_shuffle, x[half:])])
      y_b = jnp.concatenate([y_n[pick[:batch]], jnp.full(negatives, len(labels))])
      loss, g = jax.value_and_grad(loss_fn)(p, recolour(k_colour, x), y_b)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s, loss

    data = jnp.asarray(frames), jnp.asarray(y), jnp.asarray(weight / weight.sum())
    state = opt.init(params)
    for key in jax.random.split(key_train, steps):
      params, state, _ = step(params, state, key, *data)
    return cls(labels, graphdef, jax.device_get(params))

  @property
  def readings(self) -> tuple[str, ...]:
    """What `predict` can answer: the labels, then NONE."""
    return (*self.labels, NONE)

  def log_probs(self, clips_nthwc: np.ndarray) -> np.ndarray:
    """[N, C + 1] per-clip scores over `readings`: the sum of each frame's log-probabilities."""
    clips = np.asarray(clips_nthwc)
    frames = _frames(clips)
    logp = np.concatenate([np.asarray(_frame_log_probs(self.graphdef, self.state, jnp.asarray(frames[i:i + 256])))
                           for i in range(0, len(frames), 256)])
    return logp.reshape(clips.shape[0], clips.shape[1], -1).sum(1)

  def predict(self, clips_nthwc: np.ndarray) -> list[str]:
    return [self.readings[i] for i in self.log_probs(clips_nthwc).argmax(1)]

  def accuracy(self, clips_nthwc: np.ndarray, captions: Sequence[str]) -> float:
    return float(np.mean([p == c for p, c in zip(self.predict(clips_nthwc), captions)]))
