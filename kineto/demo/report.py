"""Pictures and tables of a run: TensorBoard scalars read back, loss curves, contact sheets.

  scalars = read_scalars("outputs/demo/lm/tb")           # {"train/loss": [(step, value), ...]}
  plot_curves({"LM": scalars}, ["train/loss"], "loss_curves.png")
  contact_sheet([("pong", clip_thwc), ...], "contact_sheet.png", frames=5)

TensorBoard event files are TFRecord streams of `Event` protos (length, CRC, bytes, CRC);
tensorboardX ships the proto classes, so reading them back needs neither TensorFlow nor
TensorBoard.
"""
from __future__ import annotations

import pathlib
import struct
from collections.abc import Mapping, Sequence

import numpy as np


def _records(path: pathlib.Path):
  data = path.read_bytes()
  i = 0
  while i + 12 <= len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    if i + 12 + n + 4 > len(data):  # a record cut off by a crash: the rest is unreadable
      return
    yield data[i + 12:i + 12 + n]
    i += 12 + n + 4


def read_scalars(tb_dir: str | pathlib.Path) -> dict[str, list[tuple[int, float]]]:
  """Every scalar in the event files under `tb_dir`, per tag, sorted by step (last write wins)."""
  from tensorboardX.proto import event_pb2
  tb_dir = pathlib.Path(tb_dir)
  if not tb_dir.is_dir():
    raise FileNotFoundError(f"no TensorBoard directory {tb_dir}; the run writes one under its workdir.")
  values: dict[str, dict[int, float]] = {}
  for path in sorted(tb_dir.rglob("events.out.tfevents.*")):
    for raw in _records(path):
      event = event_pb2.Event.FromString(raw)
      for v in event.summary.value:
        if v.WhichOneof("value") == "simple_value":
          values.setdefault(v.tag, {})[int(event.step)] = float(v.simple_value)
  return {tag: sorted(steps.items()) for tag, steps in values.items()}


def plot_curves(runs: Mapping[str, Mapping[str, list]], panels: Sequence[tuple[str, str, Sequence[str]]],
                path: str | pathlib.Path) -> pathlib.Path:
  """One PNG with a panel per (title, run, tags): each tag's scalars against steps."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
  for ax, (title, run, tags) in zip(axes[0], panels):
    for tag in tags:
      points = runs.get(run, {}).get(tag, [])
      if points:
        steps, ys = zip(*points)
        ax.plot(steps, ys, marker="." if len(points) < 20 else None, label=tag)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=7)
  fig.tight_layout()
  path = pathlib.Path(path)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def contact_sheet(rows: Sequence[tuple[str, Sequence[np.ndarray]]], path: str | pathlib.Path, *,
                  frames: int = 5, scale: int = 2, label_width: int = 220) -> pathlib.Path:
  """A PNG grid: one row per (label, [clip_thwc uint8, ...]); each clip shows `frames` evenly
  spaced frames, clips of a row side by side with a gap, the label on the left."""
  from PIL import Image, ImageDraw
  if not rows:
    raise ValueError("a contact sheet needs at least one row.")
  h, w = rows[0][1][0].shape[1:3]
  gap = 6
  row_width = max(sum(frames * w * scale + gap for _ in clips) for _, clips in rows)
  sheet = Image.new("RGB", (label_width + row_width, len(rows) * (h * scale + gap) + gap), "white")
  draw = ImageDraw.Draw(sheet)
  for r, (label, clips) in enumerate(rows):
    y = gap + r * (h * scale + gap)
    draw.multiline_text((6, y + 4), label, fill="black")
    x = label_width
    for clip in clips:
      clip = np.asarray(clip)
      picks = np.linspace(0, len(clip) - 1, frames).round().astype(int)
      strip = np.concatenate([clip[i] for i in picks], axis=1)
      img = Image.fromarray(strip).resize((strip.shape[1] * scale, strip.shape[0] * scale), Image.NEAREST)
      sheet.paste(img, (x, y))
      x += img.width + gap
  path = pathlib.Path(path)
  sheet.save(path)
  return path
