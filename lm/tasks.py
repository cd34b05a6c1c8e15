"""Task layouts: one tokenized example -> one prefix-LM training sequence (docs/design.md 4.5).

An example is a dict of already-tokenized inputs, any of them absent:
  `text`   int pieces [n] from `lm.text.TextTokenizer` (no vocabulary offset), or a frozen
           encoder's float embeddings [n, E] (`lm.text_encoder`, text.encoder=minilm|t5): the
           caption slot then holds n <mask> placeholders and `build` returns the rows as
           `text_emb`, which the model projects in their place (lm/model.py `embed`),
  `video`  LFQ codes int [t, h, w] from the video tokenizer,
  `audio`  RVQ codes int [levels, frames] from the audio codec.

A task is declared, not coded: a frozen `Task` lists the segments of its prefix (the
conditions) and of its outputs, each a modality and a view of the example (the whole
clip, its first latent frame, its first k frames, the rest, the clip with masked
positions). `build` lays every task out the same way:

  <bos> <task> [<bot_i> text <eot_i>] [<bov_i> video <eov_i>] [<boa_i> audio <eoa_i>] <res>?
        <bov_o> video <eov_o> [<boa_o> audio <eoa_o>] <eos>

Conventions shared with `lm/loss.py` and the samplers:
  * `input_mask` (bidirectional prefix) covers <bos>, the task token, the conditions, <res>
    and the opening marker of the first output, so the sampler's prompt (`prompt`) is
    exactly the prefix.
  * `loss_mask` is aligned with `tokens` (no separate targets): `next_token_loss` predicts
    tokens[t+1] from tokens[:t+1] and counts it where loss_mask[t+1]. It is 1 exactly on
    output tokens, their closing markers and <eos>. Opening markers are fixed by the layout,
    so samplers write them (`outputs` lists them) and no loss is spent on them.
  * A caption longer than `ClipSpec.text_budget` (pieces or embedding rows) is an error (the
    data pipeline skips and counts such records), never a silent truncation.
  * Classifier-free guidance: `drop_condition=True` replaces the droppable condition (the
    caption) by a null one, the empty `<bot_i> <eot_i>`; `cond_dropout` does the same at
    training time with that probability. A modality the example lacks drops its tokens and
    its markers instead.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from configs.schema import ClipSpec
from lm.vocab import TASKS, Vocabulary

MODALITIES = ("text", "video", "audio")  # prefix order; outputs keep the same order
VIEWS = ("full", "image", "head", "tail", "masked")
_INPUT_MARKERS = {"text": ("bot_i", "eot_i"), "video": ("bov_i", "eov_i"), "audio": ("boa_i", "eoa_i")}
_OUTPUT_MARKERS = {"video": ("bov_o", "eov_o"), "audio": ("boa_o", "eoa_o")}


@dataclasses.dataclass(frozen=True)
class Segment:
  """One modality of the example, seen through a view, between its markers."""
  modality: str
  view: str = "full"
  optional: bool = False   # dropped with its markers when the example lacks the modality
  droppable: bool = False  # the guidance condition: replaced by a null one (see module doc)

  def __post_init__(self):
    if self.modality not in MODALITIES or self.view not in VIEWS:
      raise ValueError(f"segment {self.modality}/{self.view}: modality in {MODALITIES}, view in {VIEWS}.")
    if self.modality != "video" and self.view in ("image", "masked"):
      raise ValueError(f"the {self.view!r} view is for video, not {self.modality}.")


@dataclasses.dataclass(frozen=True)
class Task:
  """A declarative layout: prefix segments, output segments and how conditions are cut."""
  name: str
  inputs: tuple[Segment, ...]
  outputs: tuple[Segment, ...]
  cond_frames: int | None = None   # latent frames in the head/tail views (None: the spec's)
  masks: tuple[str, ...] = ()      # mask generators for the masked view

  def __post_init__(self):
    if self.name not in TASKS:
      raise ValueError(f"task {self.name!r} is not in lm.vocab.TASKS {list(TASKS)}.")
    for role, segs, allowed in (("input", self.inputs, MODALITIES),
                                ("output", self.outputs, tuple(_OUTPUT_MARKERS))):
      order = [s.modality for s in segs]
      if any(m not in allowed for m in order) or order != sorted(order, key=MODALITIES.index) \
          or len(set(order)) != len(order):
        raise ValueError(f"task {self.name}: {role} modalities {order} must be distinct, from "
                         f"{list(allowed)} and in that order (docs/design.md 4.5).")
    if not self.outputs:
      raise ValueError(f"task {self.name} has no output.")
    if any(s.optional or s.droppable for s in self.outputs):
      raise ValueError(f"task {self.name}: outputs cannot be optional or droppable.")
    masked = any(s.view == "masked" for s in self.inputs)
    if masked and (not self.masks or any(m not in MASKS for m in self.masks)):
      raise ValueError(f"task {self.name}: a masked view needs mask generators from {list(MASKS)}.")

  def requires(self) -> frozenset[str]:
    """Modalities an example must have to train this task."""
    return frozenset(s.modality for s in self.inputs + self.outputs if not s.optional)


# --- inpainting / outpainting masks (True = the condition shows <mask> there) ----------

def _span(rng: np.random.Generator, size: int, lo: float, hi: float) -> tuple[int, int]:
  length = int(rng.integers(max(1, int(np.ceil(size * lo))), max(1, int(size * hi)) + 1))
  start = int(rng.integers(0, size - length + 1))
  return start, start + length


def rectangle_mask(shape_thw: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
  """One box covering 1/4 to 3/4 of each side, in every frame (an object to fill in)."""
  t, h, w = shape_thw
  mask = np.zeros(shape_thw, bool)
  (y0, y1), (x0, x1) = _span(rng, h, 0.25, 0.75), _span(rng, w, 0.25, 0.75)
  mask[:, y0:y1, x0:x1] = True
  return mask


def border_mask(shape_thw: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
  """Outpainting: strips along a random non-empty set of sides, each up to 1/3 of the side."""
  t, h, w = shape_thw
  mask = np.zeros(shape_thw, bool)
  sides = rng.random(4) < 0.5
  sides[rng.integers(0, 4)] = True
  top, bottom, left, right = (int(rng.integers(1, max(1, n // 3) + 1)) for n in (h, h, w, w))
  mask[:, :top] |= sides[0]
  mask[:, h - bottom:] |= sides[1]
  mask[:, :, :left] |= sides[2]
  mask[:, :, w - right:] |= sides[3]
  return mask


def region_mask(shape_thw: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
  """Two to four random boxes, each over its own span of frames (objects coming and going)."""
  t, h, w = shape_thw
  mask = np.zeros(shape_thw, bool)
  for _ in range(int(rng.integers(2, 5))):
    (t0, t1), (y0, y1), (x0, x1) = _span(rng, t, 0.3, 1.0), _span(rng, h, 0.1, 0.4), _span(rng, w, 0.1, 0.4)
    mask[t0:t1, y0:y1, x0:x1] = True
  return mask


MASKS: dict[str, Callable[[tuple[int, int, int], np.random.Generator], np.ndarray]] = {
    "rectangle": rectangle_mask, "border": border_mask, "regions": region_mask}


# --- the registry (VideoPoet's task mixture) ---------------------------------------------

_CAPTION = Segment("text", droppable=True)
_OPTIONAL_CAPTION = Segment("text", optional=True, droppable=True)
_VIDEO = Segment("video")

TASK_LAYOUTS: dict[str, Task] = {t.name: t for t in (
    Task("unconditional", inputs=(), outputs=(_VIDEO,)),
    Task("t2v", inputs=(_CAPTION,), outputs=(_VIDEO,)),
    Task("t2i", inputs=(_CAPTION,), outputs=(Segment("video", "image"),)),
    Task("i2v", inputs=(_OPTIONAL_CAPTION, Segment("video", "head")), outputs=(Segment("video", "tail"),),
         cond_frames=1),
    Task("continuation", inputs=(_OPTIONAL_CAPTION, Segment("video", "head")),
         outputs=(Segment("video", "tail"),)),
    Task("inpaint", inputs=(_OPTIONAL_CAPTION, Segment("video", "masked")), outputs=(_VIDEO,),
         masks=("rectangle", "regions")),
    Task("outpaint", inputs=(_OPTIONAL_CAPTION, Segment("video", "masked")), outputs=(_VIDEO,),
         masks=("border",)),
    Task("v2a", inputs=(_VIDEO,), outputs=(Segment("audio"),)),
    Task("a2v", inputs=(Segment("audio"),), outputs=(_VIDEO,)),
    Task("av_continuation", inputs=(Segment("video", "head"), Segment("audio", "head")),
         outputs=(Segment("video", "tail"), Segment("audio", "tail"))),
)}
assert set(TASK_LAYOUTS) == set(TASKS), "every task token in lm.vocab.TASKS needs a layout"


def get_task(name: str) -> Task:
  if name not in TASK_LAYOUTS:
    raise ValueError(f"unknown task {name!r}; known tasks: {list(TASK_LAYOUTS)}.")
  return TASK_LAYOUTS[name]


# --- segment contents ----------------------------------------------------------------

def _cond_frames(task: Task, spec: ClipSpec) -> int:
  if task.cond_frames:
    return task.cond_frames
  spec.check_continuation(spec.continuation_frames)  # a short clip's default (see ClipSpec)
  return spec.continuation_frames


def segment_length(task: Task, seg: Segment, vocab: Vocabulary, spec: ClipSpec) -> int:
  """Tokens inside the segment's markers (text: the budget, i.e. the longest caption)."""
  t, h, w = spec.video_shape
  k = _cond_frames(task, spec)
  if seg.modality == "text":
    return spec.text_budget
  if seg.modality == "video":
    frames = {"full": t, "masked": t, "image": 1, "head": k, "tail": t - k}[seg.view]
    return frames * h * w
  frames = {"full": spec.audio_frames, "head": spec.audio_split(k),
            "tail": spec.audio_frames - spec.audio_split(k)}[seg.view]
  return frames * vocab.cfg.audio_levels


