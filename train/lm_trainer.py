"""The LM training loop: mesh -> data -> sharded state -> jitted step -> loop -> summary.

Reads top to bottom like big_vision's train.py. Writes into `workdir`: checkpoints
(`checkpoints/`, every `train.checkpoint_every` steps, at the end and on SIGTERM),
TensorBoard events (`tb/`), and at the end `summary.json` with step, loss, held-out loss
(per task for the task mixture), tokens/s and MFU, and for the byte corpus `sample.txt`: a
greedy continuation of a held-out prompt decoded with the KV cache. Data comes from
`train/lm_data.py` (the byte corpus, or the task mixture over token shards) in a few fixed
sequence lengths, each compiled once ahead of time. Running the same command again resumes
from the last checkpoint, with the same data order (the batch of step s depends only on
the seed and s).
"""
from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import configs
import sharding
from configs.schema import Config, ConfigError
from lm import Transformer, next_token_loss
from lm.vocab import Vocabulary
from train import lm_data
from train.checkpoint import Checkpointer, checksum_mismatch
from train.files import write_json, write_text
from train.flops import measure_matmul_flops_per_second, train_step_flops
from train.lm_data import batch_keys
from train.loop import global_batch, open_writer, process_rows, run_loop
from train.optimizer import schedule
from train.state import (
  abstract_batch,
  abstract_state,
  batch_shardings,
  check_fits_mesh,
  init_state,
  make_train_step,
  restore,
  trained_model,
)

SAMPLE_PROMPT, SAMPLE_LENGTH = 64, 96


