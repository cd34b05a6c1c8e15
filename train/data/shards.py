"""Token shards: the on-disk format `kineto tokenize` writes and the LM reads (the writer is
`train/data/tokenize.py`).

  shards = open_token_shards("tokens/demo", expected_fingerprint=fp, split="train")  # random access
  example = to_example(shards[0])          # {"video": codes [t, h, w], "text": pieces,
                                           #  "audio": codes [levels, frames]} for lm/tasks.py

A token shard directory holds

  {split}-{chunk:05d}-of-{chunks:05d}.arrayrecord   one record per clip, clips
        [chunk * shard_size, (chunk + 1) * shard_size) of the split, in dataset order
  manifest.json    the tokenizer's fingerprint, the vocabulary layout, the dataset and its
                   counts, and the completed shards
  summary.json     examples per split, tokens, seconds, examples/s

A record (msgpack, numpy arrays as an ext type; `decode_record`) holds `index` (the clip's
position in its split), `video` int32 codes [t, h, w], `caption` (str), `text` int32
SentencePiece pieces (only with --text_model), `text_emb` float16 [n, E]: a frozen text
encoder's embeddings of the caption (only with --text_encoder; n <= the manifest's
`text_encoder.budget`, longer captions truncated and flagged `text_truncated`), `has_audio` and `audio`: the float32
waveform as stored (empty when the clip has no sound), `audio_codes` int32 RVQ codes
[levels, frames] of that waveform (only with --audio_codec, and only for clips with
sound), and `source`, `start` (seconds). Codes carry no vocabulary offset
(`Vocabulary.video_ids` / `audio_ids` add it).

A model that writes codes (the video tokenizer, the audio codec) is named by its
`fingerprint`: a hash of its config and weights, recorded in the manifest and checked by
every reader that decodes the codes.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import re
from collections.abc import Sequence

import msgpack
import numpy as np
from flax import nnx

import configs
from train.data.build import DataError

FORMAT = "kineto-token-shards"
VERSION = 1
SUFFIX = "arrayrecord"
_ARRAY_EXT = 1  # msgpack ext type of a numpy array
SHARD_PATTERN = re.compile(r"^(?P<split>[\w.]+)-(?P<chunk>\d{5})-of-(?P<chunks>\d{5})\." + SUFFIX + "$")


class TokenShardError(DataError):
  """Token shards that do not fit the request (another tokenizer, dataset, an unfinished
  run, ...); the message names both sides and the fix."""


# --- records -------------------------------------------------------------------------------

def _pack_default(value):
  if isinstance(value, np.ndarray):
    array = np.ascontiguousarray(value)
    return msgpack.ExtType(_ARRAY_EXT, msgpack.packb([array.dtype.str, list(array.shape), array.tobytes()]))
  if isinstance(value, np.generic):
    return value.item()
  raise TypeError(f"cannot serialize {type(value).__name__} in a token record.")


def _unpack_ext(code: int, data: bytes):
  if code != _ARRAY_EXT:
    return msgpack.ExtType(code, data)
  dtype, shape, raw = msgpack.unpackb(data)
  return np.frombuffer(raw, np.dtype(dtype)).reshape(shape)


def encode_record(record: dict) -> bytes:
  """A dict of numpy arrays, str, bytes, numbers -> compact, deterministic bytes."""
  return msgpack.packb(record, default=_pack_default, use_bin_type=True)


def decode_record(data: bytes) -> dict:
  """Inverse of `encode_record` (arrays come back read-only, without a copy)."""
  return msgpack.unpackb(data, ext_hook=_unpack_ext, raw=False)


def to_example(record: dict, text: str = "pieces") -> dict:
  """A token record -> the example dict of `lm/tasks.py` (`video` codes, `text` pieces, or with
  text="embeddings" the caption's encoder embeddings float32 [n, E], `audio` RVQ codes [levels, frames]).

  Records without audio codes (tokenized without --audio_codec, or a clip without sound)
  give no `audio`: tasks that need it are not drawn for that example.
  """
  example = {"video": np.asarray(record["video"])}
  if text == "embeddings":
    if "text_emb" in record:
      example["text"] = np.asarray(record["text_emb"], np.float32)
  elif "text" in record:
    example["text"] = np.asarray(record["text"])
  if "audio_codes" in record:
    example["audio"] = np.asarray(record["audio_codes"])
  return example



# --- the tokenizer's identity ------------------------------------------------------------

def _sha256_json(data) -> str:
  return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def fingerprint(config: dict, arrays: dict[str, np.ndarray]) -> dict:
  """{"fingerprint", "config_sha256", "weights_sha256"} of a model that writes codes: its
  config and every named array (by name in sorted order, with dtype and shape)."""
  config_sha = _sha256_json(config)
  weights = hashlib.sha256()
  for name in sorted(arrays):
    array = np.ascontiguousarray(arrays[name])
    weights.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
    weights.update(array.tobytes())
  weights_sha = weights.hexdigest()
  return {"fingerprint": hashlib.sha256(f"{config_sha}:{weights_sha}".encode()).hexdigest()[:16],
          "config_sha256": config_sha, "weights_sha256": weights_sha}


def tokenizer_fingerprint(vidtok_cfg, model) -> dict:
  """`fingerprint` of a video tokenizer.

  The config hash covers the architecture (`VidtokConfig`); the weights hash every
  parameter (encoder and decoder: the LM's tokens are decoded by the same decoder). Training
  settings do not enter: they do not change what a code means.
  """
  flat: dict[str, np.ndarray] = {}

  def walk(prefix: str, tree) -> None:
    if isinstance(tree, dict):
      for key in tree:
        walk(f"{prefix}/{key}", tree[key])
    else:
      flat[prefix] = np.asarray(tree)

  walk("", nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  config = {k: v for k, v in configs.to_dict(vidtok_cfg).items()
            if not (k in _LATER_FIELDS and _json_value(v) == _LATER_FIELDS[k])}
  return fingerprint(config, flat)


# VidtokConfig fields added after token shards were first written, with the value every
# earlier tokenizer had: while a config keeps that value the field stays out of the hash, so
# the fingerprints recorded in existing shards (and the LMs trained on them) stay valid.
_LATER_FIELDS = {"quantizer": "lfq", "fsq_levels": []}


def _json_value(v):
  return list(v) if isinstance(v, tuple) else v



def shard_name(split: str, chunk: int, chunks: int) -> str:
  return f"{split}-{chunk:05d}-of-{chunks:05d}.{SUFFIX}"


# --- reading ------------------------------------------------------------------------------------

def read_manifest(out_dir: str | os.PathLike) -> dict:
  path = pathlib.Path(out_dir) / "manifest.json"
  if not path.is_file():
    raise TokenShardError(f"{out_dir} holds no token shards (no manifest.json); write them with "
                          f"`kineto tokenize --tokenizer WORKDIR --data DIR --out {out_dir}`.")
  manifest = json.loads(path.read_text())
  if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
    raise TokenShardError(f"{path} is not a version-{VERSION} {FORMAT} manifest "
                          f"({manifest.get('format')!r}, version {manifest.get('version')!r}); "
                          "re-tokenize into a new --out.")
  return manifest



class TokenShards:
  """One split of token shards as a random-access source: `len`, `[i]` -> record dict
  (see the module docstring), `__getitems__` for grain's batched reads. Picklable, so
  grain's worker processes can read it."""

  def __init__(self, out_dir: str | os.PathLike, split: str, manifest: dict):
    from array_record.python.array_record_data_source import ArrayRecordDataSource
    self.out_dir, self.split, self.manifest = pathlib.Path(out_dir), split, manifest
    chunks = manifest["splits"][split]["shards"]
    names = [shard_name(split, c, chunks) for c in range(chunks)]
    # Shards whose clips all failed to read hold no records; the data source wants none of those.
    paths = [str(self.out_dir / n) for n in names if manifest["shards"][n]["records"]]
    self._source = ArrayRecordDataSource(paths) if paths else None

  @property
  def fingerprint(self) -> str:
    return self.manifest["tokenizer"]["fingerprint"]

  def __len__(self) -> int:
    return 0 if self._source is None else len(self._source)

  def __getitem__(self, index: int) -> dict:
    if self._source is None:
      raise IndexError(f"token shards of split {self.split!r} in {self.out_dir} are empty.")
    return decode_record(self._source[index])

  def __getitems__(self, indices: Sequence[int]) -> list[dict]:
    return [decode_record(r) for r in self._source.__getitems__(indices)]

  def check_vocab(self, vocab_cfg) -> None:
    """Raises TokenShardError when these tokens do not fit an LM vocabulary config."""
    bits = self.manifest["tokenizer"]["bits"]
    if vocab_cfg.video_bits != bits:
      raise TokenShardError(f"{self.out_dir} holds {bits}-bit video codes but vocab.video_bits="
                            f"{vocab_cfg.video_bits}; set --set vocab.video_bits={bits} or re-tokenize.")
    codec = self.manifest.get("audio_codec")
    if codec and (vocab_cfg.audio_levels, vocab_cfg.audio_codebook) != (codec["levels"], codec["codebook"]):
      raise TokenShardError(
          f"{self.out_dir} holds audio codes of {codec['levels']} levels x {codec['codebook']} codes but "
          f"vocab.audio_levels={vocab_cfg.audio_levels}, vocab.audio_codebook={vocab_cfg.audio_codebook}; "
          f"set --set vocab.audio_levels={codec['levels']} --set vocab.audio_codebook={codec['codebook']}.")
    text = self.manifest.get("text_model")
    if text and text["pieces"] > vocab_cfg.text:
      raise TokenShardError(f"{self.out_dir} holds text pieces of a {text['pieces']}-piece model but "
                            f"vocab.text={vocab_cfg.text}; raise vocab.text to >= {text['pieces']}.")

  def check_text_encoder(self, encoder: str, dim: int) -> None:
    """Raises TokenShardError unless these shards hold caption embeddings of `encoder` (width `dim`);
    "pieces" needs none. Shards of another encoder are refused, never mixed."""
    found = self.manifest.get("text_encoder")
    if encoder == "pieces":
      return
    if not found:
      raise TokenShardError(f"{self.out_dir} holds no caption embeddings but text.encoder={encoder!r}; "
                            f"re-tokenize with `kineto tokenize ... --text_encoder {encoder}` into a new --out.")
    if found["name"] != encoder or found["dim"] != dim:
      raise TokenShardError(f"{self.out_dir} holds caption embeddings of text encoder {found['fingerprint']} "
                            f"(width {found['dim']}), not {encoder!r} (width {dim}); re-tokenize with "
                            f"`--text_encoder {encoder}` into a new --out, or set text.encoder={found['name']!r}.")

  def __repr__(self) -> str:
    return (f"TokenShards({str(self.out_dir)!r}, split={self.split!r}, {len(self)} records, "
            f"tokenizer {self.fingerprint})")


def open_token_shards(out_dir: str | os.PathLike, expected_fingerprint: str | None = None, *,
                      split: str = "train") -> TokenShards:
  """The token shards of `split` in `out_dir` (written by `kineto tokenize`), for random access.

  expected_fingerprint: the fingerprint of the tokenizer the caller decodes with
  (`tokenizer_fingerprint(cfg.vidtok, model)["fingerprint"]`); shards written by another
  tokenizer are an error, not a silent mismatch.
  """
  out_dir = pathlib.Path(out_dir)
  manifest = read_manifest(out_dir)
  found = manifest["tokenizer"]["fingerprint"]
  if expected_fingerprint is not None and found != expected_fingerprint:
    raise TokenShardError(
        f"{out_dir} was tokenized by tokenizer {found} ({manifest['tokenizer']['workdir']}), not the "
        f"expected {expected_fingerprint}; re-tokenize with `kineto tokenize --tokenizer WORKDIR "
        f"--data {manifest['dataset']['path']} --out NEW_DIR` using the tokenizer you decode with, "
        "or point to the shards that tokenizer wrote.")
  if split not in manifest["splits"]:
    raise TokenShardError(f"{out_dir} has no token shards of split {split!r}; it has "
                          f"{sorted(manifest['splits'])}.")
  chunks = manifest["splits"][split]["shards"]
  names = [shard_name(split, c, chunks) for c in range(chunks)]
  missing = [n for n in names if n not in manifest["shards"] or not (out_dir / n).is_file()]
  if missing:
    raise TokenShardError(f"the {split} token shards in {out_dir} are unfinished: {len(missing)} of "
                          f"{chunks} missing (e.g. {missing[0]}); run the same `kineto tokenize` "
                          "command again to finish them.")
  return TokenShards(out_dir, split, manifest)
