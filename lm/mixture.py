"""The task mixture and length buckets: tokenized examples -> padded training batches.

A `Schedule` gives per-task weights as a function of training progress (VideoPoet trains
image-heavy for the first quarter of its steps, then video-heavy). A `Mixture` turns a
pool of tokenized examples (see `lm/tasks.py`) into batches:

  step s -> rng(seed, s) -> one bucket (with probability = its tasks' summed weight)
         -> B tasks drawn from the weights restricted to that bucket
         -> row i: rng(seed, s, i) picks an eligible example, its mask and condition dropout
         -> `tasks.build`, padded with <pad> to the bucket length

so every batch has one of a few fixed lengths (XLA compiles once per bucket), each task is
still drawn with its scheduled probability, and batch s depends only on (seed, s): a
resumed run or another host sees the same data, and a host can build just its rows.

Padding carries <pad>, input_mask 0, loss_mask 0 and segment_ids 0 (1 on real tokens).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from configs.schema import ClipSpec, ConfigError
from configs.schema.lm import schedule_stages
from lm import tasks
from lm.vocab import TASKS, Vocabulary


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Piecewise-constant task weights: stage i applies from progress `starts[i]` on."""
  stages: tuple[tuple[float, tuple[tuple[str, float], ...]], ...]

  def __post_init__(self):
    starts = [s for s, _ in self.stages]
    if not starts or starts[0] != 0.0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= 1:
      raise ValueError(f"schedule stage starts {starts} must begin at 0.0 and increase within [0, 1).")
    for start, weights in self.stages:
      unknown = [n for n, _ in weights if n not in TASKS]
      if unknown:
        raise ValueError(f"schedule stage at {start}: unknown tasks {unknown}; known: {list(TASKS)}.")
      if any(not w >= 0 for _, w in weights) or sum(w for _, w in weights) <= 0:
        raise ValueError(f"schedule stage at {start}: weights {dict(weights)} must be >= 0, not all 0.")

  @classmethod
  def of(cls, stages: Sequence[tuple[float, Mapping[str, float]]]) -> Schedule:
    return cls(tuple((float(s), tuple(sorted(w.items()))) for s, w in stages))

  @classmethod
  def constant(cls, weights: Mapping[str, float]) -> Schedule:
    return cls.of([(0.0, weights)])

  def tasks(self) -> tuple[str, ...]:
    """Every task with a non-zero weight in some stage, in lm.vocab.TASKS order."""
    used = {n for _, ws in self.stages for n, w in ws if w > 0}
    return tuple(t for t in TASKS if t in used)

  def weights(self, progress: float) -> dict[str, float]:
    """Normalized weights at `progress` in [0, 1] (fraction of training done)."""
    stage = [ws for start, ws in self.stages if start <= progress][-1]
    total = sum(w for _, w in stage)
    return {n: w / total for n, w in stage if w > 0}


# VideoPoet-like: image-heavy for the first 25% of steps, then video-heavy, with the audio
# tasks (video-to-audio, audio-to-video, audio-video continuation) in the video stage.
# Tasks no example can feed (audio ones without audio codes) are dropped by the caller.
DEMO_SCHEDULE = Schedule.of([
    (0.0, {"t2i": 0.5, "t2v": 0.15, "unconditional": 0.05, "i2v": 0.05, "continuation": 0.05,
           "inpaint": 0.05, "outpaint": 0.05, "v2a": 0.1}),
    (0.25, {"t2i": 0.1, "t2v": 0.3, "unconditional": 0.05, "i2v": 0.1, "continuation": 0.1,
            "inpaint": 0.1, "outpaint": 0.1, "v2a": 0.05, "a2v": 0.05, "av_continuation": 0.05}),
])


NAMED_SCHEDULES = {"videopoet": DEMO_SCHEDULE}


def parse_schedule(spec: str) -> Schedule:
  """`data.schedule` (a name in NAMED_SCHEDULES, or weights / stages; see
  configs.schema.lm.schedule_stages) -> a Schedule; unknown tasks raise ConfigError."""
  stages = schedule_stages(spec)
  if isinstance(stages, str):
    return NAMED_SCHEDULES[stages]
  try:
    return Schedule.of(stages)
  except ValueError as e:
    raise ConfigError(f"data.schedule={spec!r}: {e}") from None


