"""Pre-tokenization: a clip dataset -> token shards the LM trains on (`kineto tokenize`).

  kineto tokenize --tokenizer WORKDIR --data DIR --out DIR [--split train,validation]
                  [--batch N] [--shard_size N] [--text_model SPM.model] [--audio_codec WORKDIR]
                  [--lowres S] [--text_encoder minilm|t5 [--text_encoder_path DIR] [--text_budget N]]

Data comes from a dataset built by `kineto data build` / `kineto data demo` and a video
tokenizer work directory (`kineto tokenizer train`; its latest checkpoint, EMA weights). It
goes to `--out` in the format of `train/data/shards.py` (which also reads it): one
ArrayRecord file per chunk of `shard_size` clips of a split, `manifest.json` and
`summary.json`.

With --audio_codec (a `kineto audio train` work directory) the clip's audio is resampled
to the codec's rate if the dataset's differs, and encoded one clip at a time (so the codes
do not depend on the batch); the codec's frames per clip must equal the LM's
`ClipSpec.audio_frames` for the dataset's clip length and fps (e.g. 17 frames at 8 fps =
2.125 s -> 106 frames at 50 Hz), or the run stops before encoding anything. The manifest
records the codec (`audio_codec`: workdir, fingerprint, levels, codebook, rates) and the
vocabulary's `audio_levels` / `audio_codebook` follow it.

With --lowres S each clip is also encoded downsampled S times in height and width (the mean
of each S x S pixel block), by the same tokenizer (it is fully convolutional), into
`video_lowres`: the (low-res, high-res) code pairs the super-resolution stage trains on
(`kineto sr train`). The manifest records the factor and the low-res latent grid.

Sharded over whatever runs: chunk c of a split belongs to process c % process_count, and
each process encodes its clips in batches split over its local devices' batch axis with
one compiled encode (the last batch padded). The shards are a function of (dataset,
tokenizer, audio codec, text model, shard_size) alone - not of the process count, devices or batch size.

Resumable: a shard is written under a temporary name and renamed when complete, so a
finished name means a finished shard; a killed run, run again with the same command,
discards partial shards and encodes only the missing ones, and ends with the same bytes an
uninterrupted run writes. An --out written by another tokenizer, audio codec, dataset, text
model or shard size is refused. Clips that fail to read are skipped and counted, never fatal.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils
from tqdm import tqdm

import sharding
from configs.schema import DEFAULT_RULES, ClipSpec, VocabConfig
from lm.text import TextTokenizer
from lm.vocab import Vocabulary
from train.audio_trainer import load_audio_codec
from train.data import pipeline
from train.data.build import DataError
from train.data.shards import (
  FORMAT,
  SHARD_PATTERN,
  SUFFIX,
  VERSION,
  TokenShardError,
  encode_record,
  read_manifest,
  shard_name,
  tokenizer_fingerprint,
)
from train.files import write_json
from train.tokenizer_trainer import load_tokenizer
from vidtok.audio import prepare
from vidtok.model import check_video
from vidtok.pixels import to_float

# One record per ArrayRecord group: grain and the LM read single records at random.
WRITER_OPTIONS = "group_size:1"


def _file_sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the plan: chunks of a split and who encodes them ---------------------------------------

def num_chunks(examples: int, shard_size: int) -> int:
  return -(-examples // shard_size)


def process_chunks(chunks: int, process_index: int, process_count: int) -> list[int]:
  """The chunks one process encodes: c with c % process_count == process_index.

  Round-robin: the shares are disjoint, their union is every chunk, and they differ in
  size by at most one chunk.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} must be in [0, process_count={process_count}).")
  return list(range(process_index, chunks, process_count))


def chunk_indices(chunk: int, examples: int, shard_size: int) -> range:
  return range(chunk * shard_size, min((chunk + 1) * shard_size, examples))


# --- the manifest: what must agree for a re-run to continue an --out ---------------------------

# What must agree for a re-run to continue an --out: (manifest key, what it is, the flag to change).
_IDENTITY = (("tokenizer", "fingerprint", "tokenizer fingerprint", "--tokenizer"),
             ("audio_codec", "fingerprint", "audio codec", "--audio_codec"),
             ("dataset", "fingerprint", "dataset", "--data"),
             ("text_model", "sha256", "text model", "--text_model"),
             ("text_encoder", "fingerprint", "text encoder", "--text_encoder"),
             ("shard_size", None, "shard size", "--shard_size"))


