"""The sprite reader against the colour classifier on a demo run's data (bench/NOTES.md,
"Sprite-level recognizer"). Not part of `make bench` (it needs a demo's data):

  python bench/sprite_reader.py --data outputs/demo/data [--samples outputs/demo/samples/samples.npz]
      [--vidtok outputs/demo/vidtok | --reconstructions recon.npz] [--seeds 0,1,2]

Both readers are fit on the training split's game clips; each reads the held-out game clips,
the same clips recoloured (channels permuted, every other clip inverted), forgeries that keep
the colours but not the shapes (each frame's mean colour; each cell of the colour classifier's
8x8 grid filled with its mean colour or with its own pixels shuffled - that one keeps the
classifier's features exactly; the whole frame's pixels shuffled), Gaussian blurs, the
tokenizer's reconstructions (--vidtok, or an npz with `reconstructions` of the held-out game
clips in split order) and the demo's text-to-video samples (--samples). Prints one JSON
object: accuracy per reader and input, the sprite reader's NONE fraction, its fit seconds.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.ndimage

from kineto.demo.recognize import GRID, GameClassifier
from kineto.eval.sprites import NONE, SpriteReader
from train.data.demo import game_of
from train.data.pipeline import open_split


def game_clips(data, split):
  source = open_split(data, split)
  records = [r for r in (source[i] for i in range(len(source))) if r["source"].startswith(b"atari/")]
  return np.stack([r["video"] for r in records]), [game_of(r) for r in records]


def shuffled(clips, grid, rng):
  """Pixels shuffled inside the cells of a grid x grid grid (grid=1: the whole frame)."""
  n, t, h, w, c = clips.shape
  cells = clips.reshape(n, t, grid, h // grid, grid, w // grid, c).transpose(0, 1, 2, 4, 3, 5, 6)
  cells = cells.reshape(n, t, grid, grid, -1, c)
  order = rng.permuted(np.broadcast_to(np.arange(cells.shape[4]), cells.shape[:5]), axis=-1)
  cells = np.take_along_axis(cells, order[..., None], axis=4).reshape(n, t, grid, grid, h // grid, w // grid, c)
  return cells.transpose(0, 1, 2, 4, 3, 5, 6).reshape(clips.shape)


def forgeries(clips, seed=0):
  rng = np.random.default_rng(seed)
  n, t, h, w, c = clips.shape
  grid = clips.reshape(n, t, GRID, h // GRID, GRID, w // GRID, c)
  u8 = lambda x: np.asarray(x).round().clip(0, 255).astype(np.uint8)  # noqa: E731
  recoloured = np.stack([255 - x[..., [2, 0, 1]] if i % 2 else x[..., [1, 2, 0]] for i, x in enumerate(clips)])
  out = {"real": clips, "recoloured": recoloured,
         "mean_colour": u8(np.broadcast_to(clips.mean((2, 3), keepdims=True), clips.shape)),
         "grid_mosaic": u8(np.broadcast_to(grid.mean((3, 5), keepdims=True), grid.shape).reshape(clips.shape)),
         "grid_cells_shuffled": shuffled(clips, GRID, rng), "frame_shuffled": shuffled(clips, 1, rng)}
  for sigma in (1, 2, 3):
    out[f"blur_sigma{sigma}"] = u8(scipy.ndimage.gaussian_filter(clips.astype(np.float32), (0, 0, sigma, sigma, 0),
                                                                 mode="nearest"))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", required=True)
  parser.add_argument("--samples")
  parser.add_argument("--vidtok")
  parser.add_argument("--reconstructions")
  parser.add_argument("--seeds", default="0")
  args = parser.parse_args()
  x, y = game_clips(args.data, "train")
  xv, yv = game_clips(args.data, "validation")
  inputs = {name: (clips, yv) for name, clips in forgeries(xv).items()}
  if args.vidtok:
    from train.tokenizer_trainer import evaluate, load_tokenizer
    inputs["reconstructions"] = (evaluate(load_tokenizer(args.vidtok)[1], xv)["reconstructions"], yv)
  elif args.reconstructions:
    inputs["reconstructions"] = (np.load(args.reconstructions)["reconstructions"], yv)
  if args.samples:
    samples = np.load(args.samples)
    games = sorted(set(y))
    inputs["t2v_samples"] = (np.concatenate([samples[f"t2v/{g}"] for g in games]),
                             [g for g in games for _ in samples[f"t2v/{g}"]])
  clf = GameClassifier.fit(x, y)
  result = {"train_clips": len(x), "held_out_clips": len(xv), "size": list(xv.shape[1:4]), "classes": sorted(set(y)),
            "colour": {k: clf.accuracy(c, w) for k, (c, w) in inputs.items()}, "sprite": {}}
  for seed in map(int, args.seeds.split(",")):
    started = time.perf_counter()
    reader = SpriteReader.fit(x, y, seed=seed)
    fit = time.perf_counter() - started
    readings = {k: reader.predict(c) for k, (c, _) in inputs.items()}
    result["sprite"][seed] = {"fit_seconds": round(fit, 1),
                              **{k: {"accuracy": float(np.mean([p == g for p, g in zip(readings[k], inputs[k][1])])),
                                     "none": readings[k].count(NONE) / len(readings[k])} for k in inputs}}
  print(json.dumps(result))


if __name__ == "__main__":
  main()