def _video(task: Task, seg: Segment, codes, spec: ClipSpec) -> np.ndarray:
  codes = np.asarray(codes)
  t, h, w = spec.video_shape
  k = _cond_frames(task, spec)
  # A condition may come as just the frames it uses (an image for i2v, k frames to continue).
  ok_frames = {"image": (1, t), "head": (k, t)}.get(seg.view, (t,))
  if codes.ndim != 3 or codes.shape[1:] != (h, w) or codes.shape[0] not in ok_frames:
    raise ValueError(
        f"task {task.name}: video codes of shape {codes.shape}, expected [{' or '.join(map(str, ok_frames))}, "
        f"{h}, {w}] latents ({spec.frames} frames of {spec.height}x{spec.width} pixels at "
        f"compression {'x'.join(map(str, spec.compression))}); re-tokenize the clip or fix the ClipSpec.")
  return {"full": codes, "masked": codes, "image": codes[:1], "head": codes[:k], "tail": codes[k:]}[seg.view]


def _audio(task: Task, seg: Segment, codes, vocab: Vocabulary, spec: ClipSpec) -> np.ndarray:
  codes = np.asarray(codes)
  levels, frames = vocab.cfg.audio_levels, spec.audio_frames
  split = spec.audio_split(_cond_frames(task, spec))
  ok_frames = (split, frames) if seg.view == "head" else (frames,)
  if codes.ndim != 2 or codes.shape[0] != levels or codes.shape[1] not in ok_frames:
    raise ValueError(
        f"task {task.name}: audio codes of shape {codes.shape}, expected [{levels} levels, "
        f"{frames} frames]: a clip of {spec.frames} frames at {spec.fps:g} fps lasts "
        f"{spec.seconds:g} s = {frames} codec frames at {spec.audio_hz:g} Hz. Cut the audio to "
        "the clip, or fix the ClipSpec.")
  return {"full": codes, "head": codes[:, :split], "tail": codes[:, split:]}[seg.view]


