"""Checkpoints of the train state: orbax `CheckpointManager`, async, resharding restore.

Each checkpoint holds the whole sharded (model, optimizer) state - parameters, AdamW
moments and the step count - plus JSON metadata: the config, the code version, the data
position and the vocabulary's id ranges. Every process writes its own shards. Restore goes onto the *current* mesh
from abstract targets, so a run saved on (2, 2, 2) resumes on (1, 4, 2) or one device.
A checkpoint whose model or vocabulary config differs from the run's is refused, naming
the fields.

orbax writes each step into a temporary directory and renames it when complete, so a
kill during an async save leaves the previous checkpoint intact. Once a save is complete its
files get a SHA-256 list (`STEP/kineto_checksum.json`). Restore verifies it, and a checkpoint
that fails it, fails to restore or holds non-finite values is set aside (renamed
`STEP.bad-WHY`, never deleted, invisible to orbax) with a warning naming it and the earlier
checkpoint used instead. A state that is not finite is never saved, so keep-last-N pruning
can never drop the last good checkpoint in favour of a NaN one. The metadata also carries
the loop's running figures (`progress`) so a resumed run reports the whole run's.
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import hashlib
import json
import pathlib
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

import configs
from configs.schema import Config, ConfigError
from lm.vocab import Vocabulary

policies = ocp.checkpoint_managers
# Config sections that fix the meaning of a checkpoint's arrays (the rest may change on resume).
_MODEL_SECTIONS = ("lm", "vocab", "vidtok", "codec", "sr")
# Fields of those sections that choose how the same math is computed, not what is computed:
# a run may switch them on resume (e.g. lm.attention_impl=cpu for a checkpoint made on a pod).
_HOW_NOT_WHAT = {"lm": ("attention_impl", "matmul_impl", "attention_block", "remat_policy",
                        "scan_unroll", "loss_chunk")}
CHECKSUM_FILE = "kineto_checksum.json"


def _is_checkpoint_file(path: pathlib.Path) -> bool:
  """Not the checksum list, nor a temporary one that a writer killed while sealing left behind
  (the next write removes it: counted, it would fail a good checkpoint's check)."""
  from train.files import temporary_prefix  # noqa: PLC0415 (as in _seal)
  return path.is_file() and path.name != CHECKSUM_FILE and not path.name.startswith(temporary_prefix(CHECKSUM_FILE))


def checksums(step_dir: pathlib.Path) -> dict[str, str]:
  """SHA-256 of every file of a finished checkpoint, by path relative to it."""
  out = {}
  for path in sorted(p for p in step_dir.rglob("*") if _is_checkpoint_file(p)):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
      for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
    out[str(path.relative_to(step_dir))] = digest.hexdigest()
  return out


def checksum_mismatch(step_dir: pathlib.Path) -> str | None:
  """What differs from the checkpoint's recorded checksums (None: it matches, or none were
  recorded yet: a kill between orbax's rename and ours; the restore and finiteness checks
  still guard it)."""
  recorded = step_dir / CHECKSUM_FILE
  if not recorded.is_file():
    return None
  try:
    want = json.loads(recorded.read_text())
  except ValueError:
    return f"its {CHECKSUM_FILE} is unreadable"
  have = checksums(step_dir)
  bad = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
  return f"{len(bad)} file(s) differ from their checksum, e.g. {bad[0]}" if bad else None


def all_finite(tree) -> bool:
  """Whether every floating-point array of `tree` is finite. One jitted program for the whole
  tree: many small eager collectives in flight at once can starve each other on CPU devices."""
  leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  return bool(_all_finite(leaves)) if leaves else True


@jax.jit
def _all_finite(leaves):
  return jnp.all(jnp.stack([jnp.isfinite(x).all() for x in leaves]))


@functools.cache  # asked once per process, not at every save
def code_version() -> str:
  """The package version and, in a git checkout, the commit."""
  from importlib import metadata
  try:
    version = metadata.version("kineto")
  except metadata.PackageNotFoundError:
    version = "unknown"
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=pathlib.Path(__file__).parent, timeout=5).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    commit = ""
  return f"{version}+{commit}" if commit else version