def _check_resumable(saved: dict, header: dict, out_dir: pathlib.Path) -> None:
  for section, key, what, flag in _IDENTITY:
    a, b = saved.get(section), header.get(section)
    if key is not None:
      a, b = (a or {}).get(key), (b or {}).get(key)
    if a != b:
      old = saved.get(section, {}) if key else {}
      new = header.get(section, {}) if key else {}
      where = (f" ({old.get('path') or old.get('workdir')} vs {new.get('path') or new.get('workdir')})"
               if isinstance(old, dict) and isinstance(new, dict) and old and new else "")
      raise TokenShardError(
          f"{out_dir} holds token shards of another {what}: {a!r} there, {b!r} now{where}. Write to a "
          f"new --out, or delete {out_dir} to re-tokenize, or rerun with the {flag} it was written with.")


def _scan_shards(out_dir: pathlib.Path, known: dict, plan: dict) -> dict:
  """Completed shards in `out_dir` (known ones are not reopened): name -> entry."""
  from array_record.python.array_record_module import ArrayRecordReader
  found = dict(known)
  for path in sorted(out_dir.glob(f"*.{SUFFIX}")):
    m = SHARD_PATTERN.match(path.name)
    if not m or path.name in found or m["split"] not in plan:
      continue
    split, chunk = m["split"], int(m["chunk"])
    reader = ArrayRecordReader(str(path))
    records = reader.num_records()
    reader.close()
    expected = len(chunk_indices(chunk, plan[split]["examples"], plan[split]["shard_size"]))
    found[path.name] = {"split": split, "chunk": chunk, "records": records,
                        "skipped": expected - records, "bytes": path.stat().st_size}
  return dict(sorted(found.items()))


# --- tokenizing ------------------------------------------------------------------------------

@dataclasses.dataclass
class _Chunk:
  """The records of one shard being filled, in index order."""
  split: str
  chunk: int
  indices: range
  records: list = dataclasses.field(default_factory=list)
  done: int = 0  # indices handled (encoded or skipped)