def is_embedding(text) -> bool:
  """True when a caption is an encoder's embedding rows [n, E] rather than int pieces."""
  return text is not None and np.issubdtype(np.asarray(text).dtype, np.floating)


def caption_length(text) -> int:
  """Pieces, or embedding rows, of a caption."""
  text = np.asarray(text)
  return text.shape[0] if is_embedding(text) else text.size


def _text(task: Task, pieces, spec: ClipSpec) -> np.ndarray:
  if caption_length(pieces) > spec.text_budget:
    raise ValueError(f"task {task.name}: caption of {caption_length(pieces)} pieces exceeds the text budget "
                     f"of {spec.text_budget}; shorten it or raise ClipSpec.text_budget.")
  return np.asarray(pieces, np.int64).reshape(-1)


def has_modality(example: Mapping, modality: str) -> bool:
  value = example.get(modality)
  return value is not None and np.asarray(value).size > 0


def _segment_ids(task: Task, seg: Segment, example: Mapping, vocab: Vocabulary, spec: ClipSpec,
                 mask: np.ndarray | None) -> np.ndarray:
  value = example[seg.modality]
  if seg.modality == "text" and is_embedding(value):
    if caption_length(value) > spec.text_budget:
      _text(task, value, spec)  # raises, naming the budget
    return np.full(caption_length(value), vocab.special("mask"), np.int64)  # placeholders (module doc)
  if seg.modality == "text":
    return vocab.text_ids(_text(task, value, spec))
  if seg.modality == "audio":
    return vocab.audio_ids(_audio(task, seg, value, vocab, spec), order=spec.audio_order)
  codes = _video(task, seg, value, spec)
  ids = vocab.video_ids(codes)
  if seg.view == "masked":
    if mask is None or np.shape(mask) != codes.shape:
      raise ValueError(f"task {task.name}: mask of shape {np.shape(mask)}, expected {codes.shape} "
                       "(True where the condition shows <mask>).")
    ids = np.where(np.asarray(mask, bool).reshape(-1), vocab.special("mask"), ids)
  return ids


