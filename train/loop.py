"""The one training loop every trainer runs (LM, video tokenizer, audio codec).

A trainer (`train/lm_trainer.py`, `train/tokenizer_trainer.py`, `train/audio_trainer.py`)
builds its mesh, data, state and compiled step, then hands them to `run_loop`, which owns
what every run shares: the progress bar, timing (the first step after a start is warm-up
and is not timed), the non-finite step guard, checkpoints (every step is offered to the
manager, which keeps its own cadence; forced on SIGTERM, `--stop_after` and at the end),
and the call to the trainer's TensorBoard logger. The held-out evaluation and the summary
come after the loop and stay in the trainer. Also here: the per-process batch rows and
global batch assembly for multi-host runs, and opening the TensorBoard writer.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

import configs
import sharding


def process_rows(batch_sharding: jax.sharding.Sharding, global_shape: tuple[int, ...]) -> slice:
  """The contiguous rows of a global batch that this process's devices hold."""
  starts_stops = {(i[0].start or 0, global_shape[0] if i[0].stop is None else i[0].stop)
                  for i in batch_sharding.addressable_devices_indices_map(global_shape).values()}
  lo, hi = min(s for s, _ in starts_stops), max(e for _, e in starts_stops)
  if sum(e - s for s, e in starts_stops) != hi - lo:
    raise sharding.MeshError(f"this process's devices hold non-contiguous batch rows {sorted(starts_stops)}; "
                             "order the mesh so each host's devices are adjacent on the data axes.")
  return slice(lo, hi)


def global_batch(host_batch: dict, shardings: dict, global_rows: int) -> dict:
  """This process's rows of the batch -> global arrays sharded over the data axes."""
  return {key: jax.make_array_from_process_local_data(shardings[key], local,
                                                      (global_rows,) + local.shape[1:])
          for key, local in host_batch.items()}


def open_writer(workdir: pathlib.Path, cfg, start_step: int):
  """TensorBoard writer of `workdir/tb` with the config as text, on process 0; None elsewhere."""
  if jax.process_index() != 0:
    return None
  from tensorboardX import SummaryWriter  # noqa: PLC0415 (only the chief writes events)
  writer = SummaryWriter(str(workdir / "tb"))
  writer.add_text("config", json.dumps(configs.to_dict(cfg), indent=1), start_step)
  return writer


class PreemptionFlag:
  """Set by SIGTERM (a scheduler's preemption notice): the loop saves and stops cleanly."""

  def __init__(self):
    self.is_set = False
    self._previous = None
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    self.is_set = True

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


@dataclasses.dataclass
class Timing:
  """Wall time of the timed steps, per-step work (tokens, FLOPs, ...) summed over them, and
  the count of skipped (non-finite) steps."""
  steps: int = 0
  seconds: float = 0.0
  work: dict = dataclasses.field(default_factory=dict)
  skipped: int = 0

  def rate(self, key: str) -> float | None:
    """Work `key` per second over the timed steps (None before the first timed step)."""
    return self.work[key] / self.seconds if self.steps else None

  @property
  def step_seconds(self) -> float | None:
    return self.seconds / self.steps if self.steps else None


@dataclasses.dataclass
class LoopResult:
  state: Any
  step: int             # the step of the last checkpoint: `steps` when the run finished
  metrics: dict         # the last finite step's metrics as numpy ({} when no step ran)
  timing: Timing