def incompatible_fields(saved: dict, current: dict, prefix: str = "lm", defaults: dict | None = None) -> list[str]:
  """Model fields whose values differ between a saved config dict and the current one.

  A field the checkpoint does not name was added to the schema after it was written: the
  model it holds behaves as that field's default (`defaults`, the section's default values),
  so it matches a run that keeps the default (e.g. `vidtok.quantizer`, added with "lfq").
  """
  defaults = defaults or {}
  out = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if key not in saved and key in defaults and b == defaults[key]:
      continue
    if isinstance(a, dict) and isinstance(b, dict):
      nested = defaults.get(key) if isinstance(defaults.get(key), dict) else None
      out += incompatible_fields(a, b, f"{prefix}.{key}", nested)
    elif a != b:
      out.append(f"{prefix}.{key}: checkpoint {a!r} vs run {b!r}")
  return out


def _defaults(section) -> dict:
  """A config section's default values as saved (through JSON), or {} when it has required fields."""
  try:
    return json.loads(json.dumps(dataclasses.asdict(type(section)())))
  except TypeError:
    return {}


def bytes_to_write(state: Any) -> int:
  """Bytes this process writes to save `state`: each array's own shards once (replica 0)."""
  total = 0
  for x in jax.tree.leaves(state):
    if isinstance(x, jax.Array):
      if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
      total += sum(s.data.nbytes for s in x.addressable_shards if s.replica_id == 0)
    else:
      total += getattr(x, "nbytes", 0)
  return total


def _size(n: int) -> str:
  return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def check_space(directory: pathlib.Path, step: int, state: Any, previous: pathlib.Path | None = None) -> None:
  """Refuses a save that cannot fit before it starts (OSError ENOSPC, which the CLI turns into
  one line). A save that fails half-way is still safe (orbax writes into a temporary folder),
  but its background writers then report the failure from threads after their event loop
  closed, as tracebacks around the one line; checking first keeps a full disk to one line.
  The need is the previous checkpoint's size on disk (orbax compresses; the same state saves
  to about the same size), else the state's raw bytes."""
  where = directory
  while not where.exists() and where != where.parent:
    where = where.parent
  need = bytes_to_write(state)
  if previous is not None and previous.is_dir():
    need = min(need, sum(f.stat().st_size for f in previous.rglob("*") if f.is_file()))
  free = shutil.disk_usage(where).free
  short = need > free
  if jax.process_count() > 1:  # every process stops, or none: one that went on would wait forever
    from jax.experimental import multihost_utils
    short = bool(multihost_utils.process_allgather(jnp.int32(short)).max())
  if short:
    raise OSError(errno.ENOSPC, "No space left on device",
                  f"{directory} (step {step} needs {_size(need)} here, {_size(free)} are free"
                  f"{'' if need > free else ' here; another host is short'})")


