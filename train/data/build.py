"""Video files (+caption, +audio) -> a TFDS dataset of fixed-length clips in ArrayRecord files.

  kineto data build --src DIR --out DIR [--frames 17 --fps 8 --size 64 --crop center ...]

Data comes from a folder of video files (anything PyAV decodes, found recursively by
extension) with optional captions: a sidecar `NAME.txt` next to `NAME.mp4`, or one
`captions.csv` (file,caption) / `captions.jsonl` ({"file": ..., "caption": ...}) in the
folder; a sidecar wins. It goes to `--out`, which `train.data.pipeline` reads with grain.
No TensorFlow: the builder below is a `tfds.core.GeneratorBasedBuilder` whose features
are plain tensors (`tfds.features.Image/Video/Audio` need TensorFlow even to read).

Each example holds T frames at `fps` (T = 1 + 4k, what the causal tokenizer takes):
  video      uint8 [T, H, W, 3]   (a ZLIB-compressed Tensor)
  audio      float32 [S], mono at `audio_rate`, S = round(T / fps * audio_rate): exactly
             the clip's time span (zeros, and has_audio=False, for a file without sound)
  caption    text;  source: the file's path under --src;  start: seconds from its first frame

How a file becomes clips: decode with PyAV (turned upright by its display matrix, as
phones record portrait video); resample to `fps` by timestamp (output frame k
is the source frame on screen at time t0 + k / fps, so any source rate works); resize with
swscale's area filter so the frame covers H x W, then crop (center, or random per clip
with --seed; `none` squashes the whole frame to H x W); cut windows of T frames every
`stride` frames (default T: no overlap).

Held-out split (`validation`): by whole files (split_by="file", the default: a seeded
choice of round(F * n) usable files, at least one when F > 0) or by disjoint time ranges
(split_by="time": the first 1 - F of each file's frames train, the rest validate, and no
window crosses the cut). Either way no frame is in both splits. "time" decodes each file
twice and holds one file's resized frames in memory.

Bad input is skipped and counted, never fatal: a file that cannot be opened, has no video
stream or is too short for one clip is listed under `skipped` in summary.json with the
reason; one that fails part-way keeps the clips read before the error and is listed under
`partial`. The dataset is built in a hidden sibling dir (`.NAME.building-PID`) and renamed
to --out when complete, so a killed build never leaves a dir that looks finished.

At scale (`--runner direct|dataflow|flink|spark|portable [--workers N] [--beam_options
"..."]`, `pip install 'kineto[beam]'`): the same build as an Apache Beam pipeline through
TFDS's Beam support (`_generate_examples` returns a PTransform; TFDS's BeamWriter shuffles
and writes the shards). This process lists and probes the files and picks the held-out
ones exactly as above; the workers open, decode and cut each source with the same
`counted_examples` and send back its outcome, which the summary is made from in the same
order. TFDS orders each split by a hash of the keys whichever writer runs, so the records
come out identical, in the same order. A source's `open` must pickle (a module-level
function or a functools.partial of one, as file_source and the demo's sources are).
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import json
import os
import pathlib
import pickle
import re
import shlex
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from configs.schema import ClipSpec
from train.data.decode import EPS, Resizer, at_fps, crop_clip, decode_audio, decode_video
from train.files import write_json

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .mkv .webm .avi .mpg .mpeg .ts .flv .wmv .3gp .ogv .gif".split())
SPLITS = ("train", "validation")
SPLIT_BY = ("file", "time")


class DataError(ValueError):
  """A data or data-argument error; the message names the value and the fix."""


@dataclasses.dataclass
class Stream:
  """What a source decodes to: timed frames and (optionally) its sound on the same clock."""
  frames: Iterable[tuple[float, Any]]  # (seconds, av.VideoFrame or uint8 [h, w, 3]), in time order
  audio: np.ndarray | None = None      # float32 mono at the spec's audio_rate
  audio_start: float = 0.0             # the time of audio sample 0, in the frames' seconds
  # (seconds, phrase) of what happens when, e.g. a game's score changes (train/data/demo.py): a
  # clip's caption is the source's caption followed by the phrases of its window, in order.
  events: Sequence[tuple[float, str]] = ()


@dataclasses.dataclass
class Source:
  """One video (a file, a game episode, ...) and the split its clips go to."""
  name: str                      # unique; stored as `source`
  caption: str
  split: str                     # "train", "validation" or "time" (cut by time, see above)
  open: Callable[[], Stream]     # called once per split that reads this source
  crop: str | None = None        # overrides the spec's crop (e.g. "none" for game screens)


# --- frames: cut windows (decoding, resampling and resizing: train/data/decode.py) ---------

def _windows(frames: Iterable[tuple[float, Any]], spec: ClipSpec, resize: Callable,
             lo: int = 0, hi: int | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
  """Yields (first index, first time, [T, h, w, 3]) every spec.step frames within [lo, hi)."""
  buf, start = [], lo
  for i, (t, frame) in enumerate(frames):
    if hi is not None and i >= hi:
      break
    if i < start:  # between windows when stride > frames: not even resized
      continue
    buf.append((t, resize(frame)))
    if len(buf) == spec.frames:
      yield start, buf[0][0], np.stack([f for _, f in buf])
      start += spec.step
      buf = buf[spec.step:]


def _audio_window(audio: np.ndarray | None, audio_start: float, t: float,
                  spec: ClipSpec) -> np.ndarray:
  """The `spec.audio_samples` samples from time t, zero-padded where the track has none."""
  out = np.zeros(spec.audio_samples, np.float32)
  if audio is None:
    return out
  i0 = round((t - audio_start) * spec.audio_rate)
  lo, hi = max(i0, 0), min(i0 + len(out), len(audio))
  if hi > lo:
    out[lo - i0:hi - i0] = audio[lo:hi]
  return out


def source_examples(source: Source, split: str, spec: ClipSpec,
                    val_fraction: float) -> Iterator[tuple[str, dict]]:
  """(key, example) for each clip of `source` that belongs to `split`."""
  stream = source.open()
  crop = source.crop or spec.crop
  resize = Resizer(spec.height, spec.width, crop)
  frames = at_fps(stream.frames, spec.fps)
  lo, hi = 0, None
  if source.split == "time":  # the cut needs the length: hold the resized frames
    frames = [(t, resize(f)) for t, f in frames]
    cut = int(len(frames) * (1 - val_fraction))
    lo, hi = (0, cut) if split == "train" else (cut, None)
    resize = lambda f: f  # noqa: E731  (already resized)
  t_first = None
  name_key = zlib.crc32(source.name.encode())
  for index, t, clip_thwc in _windows(frames, spec, resize, lo, hi):
    if t_first is None:
      t_first = t - index / spec.fps
    yield f"{source.name}@{index}", {
        "video": crop_clip(clip_thwc, spec.height, spec.width, crop, [spec.seed, name_key, index]),
        "audio": _audio_window(stream.audio, stream.audio_start, t, spec),
        "has_audio": stream.audio is not None,
        "caption": clip_caption(source.caption, stream.events, t, t + spec.frames / spec.fps),
        "source": source.name,
        "start": np.float32(t - t_first),
    }


def clip_caption(caption: str, events: Sequence[tuple[float, str]], t0: float, t1: float) -> str:
  """The source's caption, then the distinct phrases of the events in [t0, t1) in order ("pong, the
  player scores"); just the caption when nothing is recorded in the window."""
  phrases = list(dict.fromkeys(p for t, p in events if t0 <= t < t1))
  return ", ".join([caption, *phrases]) if phrases else caption


