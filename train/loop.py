"""Pieces every training loop shares: per-process batch rows, global batch assembly,
the SIGTERM (preemption) flag and the final checkpoint."""
from __future__ import annotations

import signal
import threading

import jax

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


def final_checkpoint(ckpt, state, last_step: int, start_step: int, total_steps: int,
                     preempted: PreemptionFlag, stop_after: int | None) -> int:
  """Saves the state after the loop (unless that step is already saved), waits for every
  async save and closes the manager; returns the step saved. A run that stopped early
  (SIGTERM or --stop_after) says how to resume."""
  preempted.restore()
  done = last_step + 1 if total_steps > start_step else start_step
  if ckpt.latest_step() != done:
    ckpt.save(done, state, force=True)
  ckpt.wait()
  ckpt.close()
  if done < total_steps:
    why = "SIGTERM" if preempted.is_set else f"stopped after {stop_after} steps"
    print(f"kineto: {why}: saved step {done} to {ckpt.directory}; run the same command to resume.")
  return done