def train_lm(cfg: Config, workdir: str | pathlib.Path, *, progress: bool = True,
             stop_after: int | None = None) -> dict:
  """Trains `cfg` and returns the summary (also written to workdir/summary.json).

  stop_after: train at most this many steps in this call, then checkpoint and return, as a
  preemption would (for time-limited job slots); calling again resumes.
  """
  if "://" in str(workdir):
    raise ConfigError(f"workdir {workdir!r}: remote (URI) work directories are not supported yet; "
                      "use a local or mounted path (e.g. a gcsfuse or NFS mount).")
  workdir = pathlib.Path(workdir)
  is_chief = jax.process_index() == 0
  tc = cfg.train

  # --- data ---------------------------------------------------------------------------
  vocab = Vocabulary(cfg.vocab)
  data = lm_data.make(cfg, vocab)
  workdir.mkdir(parents=True, exist_ok=True)  # after the data's checks: a refused run leaves no folder

  # --- mesh, model and optimizer; resume from the last checkpoint ----------------------
  mesh = sharding.make_mesh(cfg.mesh.shape)
  ckpt = Checkpointer(workdir / "checkpoints", cfg, data_fingerprint=data.fingerprint)
  start_step = ckpt.latest_step() or 0
  if start_step:  # restore onto this run's mesh (any shape) from abstract targets
    check_fits_mesh(cfg, mesh)
    start_step, ts = restore(ckpt, abstract_state(cfg, mesh, seed=tc.seed), start_step)  # or an earlier good one
  else:
    ts = init_state(cfg, mesh, seed=tc.seed)
  step_fn = make_train_step(cfg, mesh, ts)
  shardings = batch_shardings(cfg, mesh)
  rows = process_rows(shardings["tokens"], (tc.batch_size, max(data.lengths)))  # this process's rows
  n_params = cfg.lm.param_count()

  @nnx.jit
  def eval_fn(model, batch):
    return next_token_loss(model, batch["tokens"], batch["input_mask"], batch["loss_mask"],
                           text_emb_bse=batch.get("text_emb"))[1]

  # --- speed and memory accounting, logged before the first step -----------------------

  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    # Compiled once per sequence length, ahead of time: these executables run the loop below.
    compiled = {length: step_fn.jitted.lower(ts.state, abstract_batch(cfg, shardings, length)).compile()
                for length in data.lengths}
  flops_per_step = _step_flops(cfg, data.batch(start_step, rows))  # of the first batch, for the log
  memory = compiled[max(data.lengths)].memory_analysis()
  per_device_bytes = (memory.argument_size_in_bytes + memory.output_size_in_bytes
                      + memory.temp_size_in_bytes - memory.alias_size_in_bytes)
  if is_chief:
    print(f"kineto: {cfg.name}: {n_params / 1e6:.2f}M params on mesh {dict(mesh.shape)}; "
          f"{flops_per_step / 1e9:.2f} GFLOP per step (analytic); {per_device_bytes / 2**20:.1f} MiB "
          f"per device (arguments {memory.argument_size_in_bytes / 2**20:.1f} MiB, temporaries "
          f"{memory.temp_size_in_bytes / 2**20:.1f} MiB); starting at step {start_step}.\n"
          f"kineto: data: {data.describe}.")

  writer = open_writer(workdir, cfg, start_step)

  # --- loop ---------------------------------------------------------------------------
  lr = schedule(tc)

  def step_fn(state, step):
    host = data.batch(step, rows)
    batch = global_batch({k: host[k] for k in batch_keys(cfg)}, shardings, tc.batch_size)
    state, metrics = compiled[host["tokens"].shape[1]](state, batch)
    return state, metrics, {"tokens": tc.batch_size * (host["tokens"].shape[1] - 1),
                            "flops": _step_flops(cfg, host)}

  def postfix(metrics, timing):
    if timing.steps:
      return {"loss": f"{float(metrics['loss']):.3f}", "tok_s": f"{timing.rate('tokens'):.0f}"}
    return {"loss": f"{float(metrics['loss']):.3f}"}

  def log(metrics, step, timing):
    if step % tc.log_every == 0 or step == tc.steps - 1:
      writer.add_scalar("train/loss", float(metrics["loss"]), step)
      writer.add_scalar("train/grad_norm", float(metrics["grad_norm"]), step)
      writer.add_scalar("train/learning_rate", float(lr(step)), step)
      writer.add_scalar("train/skipped_steps", timing.skipped, step)
      if timing.steps:
        writer.add_scalar("speed/tokens_per_second", timing.rate("tokens"), step)

  result = run_loop(
      ts.state, step_fn, name=cfg.name, ckpt=ckpt, start_step=start_step, steps=tc.steps,
      max_skipped=tc.max_skipped_steps, log=log, postfix=postfix, progress=progress,
      stop_after=stop_after,
      nonfinite_hint=(f"Lower train.learning_rate (now {tc.learning_rate}) or check the data "
                      f"(token ids must be < lm.vocab={cfg.lm.vocab})."))
  state, metrics, timing = result.state, result.metrics, result.timing
  if result.step < tc.steps:
    return {"config": cfg.name, "step": result.step, "stopped_early": True}

  # --- held-out evaluation and summary -------------------------------------------------
  eval_sets = data.eval_sets(rows)

  def held_out_losses(model) -> dict[str, float]:
    """Mean held-out loss of each eval set (one per task for the mixture)."""
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
      return {name: float(np.mean([float(eval_fn(model, global_batch(
                  {k: b[k] for k in batch_keys(cfg)}, shardings, tc.batch_size))["loss"]) for b in batches]))
              for name, batches in eval_sets.items()}

  ts = dataclasses.replace(ts, state=state)
  model, _ = trained_model(ts, ema=False)
  eval_losses = held_out_losses(model)
  eval_loss = float(np.mean(list(eval_losses.values())))
  ema_model, has_ema = trained_model(ts)
  eval_loss_ema = float(np.mean(list(held_out_losses(ema_model).values()))) if has_ema else None
  # The matmul peak is measured after training (measured first, it slows what follows).
  # Fake CPU devices share the host's cores: their peak is the host's, not a sum.
  peak = measure_matmul_flops_per_second(n=1024, dtype=model.dtype)
  peak *= 1 if jax.default_backend() == "cpu" else jax.device_count()
  summary = {
      "config": cfg.name, "step": tc.steps, "resumed_from": start_step, "skipped_steps": timing.skipped,
      "loss": float(metrics["loss"]) if metrics else None, "eval_loss": eval_loss,
      "eval_loss_per_set": eval_losses,
      "eval_loss_ema": eval_loss_ema, "per_device_bytes": int(per_device_bytes),
      "params": n_params, "devices": jax.device_count(), "mesh": dict(mesh.shape),
      "data": data.stats,  # e.g. captions skipped for exceeding data.text_budget
      "step_seconds": timing.step_seconds,  # None after 1 step: its time is all compile
      "tokens_per_second": timing.seconds and timing.rate("tokens"),
      "mfu": timing.seconds and timing.rate("flops") / peak, "peak_flops_per_second": peak,
  }
  if writer:
    writer.add_scalar("eval/loss", eval_loss, tc.steps)
    for name, value in eval_losses.items():
      writer.add_scalar(f"eval/loss_{name}", value, tc.steps)
    if summary["mfu"]:
      writer.add_scalar("speed/mfu", summary["mfu"], tc.steps)
    writer.close()
    write_json(workdir / "summary.json", summary)
  if isinstance(data, lm_data.ByteData):  # a text sample; video samples are the sampler's job
    # Every process decodes: the parameters are sharded across all of them.
    prompt = _prose_prompt(data.held_out, vocab.text_offset, SAMPLE_PROMPT)
    sample = _greedy_continuation(model, prompt, data.prefix, SAMPLE_LENGTH,
                                  allowed=(vocab.text_offset, vocab.video_offset))
    if is_chief:
      text = lambda ids: _bytes_text(ids, vocab)
      write_text(workdir / "sample.txt", f"PROMPT (held-out):\n{text(prompt)}\n\n"
                                         f"GREEDY CONTINUATION (KV cache):\n{text(sample)}\n")
  return summary