# --- files ------------------------------------------------------------------------------

def _open_file(path: pathlib.Path, rate: int) -> Stream:
  audio, audio_start = decode_audio(path, rate)
  return Stream(frames=decode_video(path), audio=audio, audio_start=audio_start)


def file_source(path: pathlib.Path, name: str, caption: str, split: str, rate: int) -> Source:
  # a partial of a module-level function, not a closure: Beam pickles sources to its workers
  return Source(name=name, caption=caption, split=split,
                open=functools.partial(_open_file, path, rate))


def counted_examples(source: Source, split: str, spec: ClipSpec, val_fraction: float,
                     outcome: dict) -> Iterator[tuple[str, dict]]:
  """source_examples, never raising: fills `outcome` with clips, with_audio and the error.

  The one per-source step of both builds (in-process and each Beam worker): a file that
  fails part-way keeps the clips read before the error.
  """
  outcome.update(clips=0, with_audio=0, error=None)
  try:
    for key, example in source_examples(source, split, spec, val_fraction):
      yield key, example
      outcome["clips"] += 1
      outcome["with_audio"] += bool(example["has_audio"])
  except Exception as e:  # a corrupt file is reported, never fatal to the build
    outcome["error"] = f"{type(e).__name__}: {e}"


def _probe(path: pathlib.Path, spec: ClipSpec) -> str | None:
  """Why `path` cannot give a clip (from its header alone), or None if it may."""
  import av
  try:
    with av.open(str(path)) as container:
      if not container.streams.video:
        return "no video stream"
      seconds = container.duration / 1e6 if container.duration else None
  except Exception as e:  # PyAV raises many kinds for garbage; all mean "unreadable"
    return f"cannot open: {type(e).__name__}: {e}"
  if seconds is not None and seconds * spec.fps <= spec.frames - 1 - EPS:
    return f"too short: {seconds:.2f} s, one clip of {spec.frames} frames at {spec.fps:g} fps " \
           f"needs more than {(spec.frames - 1) / spec.fps:.3f} s"
  return None