def tokenize_dataset(tokenizer: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
                     splits: Sequence[str] | None = None, batch: int = 16, shard_size: int = 1024,
                     text_model: str | os.PathLike | None = None,
                     audio_codec: str | os.PathLike | None = None, lowres: int = 0,
                     progress: bool = True, text_encoder: str | None = None,
                     text_encoder_path: str | os.PathLike | None = None, text_budget: int = 16) -> dict:
  """Encodes `splits` (default: all) of dataset `data` with the tokenizer in workdir
  `tokenizer` into token shards in `out`; returns the summary (also out/summary.json).

  batch: clips per encode call in each process, rounded up to a multiple of its devices.
  shard_size: clips per shard file. text_model: a SentencePiece model for the captions.
  audio_codec: an audio codec work directory; clips with sound also get RVQ codes.
  lowres: also encode each clip downsampled by this factor (`video_lowres`, for SR pairs).
  text_encoder: "minilm" or "t5" (T5's local directory in text_encoder_path): each caption's
  embeddings, at most `text_budget` encoder tokens (longer ones keep their first budget - 1 and the
  end token; counted in the summary as `captions_truncated`).
  """
  # --- arguments and inputs, checked before any compile ------------------------------------
  started = time.perf_counter()
  out, data = pathlib.Path(out), pathlib.Path(data)
  if not isinstance(batch, int) or batch < 1:
    raise DataError(f"--batch {batch!r} must be a positive integer.")
  if not isinstance(shard_size, int) or shard_size < 1:
    raise DataError(f"--shard_size {shard_size!r} must be a positive integer.")
  if not isinstance(lowres, int) or lowres < 0 or lowres == 1:
    raise DataError(f"--lowres {lowres!r} must be an integer >= 2 (a downsampling factor), or 0 for none.")
  if out.exists() and not out.is_dir():
    raise TokenShardError(f"--out {out} exists and is not a directory; choose another --out.")
  if splits is not None and not splits:
    raise DataError("--split names no split; give e.g. --split train,validation, or leave it out for all.")
  pipeline.open_split(data, "train" if splits is None else splits[0])  # a missing dataset fails here, clearly
  info = json.loads((data / "dataset_info.json").read_text())
  available = [s["name"] for s in info["splits"]]
  splits = list(available if splits is None else splits)
  unknown = [s for s in splits if s not in available]
  if unknown or not splits:
    raise TokenShardError(f"--split {','.join(splits)}: {data} has splits {available}; name some of those.")
  sources = {s: pipeline.open_split(data, s) for s in splits}
  if text_encoder is not None and (text_encoder not in ("minilm", "t5") or text_budget < 2):
    raise DataError(f"--text_encoder {text_encoder!r} --text_budget {text_budget}: choose minilm or t5 and a "
                    "budget >= 2 encoder tokens.")
  text = TextTokenizer(text_model) if text_model else None
  embedder = _CaptionEmbedder(text_encoder, text_encoder_path, text_budget) if text_encoder else None
  cfg, model = load_tokenizer(tokenizer)
  vidtok_cfg = cfg.vidtok
  ident = tokenizer_fingerprint(vidtok_cfg, model)

  first = sources[splits[0]][0]["video"]
  frames, height, width = first.shape[:3]
  try:
    check_video(np.zeros((1, frames, height, width, 3), np.float32), vidtok_cfg)
  except ValueError as e:
    raise TokenShardError(f"{data} holds clips this tokenizer cannot encode: {e}") from e
  latent_thw = vidtok_cfg.latent_shape(frames, height, width)
  low_hw = (height // lowres, width // lowres) if lowres else None
  if lowres:
    try:
      if height % lowres or width % lowres:
        raise ValueError(f"{height}x{width} is not divisible by {lowres}")
      check_video(np.zeros((1, frames, *low_hw, 3), np.float32), vidtok_cfg)
    except ValueError as e:
      raise TokenShardError(f"--lowres {lowres}: the downsampled clips cannot be encoded ({e}); pick a "
                            "factor that divides the clip size and leaves a size the tokenizer takes.") from e

  dataset_summary = data / "summary.json"  # the builder's clip spec (fps, audio rate), when there
  dataset_spec = json.loads(dataset_summary.read_text()).get("spec") if dataset_summary.is_file() else None
  codec, audio_header = (_audio_codec(audio_codec, dataset_spec, data, frames)
                         if audio_codec is not None else (None, None))
  audio_vocab = ({"audio_levels": codec.levels, "audio_codebook": codec.codebook_size} if codec else {})
  vocab_cfg = VocabConfig(video_bits=vidtok_cfg.bits,
                          text=max(VocabConfig.text, text.vocab_size if text else 0), **audio_vocab)
  header = {
      "format": FORMAT, "version": VERSION,
      "tokenizer": {"workdir": str(pathlib.Path(tokenizer).absolute()), **ident,
                    "bits": vidtok_cfg.bits, "config": _jsonable(vidtok_cfg)},
      "audio_codec": audio_header,
      "vocab": {"config": _jsonable(vocab_cfg), "ranges": Vocabulary(vocab_cfg).ranges()},
      "text_model": ({"path": str(pathlib.Path(text_model).absolute()), "pieces": text.vocab_size,
                      "sha256": _file_sha256(pathlib.Path(text_model))} if text else None),
      "text_encoder": embedder.header if embedder else None,
      "dataset": {"path": str(data.absolute()), "fingerprint": _file_sha256(data / "dataset_info.json"),
                  "spec": dataset_spec},
      "shard_size": shard_size,
      "clip": {"frames": int(frames), "height": int(height), "width": int(width),
               "latents": list(latent_thw)},
  }
  if lowres:  # only when asked, so manifests written without it still resume
    header["lowres"] = {"factor": lowres, "height": low_hw[0], "width": low_hw[1],
                        "latents": list(vidtok_cfg.latent_shape(frames, *low_hw))}

  # --- the output directory: fresh, or the same run to continue -----------------------------
  p, n_proc, is_chief = jax.process_index(), jax.process_count(), jax.process_index() == 0
  manifest_path = out / "manifest.json"
  if manifest_path.is_file():
    saved = read_manifest(out)
    _check_resumable(saved, header, out)
  else:
    saved = {}
    if out.is_dir() and any(f for f in out.iterdir() if not f.name.startswith(".manifest.json.tmp")):
      raise TokenShardError(f"--out {out} is not empty and holds no manifest.json; choose a new or "
                            "empty --out.")
  plan = dict(saved.get("splits", {}))
  for s in splits:
    plan[s] = {"examples": len(sources[s]), "shard_size": shard_size,
               "shards": num_chunks(len(sources[s]), shard_size)}
  manifest = {**header, "splits": plan, "shards": saved.get("shards", {}), "complete": False}
  _barrier("kineto tokenize: manifest checked", n_proc)  # every process saw the old manifest
  if is_chief:
    out.mkdir(parents=True, exist_ok=True)
    write_json(manifest_path, manifest)
  _barrier("kineto tokenize: manifest written", n_proc)


  # --- this process's chunks, and those a previous run already finished ------------------------
  stats = dict.fromkeys(("encoded", "skipped", "text_pieces", "audio_clips", "shards_written",
                         "shards_resumed", "captions_embedded", "captions_truncated"), 0)
  todo: dict[str, list[_Chunk]] = {}
  for split in splits:
    todo[split] = []
    for c in process_chunks(plan[split]["shards"], p, n_proc):
      name = shard_name(split, c, plan[split]["shards"])
      for partial in out.glob(f".{name}.tmp-*"):  # a killed run's unfinished shard: redo it
        partial.unlink()
      if (out / name).is_file():
        stats["shards_resumed"] += 1
      else:
        todo[split].append(_Chunk(split, c, chunk_indices(c, len(sources[split]), shard_size)))

  # --- mesh and the one compiled encode ------------------------------------------------------
  mesh = sharding.make_mesh((-1, 1, 1), jax.local_devices())  # encoding needs no other host
  n_dev = mesh.devices.size
  batch = -(-batch // n_dev) * n_dev
  if is_chief:
    print(f"kineto: tokenizing {', '.join(f'{s} ({len(sources[s])} clips)' for s in splits)} of {data} "
          f"with tokenizer {ident['fingerprint']} ({frames}x{height}x{width} -> "
          f"{'x'.join(map(str, latent_thw))} codes of {vidtok_cfg.bits} bits) into {out}: shards of "
          f"{shard_size}, {n_proc} process(es) x {n_dev} device(s), batch {batch} per process; "
          f"{stats['shards_resumed']} shards already done.")
  encoder = None
  if any(todo.values()):
    encoder = _Encoder(model, mesh, (batch, frames, height, width, 3))
    if lowres:
      encoder = _PairEncoder(encoder, _Encoder(model, mesh, (batch, frames, *low_hw, 3)), lowres)
  if embedder is not None:  # the text encoder's batch splits over the same devices
    embedder.encoder.place(mesh, DEFAULT_RULES)
  audio_enc = _AudioEncoder(codec, audio_header, dataset_spec["audio_rate"]) if codec else None

  # --- encode and write ----------------------------------------------------------------------
  t0 = time.perf_counter()
  for split in splits:
    mine = sum(len(chunk_indices(c, len(sources[split]), shard_size))
               for c in process_chunks(plan[split]["shards"], p, n_proc))
    bar = tqdm(total=mine, initial=mine - sum(len(c.indices) for c in todo[split]), unit="clip",
               desc=f"tokenize {split}" + (f" [process {p}]" if n_proc > 1 else ""),
               disable=not progress, dynamic_ncols=True)
    for chunk in _encoded_chunks(todo[split], sources[split], encoder, text, stats, bar, audio_enc, embedder):
      _write_shard(out / shard_name(split, chunk.chunk, plan[split]["shards"]), chunk.records)
      stats["shards_written"] += 1
      if is_chief:  # the manifest follows the shards as they land
        manifest["shards"] = _scan_shards(out, manifest["shards"], plan)
        write_json(manifest_path, manifest)
    bar.close()
  seconds = time.perf_counter() - t0

  # --- the final manifest and summary, once every process is done ---------------------------
  per_process = _per_process(stats, n_proc)
  run = {k: sum(s[k] for s in per_process) for k in stats}
  run_seconds = _max_over_processes(seconds, n_proc)
  _barrier("kineto tokenize: shards written", n_proc)
  manifest["shards"] = _scan_shards(out, manifest["shards"], plan)
  expected = {shard_name(s, c, plan[s]["shards"]) for s in plan for c in range(plan[s]["shards"])}
  missing = sorted(expected - set(manifest["shards"]))
  manifest["complete"] = not missing
  tokens_per_clip = int(np.prod(latent_thw))
  per_split = {}
  for split in plan:
    entries = [e for e in manifest["shards"].values() if e["split"] == split]
    records = sum(e["records"] for e in entries)
    per_split[split] = {"examples": records, "skipped": sum(e["skipped"] for e in entries),
                        "shards": len(entries), "video_tokens": records * tokens_per_clip}
  summary = {
      "out": str(out.absolute()), "fingerprint": ident["fingerprint"], "complete": manifest["complete"],
      "splits": per_split, "video_tokens": sum(v["video_tokens"] for v in per_split.values()),
      "audio_codec": audio_header and audio_header["fingerprint"],
      "processes": n_proc, "devices_per_process": n_dev, "batch_per_process": batch,
      "this_run": {**run, "video_tokens": run["encoded"] * tokens_per_clip,
                   "audio_tokens": run["audio_clips"] * (audio_header["tokens_per_clip"] if codec else 0),
                   "encoded_per_process": [s["encoded"] for s in per_process],
                   "seconds": round(run_seconds, 3),  # encoding and writing; total_seconds adds
                   "total_seconds": round(time.perf_counter() - started, 3),  # loading and compiling
                   "examples_per_second": round(run["encoded"] / run_seconds, 2) if run["encoded"] else None},
  }
  if is_chief:
    write_json(manifest_path, manifest)
    write_json(out / "summary.json", summary)
    if missing:  # e.g. shards deleted while a run was going
      print(f"kineto: {len(missing)} shards missing (e.g. {missing[0]}); run the same command again.")
  return summary


def _jsonable(cfg) -> dict:
  return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _barrier(name: str, process_count: int) -> None:
  if process_count > 1:
    multihost_utils.sync_global_devices(name)


def _per_process(stats: dict, process_count: int) -> list[dict]:
  """Every process's `stats` (the same list on every process)."""
  if process_count == 1:
    return [dict(stats)]
  keys = sorted(stats)
  gathered = np.asarray(multihost_utils.process_allgather(np.array([stats[k] for k in keys], np.int64)))
  return [{k: int(v) for k, v in zip(keys, row)} for row in gathered.reshape(process_count, -1)]


def _max_over_processes(value: float, process_count: int) -> float:
  if process_count == 1:
    return value
  return float(np.max(multihost_utils.process_allgather(np.array([value], np.float64))))


def _audio_codec(workdir, dataset_spec: dict | None, data: pathlib.Path, frames: int):
  """The codec of --audio_codec and its manifest entry; the codec's frames per clip must be
  the LM's `ClipSpec.audio_frames` for this dataset's clips."""
  if not dataset_spec or "audio_rate" not in dataset_spec or "fps" not in dataset_spec:
    raise TokenShardError(f"--audio_codec needs the dataset's clip spec (fps, audio_rate) from "
                          f"{data}/summary.json, which is missing; rebuild the dataset with "
                          "`kineto data build` / `kineto data demo`.")
  codec = load_audio_codec(workdir)
  fps, rate = float(dataset_spec["fps"]), int(dataset_spec["audio_rate"])
  samples = round(frames * rate / fps)                   # the builder's audio per clip
  codec_samples = -(-samples * codec.sample_rate // rate)  # after resampling (resample_poly's length)
  codec_frames = codec_samples // codec.cfg.hop
  spec_frames = ClipSpec(frames=frames, fps=fps, audio_hz=codec.frame_rate).audio_frames
  if codec_frames != spec_frames or codec_frames < 1:
    raise TokenShardError(
        f"--audio_codec {workdir}: a {frames}-frame clip at {fps:g} fps ({frames / fps:g} s) gives "
        f"{codec_frames} codec frames ({codec_samples} samples at {codec.sample_rate} Hz, hop "
        f"{codec.cfg.hop}) but the LM's clip layout expects {spec_frames} frames at "
        f"{codec.frame_rate:g} Hz; use a codec whose hop divides the clip's samples (e.g. 17 frames "
        "at 8 fps with a 320-sample hop at 16 kHz) or rebuild the dataset with another --frames/--fps.")
  header = {"workdir": str(codec.workdir), **codec.fingerprint(), "step": codec.step,
            "levels": codec.levels, "codebook": codec.codebook_size, "sample_rate": codec.sample_rate,
            "frame_rate": codec.frame_rate, "frames_per_clip": codec_frames,
            "tokens_per_clip": codec_frames * codec.levels, "config": _jsonable(codec.cfg)}
  return codec, header


class _AudioEncoder:
  """One clip's waveform (at the dataset's rate) -> int32 codes [levels, frames]."""

  def __init__(self, codec, header: dict, rate: int):
    self.codec, self.rate, self.frames = codec, int(rate), header["frames_per_clip"]

  def __call__(self, wave_s: np.ndarray) -> np.ndarray:
    wave_s = prepare(wave_s, self.rate, self.codec.sample_rate, resample=True)
    # One clip per call: the codes cannot depend on which clips share a batch.
    codes_lf = self.codec.encode(wave_s[None])[0]
    if codes_lf.shape[1] != self.frames:
      raise TokenShardError(f"a clip's audio of {len(wave_s)} samples gave {codes_lf.shape[1]} codec "
                            f"frames, not {self.frames}; the dataset's clips differ in length.")
    return np.ascontiguousarray(codes_lf, np.int32)


class _Encoder:
  """The tokenizer's encode, compiled once for uint8 batches [B, T, H, W, 3] split over the
  batch axis of a local mesh, with the weights replicated on every device."""

  def __init__(self, model, mesh, shape: tuple[int, ...]):
    graphdef, state = nnx.split(model)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self.video_sharding = sharding.batch_sharding(mesh, 5, DEFAULT_RULES)
    self.state = jax.device_put(state, replicated)
    self.shape = shape

    def encode(state, video_u8):
      return nnx.merge(graphdef, state).encode(to_float(video_u8))

    # Ahead of time: a batch of another shape is an error, never a silent recompile.
    self.compiled = jax.jit(
        encode, in_shardings=(replicated, self.video_sharding),
        out_shardings=sharding.batch_sharding(mesh, 4, DEFAULT_RULES)).lower(
            self.state, jax.ShapeDtypeStruct(shape, jnp.uint8, sharding=self.video_sharding)).compile()

  def __call__(self, video_u8: np.ndarray):
    """Starts encoding a full batch (asynchronously); returns the device array of codes."""
    return self.compiled(self.state, jax.device_put(video_u8, self.video_sharding))


def downsample(video_u8: np.ndarray, factor: int) -> np.ndarray:
  """uint8 [..., H, W, C] -> [..., H / factor, W / factor, C]: the mean of each pixel block."""
  *lead, h, w, c = video_u8.shape
  blocks = video_u8.reshape(*lead, h // factor, factor, w // factor, factor, c).astype(np.float32)
  return np.round(blocks.mean(axis=(-4, -2))).astype(np.uint8)


class _PairEncoder:
  """Encodes a batch at full size and downsampled: (codes, low-res codes)."""

  def __init__(self, full: _Encoder, low: _Encoder, factor: int):
    self.full, self.low, self.factor, self.shape = full, low, factor, full.shape

  def __call__(self, video_u8: np.ndarray):
    return self.full(video_u8), self.low(downsample(video_u8, self.factor))


def _read(source, index: int, clip_shape: tuple[int, ...]) -> tuple[dict | None, str]:
  try:
    record = source[index]
  except Exception as e:  # a corrupt record is skipped and counted, never fatal
    return None, f"{type(e).__name__}: {e}"
  if tuple(record["video"].shape) != clip_shape:
    return None, f"video of shape {tuple(record['video'].shape)}, expected {clip_shape}"
  return record, ""


class _CaptionEmbedder:
  """A frozen text encoder over the captions of a batch, truncating each to the budget (counted)."""

  def __init__(self, name: str, path, budget: int):
    from lm.load_encoder import load_text_encoder
    self.encoder, self.budget = load_text_encoder(name, path), budget
    self.header = {"name": name, "fingerprint": self.encoder.fingerprint, "dim": self.encoder.dim,
                   "budget": budget, "path": str(pathlib.Path(path).absolute()) if path else None}

  def __call__(self, captions: list[str]) -> list[tuple[np.ndarray, bool]]:
    lengths = [len(ids) for ids in self.encoder.token_ids(captions)]
    emb_bse, mask_bs = self.encoder.encode(captions, max_len=self.budget)
    return [(emb_bse[i, :mask_bs[i].sum()].astype(np.float16), lengths[i] > self.budget)
            for i in range(len(captions))]


def _caption(record: dict) -> str:
  return record["caption"].decode() if isinstance(record["caption"], bytes) else str(record["caption"])


def _token_record(index: int, record: dict, codes_thw: np.ndarray, text, audio_enc=None,
                  low_thw: np.ndarray | None = None) -> dict:
  caption = _caption(record)
  source = record["source"].decode() if isinstance(record["source"], bytes) else str(record["source"])
  has_audio = bool(record["has_audio"])
  out = {"index": int(index), "video": np.asarray(codes_thw, np.int32), "caption": caption,
         "has_audio": has_audio,
         "audio": np.asarray(record["audio"], np.float32) if has_audio else np.zeros(0, np.float32),
         "source": source, "start": float(record["start"])}
  if text is not None:
    out["text"] = np.asarray(text.encode(caption), np.int32)
  if low_thw is not None:
    out["video_lowres"] = np.asarray(low_thw, np.int32)
  if audio_enc is not None and has_audio:
    out["audio_codes"] = audio_enc(out["audio"])
  return out


def _encoded_chunks(todo: list[_Chunk], source, encoder: _Encoder, text, stats: dict,
                    bar, audio_enc=None, embedder=None) -> Iterator[_Chunk]:
  """Encodes the clips of `todo` in order, `encoder.shape[0]` at a time; yields each chunk
  as soon as all its clips are done. While the devices encode one batch, the host reads the
  next one and writes out the previous results."""
  if not todo:
    return
  batch, clip_shape = encoder.shape[0], encoder.shape[1:]
  items = [(chunk, i) for chunk in todo for i in chunk.indices]
  pending = None
  for start in range(0, len(items), batch):
    group = items[start:start + batch]
    good, video = [], np.zeros(encoder.shape, np.uint8)  # padding rows stay black and are dropped
    for chunk, i in group:
      record, why = _read(source, i, clip_shape)
      if record is None:
        stats["skipped"] += 1
        print(f"kineto: skipping clip {i} of {chunk.split} ({why}); {stats['skipped']} skipped so far.")
        continue
      video[len(good)] = record["video"]
      good.append((chunk, i, record))
    codes = encoder(video) if good else None
    if pending is not None:
      yield from _finish(*pending, text, stats, bar, audio_enc, embedder)
    pending = (group, good, codes)
  if pending is not None:
    yield from _finish(*pending, text, stats, bar, audio_enc, embedder)


def _finish(group, good, codes, text, stats: dict, bar, audio_enc=None, embedder=None) -> Iterator[_Chunk]:
  codes, low = codes if isinstance(codes, tuple) else (codes, None)
  codes_bthw = np.asarray(codes)[:len(good)] if good else []
  low_bthw = np.asarray(low)[:len(good)] if good and low is not None else [None] * len(good)
  embedded = embedder([_caption(r) for _, _, r in good]) if embedder and good else [None] * len(good)
  for (chunk, i, record), codes_thw, low_thw, emb in zip(good, codes_bthw, low_bthw, embedded):
    token_record = _token_record(i, record, codes_thw, text, audio_enc, low_thw)
    if emb is not None:
      token_record["text_emb"], token_record["text_truncated"] = emb
      stats["captions_embedded"] += 1
      stats["captions_truncated"] += emb[1]
    stats["text_pieces"] += len(token_record.get("text", ()))
    stats["audio_clips"] += "audio_codes" in token_record
    chunk.records.append(encode_record(token_record))
  stats["encoded"] += len(good)
  finished = []
  for chunk, _ in group:
    chunk.done += 1
    if chunk.done == len(chunk.indices):
      finished.append(chunk)
  bar.update(len(group))
  yield from finished


def _write_shard(path: pathlib.Path, records: list[bytes]) -> None:
  """Writes a shard under a temporary name and renames it when complete and on disk."""
  from array_record.python.array_record_module import ArrayRecordWriter
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
  for record in records:
    writer.write(record)
  writer.close()
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, path)