def run_loop(state, step_fn: Callable[[Any, int], tuple[Any, dict, dict]], *, name: str,
             ckpt, start_step: int, steps: int, max_skipped: int, nonfinite_hint: str,
             log: Callable[[dict, int, Timing], None], postfix: Callable[[dict, Timing], dict],
             saved: Callable[[Any], Any] = lambda state: state,
             every_step: Callable[[Any, int], None] | None = None,
             progress: bool = True, stop_after: int | None = None) -> LoopResult:
  """Runs steps `start_step .. steps - 1` and returns the final state, saved to `ckpt`.

  step_fn(state, step) -> (state, metrics, work): metrics are device arrays (a "finite"
  entry, when present, says whether the step changed the state; otherwise the loss is
  checked), work holds per-step counts to sum over timed steps (e.g. tokens, FLOPs).
  log(metrics, step, timing) writes TensorBoard scalars with the trainer's tags (called on
  the chief only); postfix(metrics, timing) gives the progress bar's fields; saved(state)
  is the tree a checkpoint holds; every_step(state, step) runs after each finite step on
  every process (e.g. reconstruction images: the weights are sharded across them).
  """
  is_chief = jax.process_index() == 0
  timing, metrics = _resumed_progress(ckpt, start_step)
  preempted = PreemptionFlag()
  bar = tqdm(range(start_step, steps), desc=f"train {name}", initial=start_step, total=steps,
             disable=not (progress and is_chief), dynamic_ncols=True)
  step = start_step
  try:
    for step in bar:
      t0 = time.perf_counter()
      state, out, work = step_fn(state, step)
      out = {k: np.asarray(v) for k, v in jax.device_get(out).items()}  # blocks: the step is timed whole
      if step > start_step:  # the first step's time includes one-off warm-up
        timing.steps += 1
        timing.seconds += time.perf_counter() - t0
        for key, value in work.items():
          timing.work[key] = timing.work.get(key, 0) + value
      finite = bool(out["finite"]) if "finite" in out else bool(np.isfinite(out["loss"]))
      if not finite:
        timing.skipped += 1
        if timing.skipped > max_skipped:
          ckpt.wait()
          raise FloatingPointError(
              f"{name}: {timing.skipped} steps had a non-finite loss or gradient (last: step {step}, loss "
              f"{float(out['loss'])}); train.max_skipped_steps={max_skipped}. {nonfinite_hint} "
              f"The last good checkpoint is in {ckpt.directory}.")
        continue
      metrics = out
      stopping = preempted.is_set or (stop_after is not None and step + 1 - start_step >= stop_after)
      ckpt.save(step + 1, saved(state), force=stopping, progress=_progress(timing, metrics))
      if stopping and step + 1 < steps:
        break
      bar.set_postfix(**postfix(metrics, timing))
      if is_chief:
        log(metrics, step, timing)
      if every_step is not None:
        every_step(state, step)
    done = _final_checkpoint(ckpt, saved(state), step, start_step, steps, preempted, stop_after,
                             _progress(timing, metrics))
  except BaseException:
    # Async saves still in flight finish (or fail) now, before the error reaches the CLI, rather
    # than during the interpreter's teardown.
    _close_quietly(ckpt)
    raise
  return LoopResult(state=state, step=done, metrics=metrics, timing=timing)


def _close_quietly(ckpt) -> None:
  try:
    ckpt.close()
  except Exception:  # the error being raised already says what went wrong
    pass


def _progress(timing: Timing, metrics: dict) -> dict:
  """The running figures a checkpoint carries, so a resumed run reports the whole run's."""
  return {"timing": dataclasses.asdict(timing),
          "metrics": {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}}


def _resumed_progress(ckpt, start_step: int) -> tuple[Timing, dict]:
  """(timing, last metrics) carried by the checkpoint this run resumed from; fresh when none
  (a new run, or a checkpoint written before they were recorded)."""
  meta = getattr(ckpt, "restored_meta", None) or {}
  saved = meta.get("progress") if start_step and meta.get("data_step") == start_step else None
  if not saved:
    return Timing(), {}
  return Timing(**saved["timing"]), {k: np.asarray(v) for k, v in saved["metrics"].items()}


def _final_checkpoint(ckpt, saved_state, last_step: int, start_step: int, total_steps: int,
                      preempted: PreemptionFlag, stop_after: int | None, progress: dict) -> int:
  """Saves the state after the loop (unless that step is already saved), waits for every
  async save and closes the manager; returns the step saved. A run that stopped early
  (SIGTERM or --stop_after) says how to resume."""
  preempted.restore()
  done = last_step + 1 if total_steps > start_step else start_step
  if ckpt.latest_step() != done:
    ckpt.save(done, saved_state, force=True, progress=progress)
  ckpt.wait()
  ckpt.close()
  if done < total_steps:
    why = "SIGTERM" if preempted.is_set else f"stopped after {stop_after} steps"
    print(f"kineto: {why}: saved step {done} to {ckpt.directory}; run the same command to resume.")
  return done