def find_videos(src: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())


def read_captions(src: pathlib.Path) -> dict[str, str]:
  """The mapping file's {file name: caption}, from captions.csv or captions.jsonl in `src`."""
  mapping = {}
  csv_path, jsonl_path = src / "captions.csv", src / "captions.jsonl"
  if csv_path.is_file():
    with open(csv_path, newline="", encoding="utf-8") as f:
      for line, row in enumerate(csv.reader(f), 1):
        header = line == 1 and row and row[0].strip().lower() in ("file", "filename", "name", "path")
        if not row or header:
          continue
        if len(row) < 2:
          raise DataError(f"{csv_path}:{line}: expected `file,caption`, got {row!r}.")
        mapping[row[0].strip()] = row[1].strip()
  if jsonl_path.is_file():
    for line, text in enumerate(jsonl_path.read_text(encoding="utf-8").splitlines(), 1):
      if not text.strip():
        continue
      try:
        item = json.loads(text)
        mapping[str(item["file"])] = str(item["caption"]).strip()
      except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{jsonl_path}:{line}: expected {{\"file\": ..., \"caption\": ...}}, "
                        f"got {text[:80]!r} ({type(e).__name__}).") from e
  return mapping


def caption_for(path: pathlib.Path, name: str, mapping: dict[str, str]) -> str:
  sidecar = path.with_suffix(".txt")
  if sidecar.is_file():
    return sidecar.read_text(encoding="utf-8").strip()
  for key in (name, path.name, path.stem):  # relative path, file name, or bare stem
    if key in mapping:
      return mapping[key]
  return ""


def _held_out(names: list[str], val_fraction: float, seed: int) -> set[str]:
  if val_fraction == 0:
    return set()
  if len(names) < 2:
    raise DataError(f"only {len(names)} usable video file(s): the validation split holds out "
                    "whole files; use --split_by time, --val_fraction 0, or add files.")
  k = min(max(round(len(names) * val_fraction), 1), len(names) - 1)
  order = np.random.default_rng(seed).permutation(len(names))
  return {names[i] for i in order[:k]}


# --- the TFDS builder -------------------------------------------------------------------

class ClipDataset(tfds.core.GeneratorBasedBuilder):
  """Fixed-length clips with caption and audio, from any list of `Source`s."""
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "video, audio, has_audio, caption, source, start."}
  # No download checksums or metadata files live next to this module; without this TFDS
  # looks for them through `importlib_resources`, which it does not declare.
  code_path = None

  def _log_download_bytes(self):  # TFDS prints "Downloading ..." with the temporary path
    pass

  def _log_download_done(self):
    pass

  def __init__(self, *, sources: list[Source], spec: ClipSpec, val_fraction: float,
               progress: bool = True, beam_stats: str | None = None, **kwargs):
    self.sources, self.spec, self.val_fraction = sources, spec, val_fraction
    kinds = {s.split for s in sources}
    self.splits = [s for s in SPLITS if s in kinds or ("time" in kinds and
                                                       (s == "train" or val_fraction > 0))]
    self.clips: dict[str, dict[str, int]] = {s.name: {} for s in sources}  # per source, per split
    self.with_audio = dict.fromkeys(self.splits, 0)
    self.captions: dict[str, dict[str, int]] = {s: {} for s in self.splits}
    self.errors: dict[str, str] = {}
    self.bar = None
    self._progress = progress
    # With Beam (a DownloadConfig with a runner), the workers write each source's outcome
    # under this directory and collect_beam_stats() reads them back after the pipeline.
    self.beam_stats = beam_stats
    super().__init__(file_format="array_record", **kwargs)

  def _info(self):
    spec, F = self.spec, tfds.features
    return tfds.core.DatasetInfo(
        builder=self,
        description=f"{spec.frames}-frame clips at {spec.fps:g} fps, {spec.height}x{spec.width}, "
                    f"audio {spec.audio_rate} Hz mono (kineto train.data.build).",
        features=F.FeaturesDict({
            "video": F.Tensor(shape=(spec.frames, spec.height, spec.width, 3), dtype=np.uint8,
                              encoding=F.Encoding.ZLIB),
            "audio": F.Tensor(shape=(None,), dtype=np.float32),
            "has_audio": F.Scalar(dtype=np.bool_),
            "caption": F.Text(),
            "source": F.Text(),
            "start": F.Scalar(dtype=np.float32),
        }))

  def _split_generators(self, dl_manager):
    total = sum(sum(s.split in (split, "time") for split in self.splits) for s in self.sources)
    self.bar = tqdm.tqdm(total=total, desc="sources", unit="src",
                         disable=not self._progress or self.beam_stats is not None)
    return {split: self._generate_examples(split) for split in self.splits}

  def _split_sources(self, split: str) -> list[Source]:
    return [s for s in self.sources if s.split in (split, "time")]

  def _generate_examples(self, split: str):
    if self.beam_stats is not None:
      return beam_split(self._split_sources(split), split, self.spec, self.val_fraction,
                        os.path.join(self.beam_stats, split))
    return self._generate_in_process(split)

  def _generate_in_process(self, split: str):
    count = 0
    for source in self._split_sources(split):
      outcome = {}
      yield from counted_examples(source, split, self.spec, self.val_fraction, outcome)
      self._record(source, split, outcome)
      count += outcome["clips"]
      self.bar.update(1)
      self.bar.set_postfix({split: count, "failed": len(self.errors)})
    self._check_not_empty(split, count)

  def _record(self, source: Source, split: str, outcome: dict) -> None:
    """Adds one source's outcome in one split to the summary's counts."""
    n = outcome["clips"]
    self.clips[source.name][split] = n
    self.with_audio[split] += outcome["with_audio"]
    if n:
      by_caption = self.captions[split]
      by_caption[source.caption] = by_caption.get(source.caption, 0) + n
    if outcome["error"]:
      self.errors.setdefault(source.name, outcome["error"])

  def _check_not_empty(self, split: str, count: int) -> None:
    if count == 0:
      raise DataError(f"the {split} split got no clips: all its sources were skipped "
                      f"({self.skipped()[:3]}); add usable files or change --val_fraction "
                      "or --split_by.")

  def collect_beam_stats(self, missing_ok: bool = False) -> None:
    """After a Beam build: the workers' per-source outcomes, recorded in the in-process order
    (splits, then sources), so summary.json comes out the same. missing_ok: after a failed
    pipeline, the splits whose outcomes were written."""
    for split in self.splits:
      try:
        outcomes = read_beam_stats(os.path.join(self.beam_stats, split))
      except FileNotFoundError:
        if not missing_ok:
          raise
        continue
      for source in self._split_sources(split):
        self._record(source, split, outcomes[source.name])
      self._check_not_empty(split, sum(outcomes[s.name]["clips"] for s in self._split_sources(split)))

  def skipped(self) -> list[dict]:
    """Sources that gave no clip at all, with the reason."""
    out = []
    for name, per_split in self.clips.items():
      if per_split and not sum(per_split.values()):
        reason = self.errors.get(name) or (
            f"too short: no {self.spec.frames}-frame window at {self.spec.fps:g} fps")
        out.append({"file": name, "reason": reason})
    return out

  def partial(self) -> list[dict]:
    """Sources that failed part-way: their clips before the error are kept."""
    return [{"file": name, "reason": reason, "clips": sum(self.clips[name].values())}
            for name, reason in self.errors.items() if sum(self.clips[name].values())]