def load_lm(workdir: str | pathlib.Path, mesh=None, *, ema: bool = True):
  """(config, model, step, EMA used) from an LM work directory's latest checkpoint, on `mesh`
  (default: this host's first device), with the EMA weights when the run kept them and `ema`.

  Only the weights it returns are read (orbax partial restore: the model's parameters, or
  the EMA copy inside the optimizer state), each straight onto its shards of `mesh` under
  the config's sharding rules; the Adam moments are never read, so an 8B run's ~150 GB of
  train state costs its ~38 GB of weights, split over the mesh."""
  import orbax.checkpoint as ocp

  from train.state import abstract_of
  # Absolute: orbax's metadata read refuses a relative path, and `kineto generate --lm runs/lm`
  # (the README's form) gives one.
  ckpt_dir = pathlib.Path(workdir).absolute() / "checkpoints"
  cfg = configs.from_dict(Config, Checkpointer.read_config(ckpt_dir))
  mesh = mesh or sharding.make_mesh((1, 1, 1), jax.local_devices()[:1])  # each host its own copy
  if mesh.devices.flat[0].platform != "cpu":  # a CPU-trained run (the demo's) read on GPU/TPU:
    # the CPU kernels are how, not what, it computed; the same weights run on XLA's kernels.
    cfg = dataclasses.replace(cfg, lm=dataclasses.replace(
        cfg.lm, attention_impl="blockwise" if cfg.lm.attention_impl == "cpu" else cfg.lm.attention_impl,
        matmul_impl="xla"))
  ckpt = Checkpointer(ckpt_dir, cfg)
  step = ckpt.latest_step()
  if step is None:
    raise ConfigError(f"no checkpoint found in {ckpt_dir}.")
  ckpt.close()
  mismatch = checksum_mismatch(ckpt_dir / str(step))
  if mismatch:  # read-only use: say so rather than sample from damaged weights
    raise ConfigError(f"checkpoint {ckpt_dir.absolute()}/{step} fails its checksum ({mismatch}); run "
                      "`kineto lm train` on that workdir once to set it aside and fall back, or restore it.")
  check_fits_mesh(cfg, mesh, batch_size=mesh.size)
  model_abstract = abstract_of(lambda: Transformer(cfg.lm, rngs=nnx.Rngs(0)), mesh, cfg.mesh.rules)
  weights = nnx.to_pure_dict(model_abstract.state)
  wrap = lambda tree: jax.tree.map(lambda x: {"value": x}, tree)  # on disk a Variable is {"value": ...}
  # Where the optimizer keeps the EMA (if any): the saved tree's structure says.
  saved = ocp.PyTreeCheckpointer().metadata(ckpt_dir / str(step) / "state")
  saved = getattr(saved, "item_metadata", saved)
  saved = getattr(saved, "tree", saved)
  ema_at = _ema_path(saved["1"]["opt_state"]) if ema else None
  if ema_at is None:
    target = {"0": wrap(weights)}
  else:
    target = {"1": {"opt_state": _nest(ema_at + ("ema",), wrap(weights))}}
  restored = ocp.PyTreeCheckpointer().restore(ckpt_dir / str(step) / "state", args=ocp.args.PyTreeRestore(
      item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
  tree = restored["0"] if ema_at is None else _get(restored["1"]["opt_state"], ema_at + ("ema",))
  state = model_abstract.state
  nnx.replace_by_pure_dict(state, jax.tree.map(lambda x: x["value"], tree,
                                               is_leaf=lambda x: isinstance(x, dict) and "value" in x))
  model = nnx.merge(model_abstract.graphdef, state)
  return cfg, model, int(step), ema_at is not None


def _ema_path(opt_tree, path=()) -> tuple | None:
  """Key path of the EmaState (a dict holding "ema") inside a saved optimizer-state tree."""
  if not isinstance(opt_tree, dict):
    return None
  if "ema" in opt_tree:
    return path
  for key, sub in opt_tree.items():
    found = _ema_path(sub, path + (key,))
    if found is not None:
      return found
  return None


def _nest(path: tuple, leaf):
  for key in reversed(path):
    leaf = {key: leaf}
  return leaf


def _get(tree, path: tuple):
  for key in path:
    tree = tree[key]
  return tree


def _step_flops(cfg: Config, host_batch: dict) -> float:
  """Analytic FLOPs of the global step, from this process's rows (scaled to the batch)."""
  input_mask = host_batch["input_mask"][:, :-1]
  return train_step_flops(cfg.lm, input_mask) * cfg.train.batch_size / len(input_mask)


def _bytes_text(ids, vocab: Vocabulary) -> str:
  """Text ids of the byte corpus -> str (UTF-8); any other id is shown by name."""
  out, run = [], bytearray()
  for i in np.asarray(ids).tolist():
    kind = vocab.modality(i)
    if kind == "text":
      run.append(i - vocab.text_offset)
      continue
    out.append(run.decode("utf-8", "replace"))
    run = bytearray()
    out.append(vocab.token_name(i) if kind == "special" else f"[{kind}]")
  out.append(run.decode("utf-8", "replace"))
  return "".join(out)


def _prose_prompt(data: np.ndarray, text_offset: int, length: int) -> np.ndarray:
  """The first `length` bytes of held-out data that start a sentence (not a table row)."""
  at = bytes((data - text_offset).astype(np.uint8)).find(b". The ")
  return data[at + 2:at + 2 + length] if at >= 0 else data[:length]


def _greedy_continuation(model, prompt: np.ndarray, prefix: int, length: int,
                         allowed: tuple[int, int]) -> np.ndarray:
  """Greedy ids in [allowed) after `prompt` (its first `prefix` ids bidirectional, as in
  training), decoded with the KV cache (prefill + decode_step)."""
  tokens = jnp.asarray(prompt, jnp.int32)[None]
  input_mask = jnp.arange(len(prompt))[None] < prefix

  # One program for the prefill and the per-layer weights (sliced once rather than in every
  # step). Run eagerly on a multi-device CPU mesh, their dozens of small sharded programs queue
  # up unawaited, and XLA's CPU collectives abort the process when a rendezvous waits 40 s.
  @nnx.jit
  def start(m, tokens, input_mask):
    logits, cache = m.prefill(tokens, input_mask, cache_len=len(prompt) + length)
    return logits, cache, m.layer_views()

  logits, cache, layers = start(model, tokens, input_mask)
  step = nnx.jit(lambda m, tok, c, layers: m.decode_step(tok, c, layers))
  out = []
  for _ in range(length):
    ids = jnp.arange(logits.shape[-1])
    token = jnp.argmax(jnp.where((ids >= allowed[0]) & (ids < allowed[1]), logits, -jnp.inf), axis=-1)
    out.append(int(token[0]))
    logits, cache = step(model, token, cache, layers)
  return np.asarray(out)
