"""The LM training loop: mesh -> data -> sharded state -> jitted step -> loop -> summary.

Reads top to bottom like big_vision's train.py. Writes into `workdir`: TensorBoard events
(`tb/`), and at the end `summary.json` with step, loss, held-out loss, tokens/s and MFU,
and `sample.txt`: a greedy continuation of a held-out prompt decoded with the KV cache.
"""
from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

import configs
import sharding
from configs.schema import Config, ConfigError
from lm import next_token_loss
from train import corpus
from train.flops import measure_matmul_flops_per_second, train_step_flops
from train.optimizer import schedule
from train.state import batch_shardings, init_state, make_train_step

EVAL_BATCHES = 4
SAMPLE_PROMPT, SAMPLE_LENGTH = 64, 96


def process_rows(batch_sharding: jax.sharding.Sharding, global_shape: tuple[int, ...]) -> slice:
  """The contiguous rows of a global batch that this process's devices hold."""
  starts_stops = {(i[0].start or 0, global_shape[0] if i[0].stop is None else i[0].stop)
                  for i in batch_sharding.addressable_devices_indices_map(global_shape).values()}
  lo, hi = min(s for s, _ in starts_stops), max(e for _, e in starts_stops)
  if sum(e - s for s, e in starts_stops) != hi - lo:
    raise sharding.MeshError(f"this process's devices hold non-contiguous batch rows {sorted(starts_stops)}; "
                             "order the mesh so each host's devices are adjacent on the data axes.")
  return slice(lo, hi)


def _global_batch(host_batch: dict, shardings: dict, global_rows: int) -> dict:
  """This process's rows of the batch -> global arrays sharded over the data axes."""
  return {key: jax.make_array_from_process_local_data(shardings[key], local,
                                                      (global_rows,) + local.shape[1:])
          for key, local in host_batch.items()}