# --- Apache Beam: the same per-source step on a runner's workers ------------------------

_EMPTY_SPLIT = re.compile(r"total number of generated examples is 0 for split (\w+)")
RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner",
           "spark": "SparkRunner", "portable": "PortableRunner"}
# --workers N as each runner's own option
WORKER_FLAGS = {"direct": ("--direct_running_mode=multi_processing", "--direct_num_workers={n}"),
                "dataflow": ("--num_workers={n}",), "flink": ("--parallelism={n}",),
                "spark": ("--sdk_worker_parallelism={n}",),
                "portable": ("--sdk_worker_parallelism={n}",)}


def beam_flags(runner: str | None, workers: int | None = None,
               beam_options: str | None = None) -> list[str] | None:
  """The Beam pipeline flags for `--runner/--workers/--beam_options`, or None (in-process).

  Checks everything before any work: an unknown runner, workers < 1, options without a
  runner, or apache-beam missing are a DataError. `direct` without --workers uses every core
  (multi-processing); --beam_options come last, so they override ours.
  """
  if runner is None:
    if beam_options:
      raise DataError("--beam_options needs --runner (direct, dataflow, flink, spark, portable).")
    if workers is not None:
      raise DataError(f"--workers {workers} needs --runner (direct, dataflow, flink, spark, "
                      "portable); without one the build runs in this process.")
    return None
  if runner not in RUNNERS:
    raise DataError(f"--runner {runner!r} is not one of {', '.join(RUNNERS)}.")
  if workers is not None and (not isinstance(workers, int) or workers < 1):
    raise DataError(f"--workers {workers} must be at least 1.")
  try:
    extra = shlex.split(beam_options or "")
  except ValueError as e:
    raise DataError(f"--beam_options {beam_options!r}: {e}.") from None
  bad = [f for f in extra if not f.startswith("--")]
  if bad:
    raise DataError(f"--beam_options: {bad[0]!r} is not a --flag=value pipeline option.")
  if importlib.util.find_spec("apache_beam") is None:
    raise DataError(f"--runner {runner} needs Apache Beam, which is not installed: "
                    "pip install 'kineto[beam]'.")
  if runner == "direct" and workers is None:
    workers = os.cpu_count() or 1
  flags = [f"--runner={RUNNERS[runner]}"]
  if workers is not None:
    flags += [f.format(n=workers) for f in WORKER_FLAGS[runner]]
  return flags + extra


