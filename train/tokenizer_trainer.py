"""The video tokenizer's training loop and its evaluation (`kineto tokenizer train|eval`).

Reads like the LM trainer: mesh -> data -> sharded state (or resume, or inflate an image
tokenizer) -> AOT-compiled step -> loop -> held-out evaluation -> summary. Writes into
`workdir`: `checkpoints/` (tokenizer, discriminator, both optimizer states with the
tokenizer's EMA, LeCAM means; every `train.checkpoint_every` steps, at the end and on
SIGTERM), TensorBoard events (`tb/`: losses, PSNR, codebook health, reconstruction
strips), `reconstructions.gif` (held-out clips, original | reconstruction) and
`summary.json` (held-out PSNR / SSIM / LPIPS and codebook usage). Running the same command
again resumes with the same data order: the batch of step s depends only on the seed and s.
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
from configs.schema import ConfigError, TokenizerConfig
from train import tokenizer_step
from train.checkpoint import Checkpointer
from train.data import clips
from train.files import atomic_path, write_json
from train.loop import global_batch, open_writer, process_rows, run_loop
from train.optimizer import schedule
from train.state import restore, trained_model
from vidtok import lfq, metrics
from vidtok.model import VideoTokenizer
from vidtok.pixels import to_float, to_uint8

EVAL_CLIPS = 16


def train_tokenizer(cfg: TokenizerConfig, workdir: str | pathlib.Path, *, progress: bool = True,
                    stop_after: int | None = None) -> dict:
  """Trains `cfg` on its dataset; returns the summary (also workdir/summary.json)."""
  workdir = pathlib.Path(workdir)
  tc = cfg.train
  train_clips = clips.ClipBatches(tc.data_dir, "train", tc.frames, tc.batch_size, tc.seed)
  height, width = train_clips.frame_size
  if height % cfg.vidtok.space_factor or width % cfg.vidtok.space_factor:
    raise ConfigError(f"{tc.data_dir} holds {height}x{width} frames, not multiples of the "
                      f"tokenizer's spatial factor {cfg.vidtok.space_factor}; rebuild with another --size.")
  workdir.mkdir(parents=True, exist_ok=True)
  is_chief = jax.process_index() == 0

  # --- mesh and state: resume, inflate an image tokenizer, or start fresh ---------------
  mesh = sharding.make_mesh(cfg.mesh.shape)
  ckpt = Checkpointer(workdir / "checkpoints", cfg)
  start_step = ckpt.latest_step() or 0
  if start_step:
    tokenizer_step.check_fits_mesh(cfg, mesh)
    start_step, ts = restore(ckpt, tokenizer_step.abstract_state(cfg, mesh), start_step)  # or an earlier good one
  else:
    ts = tokenizer_step.init_state(cfg, mesh)
    if tc.init_from:
      ts = dataclasses.replace(ts, state=_inflated(ts, cfg, tc.init_from))
  step_fn = tokenizer_step.make_step(cfg, mesh, ts)
  video_sharding = tokenizer_step.video_sharding(cfg, mesh)
  clip_shape = (tc.batch_size, tc.frames, height, width, 3)
  rows = process_rows(video_sharding, clip_shape)
  lpips_params = metrics.lpips_params() if tc.perceptual_weight else None

  with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
    compiled = step_fn.jitted.lower(
        ts.state, jax.ShapeDtypeStruct(clip_shape, jnp.uint8, sharding=video_sharding),
        jax.ShapeDtypeStruct((), jnp.int32), lpips_params).compile()
  gen = nnx.merge(ts.graphdef, ts.state)[0]
  n_params = sum(x.size for x in jax.tree.leaves(nnx.state(gen, nnx.Param)))
  t, h, w = cfg.vidtok.latent_shape(tc.frames, height, width)
  if is_chief:
    print(f"kineto: {cfg.name}: {n_params / 1e6:.2f}M tokenizer params on mesh {dict(mesh.shape)}; "
          f"clips {tc.frames}x{height}x{width} -> {t}x{h}x{w} tokens of {cfg.vidtok.bits} bits; "
          f"{len(train_clips.source)} training clips in {tc.data_dir}; starting at step {start_step}.")
  writer = open_writer(workdir, cfg, start_step)

  # --- loop ---------------------------------------------------------------------------
  lr = schedule(tc)

  def step_fn(state, step):
    video = global_batch({"video": train_clips.batch(step, rows)}, {"video": video_sharding},
                         tc.batch_size)["video"]
    state, out = compiled(state, video, jnp.int32(step), lpips_params)
    return state, out, {"clips": tc.batch_size}

  def postfix(out, timing):
    return {"loss": f"{float(out['loss']):.3f}", "psnr": f"{float(out['psnr']):.1f}",
            "codes": int(out["codes_used"])}

  def log(out, step, timing):
    if step % tc.log_every == 0 or step == tc.steps - 1:
      for key, value in out.items():
        writer.add_scalar(f"{'codebook' if key in _HEALTH else 'train'}/{key}", float(value), step)
      writer.add_scalar("train/learning_rate", float(lr(step)), step)
      writer.add_scalar("train/skipped_steps", timing.skipped, step)
      if timing.steps:
        writer.add_scalar("speed/clips_per_second", timing.rate("clips"), step)

  def reconstruction_strip(state, step):  # every process: the weights are sharded
    if tc.image_every and step % tc.image_every == 0:
      model = nnx.merge(ts.graphdef, state)[0]
      _log_strip(writer, model, train_clips.batch(step, slice(0, 2)), step)

  result = run_loop(
      ts.state, step_fn, name=cfg.name, ckpt=ckpt, start_step=start_step, steps=tc.steps,
      max_skipped=tc.max_skipped_steps, log=log, postfix=postfix, every_step=reconstruction_strip,
      progress=progress, stop_after=stop_after,
      nonfinite_hint=f"Lower train.learning_rate (now {tc.learning_rate}) or train.gan_weight.")
  state, out, timing = result.state, result.metrics, result.timing
  if result.step < tc.steps:
    return {"config": cfg.name, "step": result.step, "stopped_early": True}

  # --- held-out evaluation ----------------------------------------------------------------
  gen, has_ema = trained_model(dataclasses.replace(ts, state=state))  # EMA weights: what users get
  videos = held_out_clips(tc.data_dir, "validation", EVAL_CLIPS)
  report = evaluate(gen, videos)
  if is_chief:
    save_side_by_side(workdir / "reconstructions.gif", videos[:4], report.pop("reconstructions")[:4])
  else:
    report.pop("reconstructions")
  step_seconds = timing.step_seconds
  summary = {"config": cfg.name, "step": tc.steps, "resumed_from": start_step, "skipped_steps": timing.skipped,
             "params": int(n_params), "mesh": dict(mesh.shape), "train_loss": float(out["loss"]) if out else None,
             "train_psnr": float(out["psnr"]) if out else None, "ema": has_ema,
             "step_seconds": step_seconds,
             "clips_per_second": step_seconds and tc.batch_size / step_seconds,
             "held_out": report}
  _log_strip(writer, gen, videos[:2], tc.steps)
  if writer:
    for key, value in report.items():
      if isinstance(value, float):
        writer.add_scalar(f"eval/{key}", value, tc.steps)
    writer.close()
    write_json(workdir / "summary.json", summary)
  return summary


_HEALTH = ("codes_used", "usage_fraction", "usage_entropy_bits", "bit_balance_min", "bit_balance_max")


def held_out_clips(data_dir: str, split: str, count: int) -> np.ndarray:
  """The first `count` whole clips of a split (all their frames, even if training used fewer)."""
  source = clips.open_split(str(data_dir), split)
  return np.stack([source[i]["video"] for i in range(min(count, len(source)))])


def evaluate(model: VideoTokenizer, videos_u8: np.ndarray, batch: int = 4) -> dict:
  """PSNR, SSIM, LPIPS and codebook usage of reconstructing `videos_u8` [N, T, H, W, 3]."""
  @nnx.jit
  def reconstruct(model, video_u8):
    video = to_float(video_u8)
    codes = model.encode(video)
    recon = jnp.clip(model.decode(codes), -1, 1)
    return codes, recon, {"psnr": metrics.psnr(recon, video).mean(axis=1),
                          "ssim": metrics.ssim(recon, video).mean(axis=1),
                          "lpips": metrics.lpips(recon, video).mean(axis=1)}

  all_codes, recons, scores = [], [], {"psnr": [], "ssim": [], "lpips": []}
  for i in range(0, len(videos_u8), batch):
    codes, recon, s = reconstruct(model, jnp.asarray(videos_u8[i:i + batch]))
    all_codes.append(np.asarray(codes))
    recons.append(to_uint8(recon))
    for k in scores:
      scores[k].append(np.asarray(s[k]))
  codes = np.concatenate(all_codes)
  health = {k: float(v) for k, v in lfq.codebook_health(jnp.asarray(codes), model.cfg.bits).items()}
  report = {k: float(np.mean(np.concatenate(v))) for k, v in scores.items()}
  report |= {"clips": int(len(videos_u8)), "tokens": int(codes.size), **health,
             "reconstructions": np.concatenate(recons)}
  return report


def save_side_by_side(path: pathlib.Path, originals_u8: np.ndarray, recons_u8: np.ndarray, fps: int = 8):
  """A GIF of clips stacked vertically, each row original | reconstruction."""
  from PIL import Image
  rows = np.concatenate([originals_u8, recons_u8], axis=3)       # [N, T, H, 2W, 3]
  frames = [Image.fromarray(f) for f in np.concatenate(list(rows), axis=1)]  # T x [N*H, 2W, 3]
  with atomic_path(path) as tmp:
    frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)


@nnx.jit
def _reconstruct(model, video_u8):
  """One compiled program: run eagerly on sharded weights, the encoder/decoder's hundreds of
  small ops each became their own cross-device computation, and a full suite's run aborted
  in them (SIGABRT inside XLA's CPU runtime, twice, under load)."""
  return jnp.clip(model.decode(model.encode(to_float(video_u8))), -1, 1)


def _log_strip(writer, model, videos_u8: np.ndarray, step: int) -> None:
  """TensorBoard image: each clip's frames in a row, originals above reconstructions.

  Every process reconstructs (the weights are sharded across them); process 0, the one
  with a `writer`, writes."""
  recon = to_uint8(_reconstruct(model, jnp.asarray(videos_u8)))
  strip = lambda v: np.concatenate(list(np.concatenate(list(v), axis=1)), axis=1)  # frames side by side
  image = np.concatenate([strip(videos_u8), strip(recon)], axis=0)
  if writer is not None:
    writer.add_image("reconstruction", image, step, dataformats="HWC")


def _inflated(ts, cfg: TokenizerConfig, image_workdir: str):
  """The fresh state with the tokenizer's weights from an image (1-frame) tokenizer.

  An image tokenizer only ever used the last time tap of each causal kernel (the others saw
  padding); copying that tap and zeroing the rest gives a video tokenizer that encodes a
  one-frame video exactly as the image tokenizer did (MAGVIT-v2's inflation).
  """
  image_cfg, image_model = load_tokenizer(image_workdir)
  if image_cfg.vidtok != cfg.vidtok:
    raise ConfigError(f"train.init_from={image_workdir!r}: its vidtok config {image_cfg.vidtok} differs "
                      f"from this run's {cfg.vidtok}; inflation needs the same architecture.")

  def inflate(x):
    if x.ndim == 5 and x.shape[0] > 1:  # a [kt, kh, kw, in, out] kernel
      return jnp.zeros_like(x).at[-1].set(x[-1])
    return x

  gen, *rest = nnx.merge(ts.graphdef, ts.state)
  nnx.update(gen, jax.tree.map(inflate, nnx.state(image_model, nnx.Param)))
  return jax.device_put(nnx.state((gen, *rest)), ts.shardings)


def load_tokenizer(workdir: str | pathlib.Path, *, ema: bool = True) -> tuple[TokenizerConfig, VideoTokenizer]:
  """(config, tokenizer) from a tokenizer work directory's latest checkpoint, on one device
  (EMA weights when the run kept them and `ema`)."""
  ckpt_dir = pathlib.Path(workdir) / "checkpoints"
  saved = Checkpointer.read_config(ckpt_dir)
  cfg = configs.from_dict(TokenizerConfig, saved)
  mesh = sharding.make_mesh((1, 1, 1), jax.local_devices()[:1])  # each host loads its own copy
  ckpt = Checkpointer(ckpt_dir, cfg)
  _, ts = restore(ckpt, tokenizer_step.abstract_state(cfg, mesh))
  ckpt.close()
  return cfg, trained_model(ts, ema=ema)[0]
