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
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
import tqdm

from configs.schema import ClipSpec
from train.data.decode import EPS, Resizer, at_fps, crop_clip, decode_audio, decode_video

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
        "caption": source.caption,
        "source": source.name,
        "start": np.float32(t - t_first),
    }


# --- files ------------------------------------------------------------------------------

def file_source(path: pathlib.Path, name: str, caption: str, split: str, rate: int) -> Source:
  def open_() -> Stream:
    audio, audio_start = decode_audio(path, rate)
    return Stream(frames=decode_video(path), audio=audio, audio_start=audio_start)
  return Source(name=name, caption=caption, split=split, open=open_)


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
               progress: bool = True, **kwargs):
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
    self.bar = tqdm.tqdm(total=total, desc="sources", unit="src", disable=not self._progress)
    return {split: self._generate_examples(split) for split in self.splits}

  def _generate_examples(self, split: str):
    count = 0
    for source in self.sources:
      if source.split not in (split, "time"):
        continue
      n = 0
      try:
        for key, example in source_examples(source, split, self.spec, self.val_fraction):
          yield key, example
          n += 1
          self.with_audio[split] += bool(example["has_audio"])
          by_caption = self.captions[split]
          by_caption[source.caption] = by_caption.get(source.caption, 0) + 1
      except Exception as e:  # a corrupt file is reported, never fatal to the build
        self.errors.setdefault(source.name, f"{type(e).__name__}: {e}")
      self.clips[source.name][split] = n
      count += n
      self.bar.update(1)
      self.bar.set_postfix({split: count, "failed": len(self.errors)})
    if count == 0:
      raise DataError(f"the {split} split got no clips: all its sources were skipped "
                      f"({self.skipped()[:3]}); add usable files or change --val_fraction "
                      "or --split_by.")

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
                  skipped: list[dict] = (), notes: dict | None = None) -> dict:
  """Builds the TFDS/ArrayRecord dataset of `sources` at `out`; returns (and writes) the summary.

  `skipped` lists inputs refused before the build (counted in the summary with the rest);
  `notes` are extra summary fields.
  """
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
  tmp = out.parent / f".{out.name}.building-{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  t_start = time.perf_counter()
  try:
    builder = ClipDataset(sources=sources, spec=spec, val_fraction=val_fraction,
                          progress=progress, data_dir=str(tmp))
    try:
      builder.download_and_prepare()
    except Exception as e:  # TFDS re-raises errors from our generator wrapped: surface ours
      cause = e
      while cause is not None and not isinstance(cause, DataError):
        cause = cause.__cause__ or cause.__context__
      if cause is not None:
        raise DataError(str(cause)) from None
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
    (built / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _move_into_place(built, out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return summary


def build_dataset(src: str | os.PathLike, out: str | os.PathLike, spec: ClipSpec | None = None, *,
                  val_fraction: float = 0.1, split_by: str = "file", overwrite: bool = False,
                  progress: bool = True) -> dict:
  """`kineto data build`: every video file under `src` -> clips at `out` (see module doc)."""
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
                       progress=progress, skipped=refused, notes={
                           "src": str(src.absolute()), "split_by": split_by, "held_out": how,
                           "captioned": sum(1 for s in sources if s.caption)})