SOURCES_PER_FILE = 256  # sources per pickle file handed to the workers


def beam_split(sources: list[Source], split: str, spec: ClipSpec, val_fraction: float,
               work_dir: str):
  """The Beam PTransform of one split: sources -> (key, example), spread over the workers.

  The sources travel as pickle files of SOURCES_PER_FILE in `work_dir` (on storage the
  workers see), not inside the pipeline graph, which runners limit in size (Dataflow: 10
  MB). Each source's outcome (clips, with_audio, error) goes to `work_dir`/outcomes.json
  (read back by read_beam_stats) so that summary.json is the in-process one.
  """
  import apache_beam as beam
  from etils import epath
  work = epath.Path(work_dir)
  work.mkdir(parents=True, exist_ok=True)
  chunks = []
  for i in range(0, len(sources), SOURCES_PER_FILE):
    chunks.append(str(work / f"sources-{i // SOURCES_PER_FILE:05d}.pkl"))
    epath.Path(chunks[-1]).write_bytes(pickle.dumps(sources[i:i + SOURCES_PER_FILE]))

  @beam.ptransform_fn
  def clips(pipeline):
    results = (pipeline
               | "SourceFiles" >> beam.Create(chunks, reshuffle=False)
               | "SpreadFiles" >> beam.Reshuffle()
               | "Sources" >> beam.FlatMap(_read_sources)
               | "Spread" >> beam.Reshuffle()  # one source per element, on any worker
               | "Clips" >> beam.FlatMap(_beam_clips, split, spec, val_fraction)
               .with_outputs("outcome", main="examples"))
    _ = (results.outcome
         | "Outcomes" >> beam.combiners.ToList()
         | "WriteOutcomes" >> beam.Map(_write_outcomes, work_dir))
    return results.examples
  return clips()