def _draw_mask(task: Task, spec: ClipSpec, rng: np.random.Generator | None) -> np.ndarray:
  if rng is None:
    raise ValueError(f"task {task.name} draws a random mask: pass rng=np.random.default_rng(seed) "
                     "or an explicit mask=.")
  return MASKS[task.masks[int(rng.integers(len(task.masks)))]](spec.video_shape, rng)


# --- sequences -----------------------------------------------------------------------

def _prefix(task: Task, example: Mapping, vocab: Vocabulary, spec: ClipSpec, rng, mask,
            drop_condition: bool, cond_dropout: float) -> list[np.ndarray]:
  droppable = [s for s in task.inputs if s.droppable]
  if drop_condition and not droppable:
    raise ValueError(f"task {task.name} has no droppable condition for guidance; tasks with one: "
                     f"{[n for n, t in TASK_LAYOUTS.items() if any(s.droppable for s in t.inputs)]}.")
  if not 0 <= cond_dropout <= 1:
    raise ValueError(f"cond_dropout={cond_dropout} must be in [0, 1].")
  if cond_dropout > 0 and any(has_modality(example, s.modality) for s in droppable):
    if rng is None:
      raise ValueError("cond_dropout > 0 needs rng=np.random.default_rng(seed).")
    drop_condition = drop_condition or bool(rng.random() < cond_dropout)

  parts = [np.array([vocab.special("bos"), vocab.task(task.name)])]
  for seg in task.inputs:
    if seg.droppable and drop_condition:
      body = np.zeros(0, np.int64)  # the null condition: markers around nothing
    elif has_modality(example, seg.modality):
      if seg.view == "masked" and mask is None:
        mask = _draw_mask(task, spec, rng)
      body = _segment_ids(task, seg, example, vocab, spec, mask)
    elif seg.optional:
      continue
    else:
      raise ValueError(f"task {task.name} needs {seg.modality!r} in the example; it has "
                       f"{sorted(k for k in MODALITIES if has_modality(example, k))}.")
    open_, close = _INPUT_MARKERS[seg.modality]
    parts.append(np.concatenate([[vocab.special(open_)], body, [vocab.special(close)]]))
  if spec.res:
    parts.append(np.array([vocab.special("res")]))
  parts.append(np.array([vocab.special(_OUTPUT_MARKERS[task.outputs[0].modality][0])]))
  return parts