def over_budget(example: Mapping, budget: int) -> bool:
  """True when the example's caption is longer than `budget` pieces."""
  return tasks.has_modality(example, "text") and tasks.caption_length(example["text"]) > budget


def default_buckets(lengths: Iterable[int], max_buckets: int = 4, multiple: int = 8) -> tuple[int, ...]:
  """A few bucket lengths covering `lengths`, each rounded up to `multiple`.

  Starting from one bucket per distinct length, the pair of neighbours whose merge adds
  the least padding (per sequence) is merged until at most `max_buckets` remain.
  """
  buckets = sorted({-(-int(n) // multiple) * multiple for n in lengths})
  if not buckets or max_buckets < 1:
    raise ValueError(f"need at least one length and max_buckets >= 1 (got {max_buckets}).")
  while len(buckets) > max_buckets:
    # merging bucket i into i + 1 pads its sequences by the gap, relative to the new length
    i = min(range(len(buckets) - 1), key=lambda i: (buckets[i + 1] - buckets[i]) / buckets[i + 1])
    del buckets[i]
  return tuple(buckets)


def pad_batch(seqs: Sequence[Mapping[str, np.ndarray]], length: int, pad_id: int,
              text_shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
  """Stacks `tasks.build` outputs into [B, length] arrays, padding on the right; with
  `text_shape` = (budget, E) also the captions' embedding rows, `text_emb` [B, budget, E]
  (zeros past each caption, and for rows without one)."""
  b = len(seqs)
  out = {"tokens": np.full((b, length), pad_id, np.int32), "input_mask": np.zeros((b, length), bool),
         "loss_mask": np.zeros((b, length), bool), "segment_ids": np.zeros((b, length), np.int32)}
  if text_shape is not None:
    out["text_emb"] = np.zeros((b, *text_shape), np.float32)
    for i, s in enumerate(seqs):
      emb = s.get("text_emb", np.zeros((0, text_shape[1]), np.float32))
      out["text_emb"][i, :len(emb)] = emb
  for i, s in enumerate(seqs):
    n = len(s["tokens"])
    if n > length:
      raise ValueError(f"a sequence of {n} tokens does not fit the bucket of {length}; raise the "
                       "bucket lengths (see default_buckets / tasks.max_length).")
    out["tokens"][i, :n] = s["tokens"]
    out["input_mask"][i, :n] = s["input_mask"]
    out["loss_mask"][i, :n] = s["loss_mask"]
    out["segment_ids"][i, :n] = 1
  return out


def padding_fraction(batches: Iterable[Mapping[str, np.ndarray]]) -> float:
  """Fraction of all positions in `batches` that are padding (segment_ids == 0)."""
  pad = total = 0
  for batch in batches:
    pad += int(np.sum(batch["segment_ids"] == 0))
    total += batch["segment_ids"].size
  return pad / max(total, 1)


class Mixture:
  """Batches of one bucket length, with tasks drawn by the schedule; see the module docstring."""

  def __init__(self, examples: Sequence[Mapping], vocab: Vocabulary, schedule: Schedule, *,
               total_steps: int, batch_size: int, spec: ClipSpec = ClipSpec(),
               buckets: Sequence[int] | None = None, max_buckets: int = 4, seed: int = 0,
               cond_dropout: float = 0.1, text_dim: int | None = None):
    """text_dim: the caption embeddings' width E when captions are encoder embeddings (batches then
    carry `text_emb` [B, budget, E]); default: read from the examples."""
    if total_steps < 1 or batch_size < 1:
      raise ValueError(f"total_steps={total_steps} and batch_size={batch_size} must be >= 1.")
    self.examples, self.vocab, self.schedule, self.spec = list(examples), vocab, schedule, spec
    if not 0 <= cond_dropout <= 1:
      raise ValueError(f"cond_dropout={cond_dropout} must be in [0, 1].")
    self.total_steps, self.batch_size, self.seed = total_steps, batch_size, seed
    self.cond_dropout = cond_dropout
    # A caption over the text budget is skipped, not truncated: its example trains the tasks
    # that need no caption (an optional caption left out), and `skipped_captions` counts them.
    long = [i for i, ex in enumerate(self.examples) if over_budget(ex, spec.text_budget)]
    for i in long:
      self.examples[i] = {k: v for k, v in self.examples[i].items() if k != "text"}
    self.skipped_captions = len(long)
    # Encoder captions (float [n, E]): every batch carries text_emb [B, budget, E], one shape.
    dims = {np.shape(ex["text"])[1] for ex in self.examples if tasks.is_embedding(ex.get("text"))}
    if text_dim:
      dims.add(text_dim)
    if len(dims) > 1:
      raise ValueError(f"caption embeddings of widths {sorted(dims)}; the LM takes lm.text_dim={text_dim}: "
                       "tokenize with the text encoder the config names.")
    self.text_shape = (spec.text_budget, dims.pop()) if dims else None
    # Examples that carry every modality a task needs (audio for v2a, a caption for t2v, ...).
    self.eligible = {}
    for name in schedule.tasks():
      need = tasks.get_task(name).requires()
      self.eligible[name] = np.array([i for i, ex in enumerate(self.examples)
                                      if all(tasks.has_modality(ex, m) for m in need)], np.int64)
      if not len(self.eligible[name]):
        raise ValueError(f"task {name} needs {sorted(need)} but no example has them; give such "
                         "examples or set its weight to 0.")
    self.lengths = {name: tasks.max_length(name, vocab, spec) for name in schedule.tasks()}
    self.buckets = tuple(sorted(buckets)) if buckets else default_buckets(self.lengths.values(), max_buckets)
    too_long = {n: l for n, l in self.lengths.items() if l > self.buckets[-1]}
    if too_long:
      raise ValueError(f"tasks {too_long} are longer than the largest bucket {self.buckets[-1]}.")
    self.bucket_of = {n: min(b for b in self.buckets if b >= l) for n, l in self.lengths.items()}

  def plan(self, step: int) -> tuple[int, list[str]]:
    """(bucket length, the batch's tasks) of `step`; depends only on (seed, step)."""
    rng = np.random.default_rng([self.seed, step])
    weights = self.schedule.weights(step / self.total_steps)
    mass = {b: sum(w for n, w in weights.items() if self.bucket_of[n] == b) for b in self.buckets}
    live = [b for b in self.buckets if mass[b] > 0]
    bucket = live[int(rng.choice(len(live), p=np.array([mass[b] for b in live]) / sum(mass.values())))]
    names = [n for n in weights if self.bucket_of[n] == bucket]
    p = np.array([weights[n] for n in names]) / mass[bucket]
    return bucket, [names[i] for i in rng.choice(len(names), size=self.batch_size, p=p)]

  def batch(self, step: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
    """The `rows` of step's global batch: tokens, input_mask, loss_mask, segment_ids [b, L]
    and task [b] (the task token id, for per-task metrics)."""
    bucket, names = self.plan(step)
    seqs, task_ids = [], []
    for row in range(self.batch_size)[rows]:
      rng = np.random.default_rng([self.seed, step, row])
      pool = self.eligible[names[row]]
      example = self.examples[int(pool[rng.integers(len(pool))])]
      seqs.append(tasks.build(names[row], example, self.vocab, rng, spec=self.spec,
                              cond_dropout=self.cond_dropout))
      task_ids.append(self.vocab.task(names[row]))
    out = pad_batch(seqs, bucket, self.vocab.special("pad"), self.text_shape)
    out["task"] = np.array(task_ids, np.int32)
    return out

  def batches(self, start_step: int = 0, rows: slice = slice(None)):
    step = start_step
    while True:
      yield self.batch(step, rows)
      step += 1


def demo_mixture(examples: Sequence[Mapping], vocab: Vocabulary, *, total_steps: int, batch_size: int = 8,
                 seed: int = 0, schedule: Schedule = DEMO_SCHEDULE) -> Mixture:
  """The demo's mixture: 17x64x64 clips -> [5, 8, 8] latents, captions <= 16 pieces, RVQ
  audio [levels, 106] where a clip has audio; t2i, t2v, unconditional, i2v, continuation,
  inpaint, outpaint, v2a, a2v and av_continuation in a VideoPoet-like image-then-video
  schedule."""
  return Mixture(examples, vocab, schedule, total_steps=total_steps, batch_size=batch_size,
                 spec=ClipSpec(frames=17, height=64, width=64, text_budget=16), seed=seed)