def _read_sources(path: str) -> list[Source]:
  from etils import epath
  return pickle.loads(epath.Path(path).read_bytes())


def _beam_clips(source: Source, split: str, spec: ClipSpec, val_fraction: float):
  from apache_beam import pvalue
  outcome = {}
  yield from counted_examples(source, split, spec, val_fraction, outcome)
  yield pvalue.TaggedOutput("outcome", (source.name, outcome))


def _write_outcomes(outcomes: list, outcomes_dir: str) -> None:
  from etils import epath
  path = epath.Path(outcomes_dir)
  path.mkdir(parents=True, exist_ok=True)
  (path / "outcomes.json").write_text(json.dumps(dict(sorted(outcomes))))


def read_beam_stats(outcomes_dir: str) -> dict[str, dict]:
  from etils import epath
  return json.loads((epath.Path(outcomes_dir) / "outcomes.json").read_text())


# --- building a dataset directory -------------------------------------------------------

def _check_out(out: pathlib.Path, overwrite: bool) -> None:
  if out.exists() and not out.is_dir():
    raise DataError(f"--out {out} exists and is not a directory; choose another --out.")
  if out.is_dir() and any(out.iterdir()):
    if not (out / "dataset_info.json").is_file():
      raise DataError(f"--out {out} exists, is not empty and is not a built dataset; choose a "
                      "new or empty --out.")
    if not overwrite:
      raise DataError(f"--out {out} already holds a built dataset; pass --overwrite to replace "
                      "it, or choose another --out.")


