"""Checkpoints of the train state: orbax `CheckpointManager`, async, resharding restore.

Each checkpoint holds the whole sharded (model, optimizer) state - parameters, AdamW
moments and the step count - plus JSON metadata: the config, the code version, the data
position and the vocabulary's id ranges. Every process writes its own shards. Restore goes onto the *current* mesh
from abstract targets, so a run saved on (2, 2, 2) resumes on (1, 4, 2) or one device.
A checkpoint whose model or vocabulary config differs from the run's is refused, naming
the fields.

orbax writes each step into a temporary directory and renames it when complete, so a
kill during an async save leaves the previous checkpoint intact.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import subprocess
from typing import Any

import orbax.checkpoint as ocp

import configs
from configs.schema import Config, ConfigError
from lm.vocab import Vocabulary

policies = ocp.checkpoint_managers
# Config sections that fix the meaning of a checkpoint's arrays (the rest may change on resume).
_MODEL_SECTIONS = ("lm", "vocab", "vidtok", "codec", "sr")


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


def incompatible_fields(saved: dict, current: dict, prefix: str = "lm") -> list[str]:
  """Model fields whose values differ between a saved config dict and the current one."""
  out = []
  for key in sorted(set(saved) | set(current)):
    a, b = saved.get(key), current.get(key)
    if isinstance(a, dict) and isinstance(b, dict):
      out += incompatible_fields(a, b, f"{prefix}.{key}")
    elif a != b:
      out.append(f"{prefix}.{key}: checkpoint {a!r} vs run {b!r}")
  return out


class Checkpointer:
  """Saves and restores the train state under `directory` for one config (LM or tokenizer)."""

  def __init__(self, directory: str | pathlib.Path, cfg: Config):
    tc = cfg.train  # any train config with checkpoint_every, keep_last and keep_every
    self.cfg = cfg
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

  @staticmethod
  def read_config(directory: str | pathlib.Path) -> dict:
    """The config dict saved with the latest checkpoint in `directory` (to rebuild the model)."""
    directory = pathlib.Path(directory)
    manager = ocp.CheckpointManager(directory.absolute())
    step = manager.latest_step()
    if step is None:
      manager.close()
      raise ConfigError(f"no checkpoint found in {directory}; train one first or check the path.")
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    manager.close()
    return meta["config"]

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, *, force: bool = False) -> bool:
    """Starts an async save of `state` at `step` (if the policy or `force` says so)."""
    meta = {"config": configs.to_dict(self.cfg), "code_version": code_version(), "data_step": step}
    if hasattr(self.cfg, "vocab"):
      meta["vocab"] = Vocabulary(self.cfg.vocab).ranges()
    return self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=force)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[int, Any, dict]:
    """Restores (step, state sharded like `abstract_state`, metadata); checks the config."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise ConfigError(f"no checkpoint found in {self.directory}.")
    try:
      meta = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:  # a corrupt or foreign directory: say where and what
      raise ConfigError(f"checkpoint {self.directory}/{step} cannot be read ({type(e).__name__}: "
                        f"{e}); move it away to start fresh.") from e
    # The model's shape and the meaning of its ids must match; training settings may change.
    diffs = []
    for section in _MODEL_SECTIONS:
      if not hasattr(self.cfg, section):
        continue
      # Through JSON, as saved: tuples become lists on both sides.
      current = json.loads(json.dumps(dataclasses.asdict(getattr(self.cfg, section))))
      diffs += incompatible_fields(meta["config"].get(section, {}), current, section)
    if diffs:
      raise ConfigError(f"checkpoint {self.directory}/{step} was written by a different model "
                        f"config; differing fields: {'; '.join(diffs)}. Use a new --workdir or the "
                        "saved config.")
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return step, restored["state"], meta

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