class Checkpointer:
  """Saves and restores the train state under `directory` for one config (LM or tokenizer)."""

  def __init__(self, directory: str | pathlib.Path, cfg: Config, data_fingerprint: dict | None = None):
    """`data_fingerprint`: what wrote the training data (LM token shards); saved with every
    checkpoint, and a resume on data with another is refused."""
    tc = cfg.train  # any train config with checkpoint_every, keep_last and keep_every
    self.cfg = cfg
    self.data_fingerprint = data_fingerprint
    self.directory = pathlib.Path(directory).absolute()
    if self.directory.exists() and not self.directory.is_dir():
      raise ConfigError(f"checkpoint path {self.directory} exists and is not a directory.")
    keep = [policies.LatestN(tc.keep_last)]
    if tc.keep_every:
      keep.append(policies.EveryNSteps(tc.keep_every))
    save = [policies.PreemptionCheckpointingPolicy()]
    if tc.checkpoint_every:
      save.append(policies.FixedIntervalPolicy(tc.checkpoint_every))
    options = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=True,
        save_decision_policy=policies.AnySavePolicy(save),
        preservation_policy=policies.AnyPreservationPolicy(keep))
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.restored_meta: dict = {}  # the metadata of the checkpoint `restore` returned
    self._sealer: threading.Thread | None = None  # hashes the last save once it is written (save)
    self._sealer_error: BaseException | None = None

  @staticmethod
  def read_config(directory: str | pathlib.Path) -> dict:
    """The config dict saved with the latest checkpoint in `directory` (to rebuild the model)."""
    directory = pathlib.Path(directory)
    manager = ocp.CheckpointManager(directory.absolute())
    step = manager.latest_step()
    if step is None:
      manager.close()
      raise ConfigError(f"no checkpoint found in {directory}; train one first or check the path.")
    try:
      meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
      return meta["config"]
    except Exception as e:  # truncated or foreign metadata: say which checkpoint and what to do
      raise ConfigError(f"checkpoint {directory.absolute()}/{step} has unreadable metadata ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]}); move that step folder away to use the one before "
                        "it, or retrain.") from None
    finally:
      manager.close()

  def latest_step(self) -> int | None:
    self._join()
    return self.manager.latest_step()

  def save(self, step: int, state: Any, *, force: bool = False, progress: dict | None = None,
           extra: dict | None = None) -> bool:
    """Starts an async save of `state` at `step` (if the policy or `force` says so); a state
    that is not finite is refused with a warning. `progress` (the loop's running figures)
    and `extra` (e.g. the data's fingerprint) go into the metadata."""
    if not (force or self.manager.should_save(step)):
      return False
    if not all_finite(state):
      print(f"kineto: warning: not saving step {step} to {self.directory}: the state holds non-finite "
            "values; the last good checkpoint stays the newest.", file=sys.stderr)
      return False
    self.seal()  # the previous save is complete: record its checksums before the next starts
    latest = self.manager.latest_step()
    check_space(self.directory, step, state, None if latest is None else self.directory / str(latest))
    meta = {"config": configs.to_dict(self.cfg), "code_version": code_version(), "data_step": step,
            "progress": progress, "data_fingerprint": self.data_fingerprint, **(extra or {})}
    if hasattr(self.cfg, "vocab"):
      meta["vocab"] = Vocabulary(self.cfg.vocab).ranges()
    saved = self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    # Hashing a big checkpoint takes minutes (150 GB at 8B): a thread waits for orbax's write and
    # hashes it while training goes on. The manager is touched by one thread at a time: every
    # method here joins the thread first, so no save (and no pruning) overlaps the hashing.
    self._sealer = threading.Thread(target=self._seal_in_background, name="kineto-checksums", daemon=True)
    self._sealer.start()
    return saved

  def _seal_in_background(self) -> None:
    try:
      self._seal()
    except BaseException as e:  # noqa: BLE001 - raised in the main thread by the next _join
      self._sealer_error = e

  def _join(self) -> None:
    """Waits for the checksum thread; re-raises what it raised (e.g. a failed async write)."""
    sealer, self._sealer = self._sealer, None
    if sealer is not None:
      sealer.join()
    error, self._sealer_error = self._sealer_error, None
    if error is not None:
      raise error

  def seal(self) -> None:
    """Waits for any async save, then writes the checksums of complete checkpoints lacking them."""
    self._join()
    self._seal()

  def _seal(self) -> None:
    from train.files import write_json  # noqa: PLC0415 (train.files is tiny; kept local for clarity)
    self.manager.wait_until_finished()
    if jax.process_index() != 0:
      return
    for step in self.manager.all_steps():
      step_dir = self.directory / str(step)
      if step_dir.is_dir() and not (step_dir / CHECKSUM_FILE).exists():
        write_json(step_dir / CHECKSUM_FILE, checksums(step_dir))

  def set_aside(self, step: int, why: str) -> pathlib.Path:
    """Renames a bad checkpoint out of orbax's sight (never deletes it); returns its new path."""
    self._join()
    bad = self.directory / f"{step}.bad-{why}-{int(time.time())}"
    if jax.process_index() == 0:
      (self.directory / str(step)).rename(bad)
    self.manager.reload()
    return bad

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict]:
    """Restores (step, state sharded like `abstract_state`, metadata) of the newest good
    checkpoint at or before `step` (default: the latest); checks the config. A checkpoint
    that fails its checksum, fails to restore or is not finite is set aside with a warning."""
    self._join()
    step = self.latest_step() if step is None else step
    if step is None:
      raise ConfigError(f"no checkpoint found in {self.directory}.")
    set_aside = []
    for candidate in sorted((s for s in self.manager.all_steps() if s <= step), reverse=True):
      why, detail = self._check_and_restore(candidate, abstract_state)
      if why is None:
        if set_aside:
          print(f"kineto: warning: {'; '.join(set_aside)}; resuming from {self.directory}/{candidate} "
                "instead.", file=sys.stderr)
        self.seal()  # a checkpoint that passed but had no checksums yet gets them now
        self.restored_meta = detail[1]
        return candidate, detail[0], detail[1]
      bad = self.set_aside(candidate, why)
      set_aside.append(f"checkpoint {self.directory}/{candidate} {detail}; set aside as {bad.name}")
    raise ConfigError(f"no good checkpoint left in {self.directory}: {'; '.join(set_aside)}. Use a new "
                      "--workdir to start fresh.")

  def _check_and_restore(self, step: int, abstract_state: Any):
    """(None, (state, meta)) for a good checkpoint, else (short reason, what went wrong)."""
    mismatch = checksum_mismatch(self.directory / str(step))
    if mismatch:
      return "checksum", f"fails its checksum ({mismatch})"
    try:
      meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # a torn or foreign metadata file
      return "unreadable", f"cannot be read (its metadata: {type(e).__name__})"
    # The model's shape and the meaning of its ids must match; training settings may change.
    diffs = []
    for section in _MODEL_SECTIONS:
      if not hasattr(self.cfg, section):
        continue
      # Through JSON, as saved: tuples become lists on both sides.
      current = json.loads(json.dumps(dataclasses.asdict(getattr(self.cfg, section))))
      saved = dict(meta["config"].get(section, {}))
      for key in _HOW_NOT_WHAT.get(section, ()):
        saved.pop(key, None)
        current.pop(key, None)
      diffs += incompatible_fields(saved, current, section, _defaults(getattr(self.cfg, section)))
    saved_data, data = meta.get("data_fingerprint"), self.data_fingerprint
    if saved_data and data is not None and saved_data != data:
      differ = [f"{k}: checkpoint {saved_data.get(k)} vs now {data.get(k)}"
                for k in sorted(set(saved_data) | set(data)) if saved_data.get(k) != data.get(k)]
      raise ConfigError(f"checkpoint {self.directory}/{step} was trained on token shards written by "
                        f"another model ({'; '.join(differ)}); resume on the shards it was trained on, or "
                        "use a new --workdir.")
    if diffs:
      raise ConfigError(f"checkpoint {self.directory}/{step} was written by a different model "
                        f"config; differing fields: {'; '.join(diffs)}. Use a new --workdir or the "
                        "saved config.")
    try:
      state = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state)))["state"]
    except Exception as e:  # a truncated or missing array file
      return "unreadable", f"cannot be read ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    if not all_finite(state):
      return "nonfinite", "holds non-finite values"
    return None, (state, meta)

  def wait(self) -> None:
    self.seal()

  def close(self) -> None:
    try:
      self._join()
    finally:
      self.manager.close()