def _remove_leftovers(out: pathlib.Path) -> None:
  """Removes the half-built (`.NAME.building-PID`) and replaced (`.NAME.old-PID`) folders that
  killed builds of `out` left behind: those whose process is gone."""
  for leftover in out.parent.glob(f".{out.name}.*-*"):
    kind, _, pid = leftover.name.rpartition("-")
    if not (kind.endswith((".building", ".old")) and pid.isdigit()):
      continue
    try:
      os.kill(int(pid), 0)
      continue  # that build is still running
    except ProcessLookupError:
      pass
    except PermissionError:
      continue  # alive, another user's
    print(f"kineto data: removing {leftover.name}, left by a build that was killed", file=sys.stderr)
    shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(built: pathlib.Path, out: pathlib.Path) -> None:
  """Renames the finished dataset to `out` (replacing an empty dir or, if allowed, an old one)."""
  old = None
  if out.is_dir():
    if any(out.iterdir()):
      old = out.parent / f".{out.name}.old-{os.getpid()}"
      os.replace(out, old)
    else:
      out.rmdir()
  os.replace(built, out)
  if old is not None:
    shutil.rmtree(old, ignore_errors=True)


def write_dataset(sources: list[Source], spec: ClipSpec, out: str | os.PathLike, *,
                  val_fraction: float = 0.1, overwrite: bool = False, progress: bool = True,
                  skipped: list[dict] = (), notes: dict | None = None, runner: str | None = None,
                  workers: int | None = None, beam_options: str | None = None,
                  shards: int | None = None) -> dict:
  """Builds the TFDS/ArrayRecord dataset of `sources` at `out`; returns (and writes) the summary.

  `skipped` lists inputs refused before the build (counted in the summary with the rest);
  `notes` are extra summary fields. `runner` (with `workers`, `beam_options`): build with
  an Apache Beam pipeline on that runner (beam_flags); None builds in this process. Either
  way the examples, splits and summary (but its seconds) are the same, in the same order
  (TFDS sorts each split by a hash of the keys); `shards` files per split (default: TFDS's
  choice by size) changes only where the files split that order.
  """
  flags = beam_flags(runner, workers, beam_options)
  if shards is not None and (not isinstance(shards, int) or shards < 1):
    raise DataError(f"--shards {shards} must be at least 1 (or left out: TFDS picks by size).")
  out = pathlib.Path(out).absolute()
  _check_out(out, overwrite)
  if not 0 <= val_fraction < 1:
    raise DataError(f"val_fraction={val_fraction!r} must be in [0, 1).")
  names = [s.name for s in sources]
  if len(set(names)) != len(names):
    raise DataError(f"source names must be unique; repeated: "
                    f"{sorted({n for n in names if names.count(n) > 1})}.")
  tfds.disable_progress_bar()  # ours counts sources; TFDS's would print one per split and shard
  out.parent.mkdir(parents=True, exist_ok=True)
  _remove_leftovers(out)
  tmp = out.parent / f".{out.name}.building-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  t_start = time.perf_counter()
  try:
    builder = ClipDataset(sources=sources, spec=spec, val_fraction=val_fraction,
                          progress=progress, data_dir=str(tmp),
                          beam_stats=None if flags is None else str(tmp / "outcomes"))
    config = tfds.download.DownloadConfig(num_shards=shards)
    if flags is not None:
      from apache_beam.options.pipeline_options import PipelineOptions
      config = tfds.download.DownloadConfig(num_shards=shards, beam_options=PipelineOptions(flags))
      if progress:
        print(f"kineto data: {len(sources)} sources on Beam ({' '.join(flags)})", file=sys.stderr,
              flush=True)  # stdout stays the summary's JSON
    try:
      builder.download_and_prepare(download_config=config)
      if flags is not None:
        builder.collect_beam_stats()
    except Exception as e:  # TFDS re-raises errors from our generator wrapped: surface ours
      cause = e
      while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__ or cause.__context__
      if cause is not None:
        raise DataError(str(cause)) from None
      few = re.search(r"num_examples \((\d+)\) < number_of_shards \((\d+)\)", str(e))
      if few:  # in-process, TFDS asserts; its Beam writer leaves out the empty shards
        raise DataError(f"--shards {few.group(2)} is more than a split's {few.group(1)} "
                        "examples; ask for fewer.") from None
      empty = _EMPTY_SPLIT.search(str(e)) if flags is not None else None
      if empty:  # TFDS's Beam writer refused an empty split: say why, as in-process
        builder.collect_beam_stats(missing_ok=True)
        builder._check_not_empty(empty.group(1), 0)
      raise
    finally:
      if builder.bar is not None:
        builder.bar.close()
    built = pathlib.Path(builder.data_dir)
    examples = {s: builder.info.splits[s].num_examples for s in builder.splits}
    skipped = list(skipped) + builder.skipped()
    summary = {
        "examples": {**examples, "total": sum(examples.values())},
        "skipped": {"count": len(skipped), "files": skipped},
        "partial": builder.partial(),
        "sources": {s: sum(1 for c in builder.clips.values() if c.get(s)) for s in builder.splits},
        "with_audio": builder.with_audio,
        # clips per caption, while that stays readable (a demo's games; not a caption per file)
        "captions": {s: (dict(sorted(c.items())) if len(c) <= 50 else f"{len(c)} distinct")
                     for s, c in builder.captions.items()},
        "spec": {**spec.dataset_fields(), "stride": spec.step,
                 "audio_samples": spec.audio_samples},
        "val_fraction": val_fraction,
        **(notes or {}),
        "bytes": sum(p.stat().st_size for p in built.iterdir() if p.is_file()),
        "seconds": round(time.perf_counter() - t_start, 2),
        "path": str(out),
    }
    write_json(built / "summary.json", summary)
    _move_into_place(built, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return summary


def build_dataset(src: str | os.PathLike, out: str | os.PathLike, spec: ClipSpec | None = None, *,
                  val_fraction: float = 0.1, split_by: str = "file", overwrite: bool = False,
                  progress: bool = True, runner: str | None = None, workers: int | None = None,
                  beam_options: str | None = None, shards: int | None = None) -> dict:
  """`kineto data build`: every video file under `src` -> clips at `out` (see module doc)."""
  beam_flags(runner, workers, beam_options)  # bad runner flags fail before any listing
  spec = spec or ClipSpec()
  src = pathlib.Path(src)
  if not src.is_dir():
    raise DataError(f"--src {src} is not a directory; point it at a folder of video files.")
  if split_by not in SPLIT_BY:
    raise DataError(f"split_by={split_by!r} is not one of {SPLIT_BY}.")
  if not 0 <= val_fraction < 1:
    raise DataError(f"val_fraction={val_fraction!r} must be in [0, 1).")
  _check_out(pathlib.Path(out).absolute(), overwrite)
  paths = find_videos(src)
  if not paths:
    raise DataError(f"no video files under {src} (looked for "
                    f"{' '.join(sorted(VIDEO_EXTENSIONS))}).")
  mapping = read_captions(src)
  refused, usable = [], []
  for path in paths:  # files refused by their header do not take a validation slot
    name = path.relative_to(src).as_posix()
    reason = _probe(path, spec)
    if reason:
      refused.append({"file": name, "reason": reason})
    else:
      usable.append((path, name))
  if not usable:
    raise DataError(f"none of the {len(paths)} video files under {src} can give a clip: "
                    f"{refused[:5]}")
  if split_by == "file":
    held_out = _held_out([name for _, name in usable], val_fraction, spec.seed)
    split_of = lambda name: "validation" if name in held_out else "train"  # noqa: E731
    how = "whole files: " + (", ".join(sorted(held_out)) or "none")
  else:
    split_of = lambda name: "time"  # noqa: E731
    how = f"time ranges: the last {val_fraction:g} of each file's frames"
  sources = [file_source(path, name, caption_for(path, name, mapping), split_of(name),
                         spec.audio_rate) for path, name in usable]
  return write_dataset(sources, spec, out, val_fraction=val_fraction, overwrite=overwrite,
                       progress=progress, skipped=refused, runner=runner, workers=workers,
                       beam_options=beam_options, shards=shards, notes={
                           "src": str(src.absolute()), "split_by": split_by, "held_out": how,
                           "captioned": sum(1 for s in sources if s.caption)})
