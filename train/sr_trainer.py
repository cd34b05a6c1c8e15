"""The SR stage's trainer: mesh -> paired token shards -> sharded state -> jitted step -> the
one loop (train/loop.py) -> held-out loss and summary.

  kineto sr train --config configs/sr_demo.py --workdir DIR --set data.tokens_dir=TOKENS

Writes into `workdir`, as every trainer does: checkpoints (`checkpoints/`, every
`train.checkpoint_every` steps, at the end and on SIGTERM; the same command resumes with the
same batches), TensorBoard events (`tb/`: loss, masked-token accuracy, gradient norm, learning
rate; held-out loss at the end) and `summary.json`. The checkpoint's config records
`objective: masked`, which is what lets the MaskGIT sampler run on it.
"""
from __future__ import annotations

import pathlib

import jax
import numpy as np
from flax import nnx

import configs
import sharding
from configs.schema import ConfigError, SrConfig
from lm.superres import SuperResolution
from train import sr_step
from train.checkpoint import Checkpointer
from train.files import write_json
from train.loop import global_batch, open_writer, process_rows, run_loop
from train.optimizer import schedule
from train.sr_data import SrData
from train.state import abstract_of, restore, trained_model


def train_sr(cfg: SrConfig, workdir, *, progress: bool = True, stop_after: int | None = None) -> dict:
  """Trains `cfg` and returns the summary (also workdir/summary.json); resumable."""
  workdir = pathlib.Path(workdir)
  tc = cfg.train

  # --- data, checked before anything compiles --------------------------------------------
  data = SrData(cfg)
  workdir.mkdir(parents=True, exist_ok=True)

  # --- mesh, model and optimizer; resume from the last checkpoint ------------------------
  mesh = sharding.make_mesh(cfg.mesh.shape)
  sr_step.check_fits_mesh(cfg, mesh)
  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  start_step = ckpt.latest_step() or 0
  if start_step:
    _, ts = restore(ckpt, sr_step.abstract_state(cfg, mesh, seed=tc.seed), start_step)
  else:
    ts = sr_step.init_state(cfg, mesh, seed=tc.seed)
  train_step = sr_step.make_sr_step(cfg, mesh, ts)
  shardings = sr_step.batch_shardings(cfg, mesh)
  rows = process_rows(shardings["high"], (tc.batch_size, cfg.sr.frames * cfg.sr.height * cfg.sr.width))
  params = sum(x.size for x in jax.tree.leaves(nnx.state(ts.merge()[0], nnx.Param)))
  if jax.process_index() == 0:
    print(f"kineto: {cfg.name}: SR {params / 1e6:.2f}M params on mesh {dict(mesh.shape)}; starting at step "
          f"{start_step}.\nkineto: data: {data.describe}.")
  writer = open_writer(workdir, cfg, start_step)
  lr = schedule(tc)

  # --- loop ------------------------------------------------------------------------------
  def host_rows(batch: dict) -> dict:
    return {k: v[rows] for k, v in batch.items()}

  def step_fn(state, step):
    batch = global_batch(host_rows(data.batch(step)), shardings, tc.batch_size)
    state, metrics = train_step(state, batch)
    return state, metrics, {"clips": tc.batch_size}

  def postfix(metrics, timing):
    return {"loss": f"{float(metrics['loss']):.3f}", "acc": f"{float(metrics['accuracy']):.3f}"}

  def log(metrics, step, timing):
    if step % tc.log_every == 0 or step == tc.steps - 1:
      for key in ("loss", "accuracy", "grad_norm"):
        writer.add_scalar(f"train/{key}", float(metrics[key]), step)
      writer.add_scalar("train/learning_rate", float(lr(step)), step)
      writer.add_scalar("train/skipped_steps", timing.skipped, step)

  result = run_loop(ts.state, step_fn, name=cfg.name, ckpt=ckpt, start_step=start_step, steps=tc.steps,
                    max_skipped=tc.max_skipped_steps, log=log, postfix=postfix, progress=progress,
                    stop_after=stop_after,
                    nonfinite_hint=f"Lower train.learning_rate (now {tc.learning_rate}).")
  if result.step < tc.steps:
    return {"config": cfg.name, "step": result.step, "stopped_early": True}

  # --- held-out loss and summary -----------------------------------------------------------
  ts.state = result.state
  model, _ = trained_model(ts)
  eval_fn = nnx.jit(lambda model, batch: sr_step.sr_loss(model, batch)[1])
  held = []
  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    for b in data.eval_batches():
      held.append(jax.device_get(eval_fn(model, global_batch(host_rows(b), shardings, tc.batch_size))))
  summary = {
      "config": cfg.name, "objective": "masked", "step": tc.steps, "resumed_from": start_step,
      "skipped_steps": result.timing.skipped, "params": int(params),
      "loss": float(result.metrics["loss"]) if result.metrics else None,
      "eval_loss": float(np.mean([h["loss"] for h in held])) if held else None,
      "eval_accuracy": float(np.mean([h["accuracy"] for h in held])) if held else None,
      "step_seconds": result.timing.step_seconds, "pairs": data.describe,
  }
  if writer:
    if held:
      writer.add_scalar("eval/loss", summary["eval_loss"], tc.steps)
      writer.add_scalar("eval/accuracy", summary["eval_accuracy"], tc.steps)
    writer.close()
    write_json(workdir / "summary.json", summary)
  return summary


def load_sr(workdir, mesh=None) -> tuple[SrConfig, SuperResolution]:
  """(config, model with EMA weights when kept) from an SR work directory's latest checkpoint.

  Refuses a directory that holds another kind of checkpoint (e.g. an LM's), naming it."""
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  saved = Checkpointer.read_config(ckpt_dir)
  if "sr" not in saved:
    raise ConfigError(f"{workdir} is not an SR stage work directory (its checkpoint holds a "
                      f"{saved.get('name', 'different')!r} model, not one trained with the masked "
                      "objective); train one with `kineto sr train`.")
  cfg = configs.from_dict(SrConfig, saved)
  mesh = mesh or sharding.make_mesh((1, 1, 1), jax.local_devices()[:1])
  ckpt = Checkpointer(ckpt_dir, cfg)
  abstract = abstract_of(lambda: sr_step.build(cfg, cfg.train.seed), mesh, cfg.mesh.rules)
  _, ts = restore(ckpt, abstract)
  ckpt.close()
  model, _ = trained_model(ts)
  return cfg, model