def build(task: str, example: Mapping, vocab: Vocabulary, rng: np.random.Generator | None = None, *,
          spec: ClipSpec = ClipSpec(), mask: np.ndarray | None = None, drop_condition: bool = False,
          cond_dropout: float = 0.0) -> dict[str, np.ndarray]:
  """One training sequence: {tokens int32 [L], input_mask bool [L], loss_mask bool [L]}.

  rng draws the inpainting/outpainting mask (unless `mask` [t, h, w] is given, True =
  masked) and the condition dropout; see the module docstring for the mask conventions.
  """
  layout = get_task(task)
  prefix = _prefix(layout, example, vocab, spec, rng, mask, drop_condition, cond_dropout)
  n_prefix = sum(len(p) for p in prefix)
  parts, loss = list(prefix), [np.zeros(n_prefix, bool)]
  for i, seg in enumerate(layout.outputs):
    if not has_modality(example, seg.modality):
      raise ValueError(f"task {task} outputs {seg.modality!r} but the example has none.")
    open_, close = (vocab.special(m) for m in _OUTPUT_MARKERS[seg.modality])
    body = _segment_ids(layout, seg, example, vocab, spec, None)
    if i > 0:  # the first output's opening marker already ends the prefix
      parts.append(np.array([open_]))
      loss.append(np.zeros(1, bool))
    parts.append(np.concatenate([body, [close]]))
    loss.append(np.ones(len(body) + 1, bool))
  parts.append(np.array([vocab.special("eos")]))
  loss.append(np.ones(1, bool))
  tokens = np.concatenate(parts).astype(np.int32)
  input_mask = np.zeros(len(tokens), bool)
  input_mask[:n_prefix] = True
  out = {"tokens": tokens, "input_mask": input_mask, "loss_mask": np.concatenate(loss)}
  if is_embedding(example.get("text")):
    out["text_emb"] = text_embedding(tokens, example, vocab)
  return out


def text_embedding(tokens: np.ndarray, example: Mapping, vocab: Vocabulary) -> np.ndarray:
  """The embedding rows a sequence's caption slot holds, float32 [n, E]: all of the example's
  caption, or none when the caption was dropped (the null caption, for guidance)."""
  emb = np.asarray(example["text"], np.float32)
  tokens = np.asarray(tokens)
  opens = np.flatnonzero(tokens == vocab.special("bot_i"))
  if not len(opens):
    return emb[:0]
  close = opens[0] + np.argmax(tokens[opens[0]:] == vocab.special("eot_i"))
  return emb[:close - opens[0] - 1]


def prompt(task: str, example: Mapping, vocab: Vocabulary, rng: np.random.Generator | None = None, *,
           spec: ClipSpec = ClipSpec(), mask: np.ndarray | None = None,
           drop_condition: bool = False) -> np.ndarray:
  """The prefix alone, int32 [P], ending with the first output's opening marker.

  The example needs only the conditions (e.g. a caption; an image [1, h, w] for i2v;
  the first k latent frames for continuation). All of it is bidirectional (input_mask 1).
  """
  layout = get_task(task)
  return np.concatenate(_prefix(layout, example, vocab, spec, rng, mask, drop_condition, 0.0)).astype(np.int32)


@dataclasses.dataclass(frozen=True)
class OutputSlot:
  """What a sampler writes after the prompt: `length` tokens of `modality`, then `close`.

  `open` is None for the first output (the prompt already ends with it).
  """
  modality: str
  length: int
  open: int | None
  close: int


def outputs(task: str, vocab: Vocabulary, spec: ClipSpec = ClipSpec()) -> tuple[OutputSlot, ...]:
  """The output layout of a task, in order; <eos> follows the last slot."""
  layout = get_task(task)
  slots = []
  for i, seg in enumerate(layout.outputs):
    open_, close = (vocab.special(m) for m in _OUTPUT_MARKERS[seg.modality])
    slots.append(OutputSlot(seg.modality, segment_length(layout, seg, vocab, spec),
                            None if i == 0 else open_, close))
  return tuple(slots)


def max_length(task: str, vocab: Vocabulary, spec: ClipSpec = ClipSpec()) -> int:
  """The longest sequence `build` makes for this task (a caption at the full text budget)."""
  layout = get_task(task)
  n = 2 + sum(2 + segment_length(layout, s, vocab, spec) for s in layout.inputs) + int(spec.res)
  return n + sum(2 + segment_length(layout, s, vocab, spec) for s in layout.outputs) + 1
