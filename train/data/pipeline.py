"""grain input pipelines over a built clip dataset (`kineto data build` / `kineto data demo`).

  source = open_split("data/demo", "train")          # random access, no TensorFlow
  ds = make_dataset("data/demo", batch_size=8, seed=0, num_epochs=None)
  it = iter(ds)
  batch = next(it)        # {"video": uint8 [8, T, H, W, 3], "audio": float32 [8, S], "caption": ...}
  state = state_to_json(it.get_state())   # store with the checkpoint ...
  it.set_state(state_from_json(state))    # ... and resume exactly there

Order of the pipeline (all deterministic given the seed):
  source -> global shuffle (reshuffled each epoch) -> repeat -> this process's shard
  (records i, i + n, i + 2n, ... of the global stream) -> per-record transform ->
  [worker processes] -> drop bad records (counted) -> batches (drop remainder).
Sharding after the global shuffle means the shards of one epoch are disjoint, their union
is the whole epoch, and each process sees different records in each epoch.

Bad records (a record that fails to read or decode) are dropped and counted in the
iterator (`it.bad_records`, also in its state), with a warning; more than
`max_bad_fraction` of them is an error rather than a silent, empty run.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import flags

from train.data.build import DataError

log = logging.getLogger(__name__)


def open_split(data_dir: str | os.PathLike, split: str = "train"):
  """The random-access source (len, [i] -> dict of numpy) of one split of a built dataset."""
  path = pathlib.Path(data_dir)
  if not (path / "dataset_info.json").is_file():
    raise DataError(f"{path} is not a built dataset (no dataset_info.json there); build one with "
                    f"`kineto data build --src DIR --out {path}` or "
                    f"`kineto data demo --out {path}`.")
  builder = tfds.builder_from_directory(str(path))
  if split not in builder.info.splits:
    raise DataError(f"{path} has no split {split!r}; it has {sorted(builder.info.splits)}.")
  return builder.as_data_source(split)


@dataclasses.dataclass(frozen=True)
class BadRecord:
  """Stands in for a record that failed to read or decode; dropped (and counted) by the batcher."""
  index: int
  reason: str


class SafeSource:
  """A random-access source whose failing records come back as `BadRecord`s, not exceptions."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int):
    try:
      return self.source[index]
    except Exception as e:  # a corrupt record must not end a long run
      return BadRecord(int(index), f"{type(e).__name__}: {e}")

  def __repr__(self) -> str:
    return f"SafeSource({self.source!r})"


def _apply(transform: Callable, record):
  return record if isinstance(record, BadRecord) else transform(record)


def _stack(records: list) -> Any:
  """Stacks a list of same-structure records (dicts of arrays, bytes, scalars) along axis 0."""
  if isinstance(records[0], dict):
    return {k: _stack([r[k] for r in records]) for k in records[0]}
  return np.stack([np.asarray(r) for r in records])


class _GoodBatches(grain.IterDataset):
  """Drops `BadRecord`s (counting them) and stacks `batch_size` good records per batch."""

  def __init__(self, parent: grain.IterDataset, batch_size: int, max_bad_fraction: float):
    super().__init__(parent)
    self.batch_size, self.max_bad_fraction = batch_size, max_bad_fraction

  def __iter__(self) -> GoodBatchIterator:
    return GoodBatchIterator(self._parent.__iter__(), self.batch_size, self.max_bad_fraction)