def train_lm(cfg: Config, workdir: str | pathlib.Path, *, progress: bool = True) -> dict:
  """Trains `cfg` and returns the summary (also written to workdir/summary.json)."""
  if "://" in str(workdir):
    raise ConfigError(f"workdir {workdir!r}: remote (URI) work directories are not supported yet; "
                      "use a local or mounted path (e.g. a gcsfuse or NFS mount).")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0
  tc = cfg.train

  # --- data ---------------------------------------------------------------------------
  if cfg.lm.vocab < corpus.BYTE_VOCAB:
    raise ConfigError(f"lm.vocab={cfg.lm.vocab} is smaller than the byte corpus' "
                      f"{corpus.BYTE_VOCAB} ids; use lm.vocab >= {corpus.BYTE_VOCAB}.")
  prefix = tc.seq_len // 8  # the first eighth of each sequence is the bidirectional prefix
  train_data, eval_data = corpus.split(corpus.corpus_bytes())

  # --- mesh, model and optimizer --------------------------------------------------------
  mesh = sharding.make_mesh(cfg.mesh.shape)
  ts = init_state(cfg, mesh, seed=tc.seed)
  step_fn = make_train_step(cfg, mesh, ts)
  shardings = batch_shardings(cfg, mesh)
  rows = process_rows(shardings["tokens"], (tc.batch_size, tc.seq_len + 1))
  train_iter = corpus.batches(train_data, tc.batch_size, tc.seq_len, prefix, tc.seed, rows=rows)
  n_params = cfg.lm.param_count()

  @jax.jit
  def eval_fn(state, batch):
    model, _ = nnx.merge(ts.graphdef, state)
    return next_token_loss(model, batch["tokens"], batch["input_mask"], batch["loss_mask"])[1]

  # --- speed accounting ---------------------------------------------------------------
  flops_per_step = train_step_flops(cfg.lm, np.zeros((tc.batch_size, tc.seq_len), bool)
                                    | (np.arange(tc.seq_len) < prefix))

  writer = None
  if is_chief:
    from tensorboardX import SummaryWriter
    writer = SummaryWriter(str(workdir / "tb"))
    writer.add_text("config", json.dumps(configs.to_dict(cfg), indent=1), 0)

  # --- loop ---------------------------------------------------------------------------
  state = ts.state
  lr = schedule(tc)
  timed_steps, timed_seconds, metrics = 0, 0.0, {}
  bar = tqdm(range(tc.steps), desc=f"train {cfg.name}", disable=not (progress and is_chief),
             dynamic_ncols=True)
  for step in bar:
    batch = _global_batch(next(train_iter), shardings, tc.batch_size)
    t0 = time.perf_counter()
    state, metrics = step_fn(state, batch)
    loss = float(metrics["loss"])  # blocks: the step's time is measured whole
    if step > 0:  # step 0 includes compilation
      timed_steps += 1
      timed_seconds += time.perf_counter() - t0
    if not np.isfinite(loss):
      raise FloatingPointError(f"loss became {loss} at step {step}; lower train.learning_rate "
                               f"(now {tc.learning_rate}) or check the data (token ids must be "
                               f"< lm.vocab={cfg.lm.vocab}).")
    bar.set_postfix(loss=f"{loss:.3f}")
    if writer and (step % tc.log_every == 0 or step == tc.steps - 1):
      writer.add_scalar("train/loss", loss, step)
      writer.add_scalar("train/grad_norm", float(metrics["grad_norm"]), step)
      writer.add_scalar("train/learning_rate", float(lr(step)), step)
      if timed_steps:
        writer.add_scalar("speed/tokens_per_second", tc.batch_size * tc.seq_len * timed_steps / timed_seconds, step)

  # --- held-out evaluation and summary -------------------------------------------------
  eval_iter = corpus.batches(eval_data, tc.batch_size, tc.seq_len, prefix, seed=12345, rows=rows)
  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    eval_loss = float(np.mean([float(eval_fn(state, _global_batch(next(eval_iter), shardings, tc.batch_size))["loss"])
                               for _ in range(EVAL_BATCHES)]))
  prompt = _prose_prompt(eval_data, SAMPLE_PROMPT)
  sample = _greedy_continuation(nnx.merge(ts.graphdef, state)[0], prompt, prefix, SAMPLE_LENGTH)
  step_seconds = timed_seconds / timed_steps if timed_steps else None  # 1 step: all compile
  # The matmul peak is measured after training (measured first, it slows what follows).
  # Fake CPU devices share the host's cores: their peak is the host's, not a sum.
  compute_dtype = nnx.merge(ts.graphdef, state)[0].dtype
  peak = measure_matmul_flops_per_second(n=1024, dtype=compute_dtype)
  peak *= 1 if jax.default_backend() == "cpu" else jax.device_count()
  summary = {
      "config": cfg.name, "step": tc.steps, "loss": float(metrics["loss"]), "eval_loss": eval_loss,
      "params": n_params, "devices": jax.device_count(), "mesh": dict(mesh.shape),
      "step_seconds": step_seconds,
      "tokens_per_second": step_seconds and tc.batch_size * tc.seq_len / step_seconds,
      "mfu": step_seconds and flops_per_step / step_seconds / peak, "peak_flops_per_second": peak,
  }
  if is_chief:
    writer.add_scalar("eval/loss", eval_loss, tc.steps)
    writer.close()
    (workdir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = lambda ids: bytes(np.asarray(ids, np.uint8)).decode("utf-8", "replace")
    (workdir / "sample.txt").write_text(f"PROMPT (held-out):\n{text(prompt)}\n\n"
                                        f"GREEDY CONTINUATION (KV cache):\n{text(sample)}\n")
  return summary


def _prose_prompt(data: np.ndarray, length: int) -> np.ndarray:
  """The first `length` bytes of held-out data that start a sentence (not a table row)."""
  at = bytes(data.astype(np.uint8)).find(b". The ")
  return data[at + 2:at + 2 + length] if at >= 0 else data[:length]


def _greedy_continuation(model, prompt: np.ndarray, prefix: int, length: int) -> np.ndarray:
  """Greedy bytes after `prompt` (its first `prefix` bytes bidirectional, as in training),
  decoded with the KV cache (prefill + decode_step)."""
  tokens = jnp.asarray(prompt, jnp.int32)[None]
  input_mask = jnp.arange(len(prompt))[None] < prefix
  logits, cache = model.prefill(tokens, input_mask, cache_len=len(prompt) + length)
  step = nnx.jit(lambda m, tok, c: m.decode_step(tok, c))
  out = []
  for _ in range(length):
    token = jnp.argmax(logits, axis=-1)
    out.append(int(token[0]))
    logits, cache = step(model, token, cache)
  return np.asarray(out)