class GoodBatchIterator(grain.DatasetIterator):
  """The pipeline's iterator: batches, plus `records` read and `bad_records` dropped so far."""

  _MIN_RECORDS_FOR_LIMIT = 100  # a few bad records early on are not yet a rate

  def __init__(self, parent: grain.DatasetIterator, batch_size: int, max_bad_fraction: float):
    super().__init__(parent)
    self.batch_size, self.max_bad_fraction = batch_size, max_bad_fraction
    self.records = 0
    self.bad_records = 0

  def __next__(self) -> dict:
    batch = []
    while len(batch) < self.batch_size:
      record = next(self._parent)  # StopIteration mid-batch drops the remainder
      self.records += 1
      if isinstance(record, BadRecord):
        self._count_bad(record)
      else:
        batch.append(record)
    return _stack(batch)

  def _count_bad(self, record: BadRecord) -> None:
    self.bad_records += 1
    if self.bad_records <= 5 or self.bad_records % 100 == 0:
      log.warning("skipped bad record %d (%d bad of %d read so far): %s", record.index,
                  self.bad_records, self.records, record.reason)
    if (self.records >= self._MIN_RECORDS_FOR_LIMIT
        and self.bad_records > self.max_bad_fraction * self.records):
      raise DataError(f"{self.bad_records} of {self.records} records could not be read (more "
                      f"than max_bad_fraction={self.max_bad_fraction}); last: {record.reason}. "
                      "Rebuild the dataset.")

  def get_state(self) -> dict:
    return {"parent": self._parent.get_state(), "records": self.records,
            "bad_records": self.bad_records}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self.records, self.bad_records = int(state["records"]), int(state["bad_records"])


def make_dataset(data: str | os.PathLike | Any, *, batch_size: int, split: str = "train",
                 seed: int = 0, shuffle: bool = True, num_epochs: int | None = 1,
                 shard_index: int | None = None, shard_count: int | None = None,
                 transform: Callable[[dict], Any] | None = None, num_workers: int = 0,
                 max_bad_fraction: float = 0.01) -> grain.IterDataset:
  """A grain dataset of numpy batches of this process's shard of `split`.

  data: a built dataset directory, or any random-access source (len and [i]).
  num_epochs: passes over the data; None repeats forever (a new shuffle each epoch).
  shard_index / shard_count: default jax.process_index() / jax.process_count().
  transform: applied to each record (in the worker processes, if any); must be picklable
    when num_workers > 0 (a module-level function or functools.partial of one).
  num_workers: 0 reads in this process; N > 0 reads and transforms in N processes.
  max_bad_fraction: more bad records than this fraction of those read is an error.
  """
  if not isinstance(batch_size, int) or batch_size < 1:
    raise DataError(f"batch_size={batch_size!r} must be a positive integer.")
  if num_epochs is not None and (not isinstance(num_epochs, int) or num_epochs < 1):
    raise DataError(f"num_epochs={num_epochs!r} must be a positive integer, or None for forever.")
  if num_workers < 0:
    raise DataError(f"num_workers={num_workers} must be >= 0.")
  if not 0 <= seed < 2**32:
    raise DataError(f"seed={seed} must be in [0, 2**32).")
  if shard_index is None or shard_count is None:
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise DataError(f"shard_index={shard_index} must be in [0, shard_count={shard_count}).")
  source = open_split(data, split) if isinstance(data, (str, os.PathLike)) else data
  if len(source) < shard_count:
    raise DataError(f"{len(source)} records cannot feed {shard_count} shards.")

  ds = grain.MapDataset.source(SafeSource(source))
  if shuffle:
    ds = ds.shuffle(seed=seed)
  if num_epochs != 1:
    ds = ds.repeat(num_epochs)  # reseeds the shuffle each epoch
  ds = ds[shard_index::shard_count]
  if transform is not None:
    ds = ds.map(functools.partial(_apply, transform))
  ids = ds.to_iter_dataset()
  if num_workers:
    _absl_flags_parsed()
    ids = ids.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return _GoodBatches(ids, batch_size, max_bad_fraction)


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside absl.app.run nobody parsed them."""
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def state_to_json(state: dict) -> str:
  """An iterator state as a JSON string (for checkpoint metadata); inverse: state_from_json."""
  text = json.dumps(state, sort_keys=True)
  if json.loads(text) != state:  # e.g. int dict keys would come back as str
    raise DataError("this iterator state does not survive JSON; save it with "
                    "grain.checkpoint.CheckpointSave instead.")
  return text


def state_from_json(text: str | bytes) -> dict:
  return json.loads(text)
