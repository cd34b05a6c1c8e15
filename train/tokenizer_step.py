"""The video tokenizer's sharded train state and its jitted step (generator + discriminator).

State: the tokenizer, its AdamW state (holding the EMA of its weights when
`train.ema_decay` > 0), the discriminator, its AdamW state, and LeCAM's running means of
the discriminator's outputs. One step updates the tokenizer, then the discriminator on the
same batch. Like the LM step, a step whose losses or gradients are not finite changes
nothing and reports `finite = 0`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

import sharding
from configs.schema import TokenizerConfig
from train.optimizer import make_optimizer
from train.state import TrainState, abstract_of, global_norm, init_of, keep_if_finite
from vidtok import lfq, losses, metrics
from vidtok.discriminator import Discriminator
from vidtok.model import VideoTokenizer
from vidtok.pixels import to_float


class LecamMeans(nnx.Module):
  """Running means of D(real) and D(fake) that LeCAM regularization anchors to."""

  def __init__(self):
    self.real = nnx.BatchStat(jnp.zeros(()))
    self.fake = nnx.BatchStat(jnp.zeros(()))


def build(cfg: TokenizerConfig, seed: int):
  """(tokenizer, its optimizer, discriminator, its optimizer, LeCAM means)."""
  tc = cfg.train
  rngs = nnx.Rngs(seed)
  gen = VideoTokenizer(cfg.vidtok, rngs=rngs)
  disc = Discriminator(tc.disc_channels, rngs=nnx.Rngs(seed + 1))
  disc_tc = dataclasses.replace(tc, learning_rate=tc.disc_learning_rate, ema_decay=0.0)
  return (gen, nnx.Optimizer(gen, make_optimizer(tc), wrt=nnx.Param),
          disc, nnx.Optimizer(disc, make_optimizer(disc_tc), wrt=nnx.Param), LecamMeans())


def check_fits_mesh(cfg: TokenizerConfig, mesh) -> None:
  sharding.check_divisible(mesh, {"conv_out": cfg.vidtok.channels, "act_batch": cfg.train.batch_size},
                           cfg.mesh.rules)
  sharding.check_divisible(mesh, {"conv_out": cfg.train.disc_channels}, cfg.mesh.rules)


def abstract_state(cfg: TokenizerConfig, mesh) -> TrainState:
  return abstract_of(lambda: build(cfg, cfg.train.seed), mesh, cfg.mesh.rules)


def init_state(cfg: TokenizerConfig, mesh) -> TrainState:
  check_fits_mesh(cfg, mesh)
  return init_of(lambda: build(cfg, cfg.train.seed), mesh, cfg.mesh.rules)


def video_sharding(cfg: TokenizerConfig, mesh):
  return sharding.batch_sharding(mesh, 5, cfg.mesh.rules)


def make_step(cfg: TokenizerConfig, mesh, ts: TrainState):
  """Returns step(state, video_u8 [B,T,H,W,3], step_index, lpips_params) -> (state, metrics)."""
  tc, vc = cfg.train, cfg.vidtok
  use_gan = tc.gan_weight > 0

  def step(state, video_u8, step_index, lpips_params):
    old_leaves = jax.tree.leaves(state)
    gen, gen_opt, disc, disc_opt, means = nnx.merge(ts.graphdef, state)
    gen_def, gen_params, gen_rest = nnx.split(gen, nnx.Param, ...)
    video = sharding.shard(to_float(video_u8), "act_batch", None, None, None, None)
    rng = jax.random.fold_in(jax.random.key(tc.seed), step_index)  # same on resume
    adversarial_on = (step_index >= tc.disc_start).astype(jnp.float32)

    def gen_loss(params):
      model = nnx.merge(gen_def, params, gen_rest)
      recon, z, codes = model(video)
      terms = {"recon": losses.reconstruction(recon, video, tc.recon_loss)}
      total = terms["recon"]
      if vc.quantizer == "lfq":  # FSQ's fixed grid needs neither term (vidtok/fsq.py)
        terms["commit"] = lfq.commitment_loss(z)
        per_position, batch = lfq.entropy_terms(z.reshape(-1, vc.bits), tc.entropy_temperature,
                                                vc.entropy_groups)
        terms |= {"entropy_position": per_position, "entropy_batch": batch}
        total += (tc.commit_weight * terms["commit"]
                  + tc.entropy_weight * (per_position - tc.entropy_gamma * batch))
      if tc.perceptual_weight:
        # LPIPS costs a CNN pass per frame: a random subset of frames stands for the clip.
        frames = jax.random.choice(rng, video.shape[1], (min(tc.perceptual_frames, video.shape[1]),),
                                   replace=False)
        terms["perceptual"] = metrics.lpips(recon[:, frames], video[:, frames], lpips_params).mean()
        total += tc.perceptual_weight * terms["perceptual"]
      if use_gan:
        terms["g_adversarial"] = losses.generator_adversarial(disc(recon))
        total += adversarial_on * tc.gan_weight * terms["g_adversarial"]
      return total, (terms, recon, codes)

    (total, (terms, recon, codes)), grads = jax.value_and_grad(gen_loss, has_aux=True)(gen_params)
    out = dict(terms, loss=total, grad_norm=global_norm(grads))
    gen_opt.update(gen, grads)
    finite = jnp.isfinite(total) & jnp.isfinite(out["grad_norm"])

    if use_gan:
      disc_def, disc_params, disc_rest = nnx.split(disc, nnx.Param, ...)
      fake = jax.lax.stop_gradient(recon)

      def disc_loss(params):
        d = nnx.merge(disc_def, params, disc_rest)
        real_logits, fake_logits = d(video), d(fake)
        loss = losses.discriminator_loss(real_logits, fake_logits)
        if tc.lecam_weight:
          loss += tc.lecam_weight * losses.lecam(real_logits, fake_logits, means.real[...], means.fake[...])
        if tc.r1_weight:
          loss += tc.r1_weight / 2 * losses.r1_penalty(d, video)
        return loss, (real_logits.mean(), fake_logits.mean())

      (d_loss, (real_mean, fake_mean)), d_grads = jax.value_and_grad(disc_loss, has_aux=True)(disc_params)
      disc_opt.update(disc, d_grads)
      means.real[...] = tc.lecam_decay * means.real[...] + (1 - tc.lecam_decay) * real_mean
      means.fake[...] = tc.lecam_decay * means.fake[...] + (1 - tc.lecam_decay) * fake_mean
      out |= {"d_loss": d_loss, "d_real": real_mean, "d_fake": fake_mean,
              "d_grad_norm": global_norm(d_grads)}
      finite &= jnp.isfinite(d_loss) & jnp.isfinite(out["d_grad_norm"])

    out |= lfq.codebook_health(codes, vc.bits)
    out["psnr"] = metrics.psnr(jax.lax.stop_gradient(recon), video).mean()
    out["finite"] = finite
    new_state = keep_if_finite(finite, nnx.state((gen, gen_opt, disc, disc_opt, means)), old_leaves)
    return new_state, out

  jitted = jax.jit(step, in_shardings=(ts.shardings, video_sharding(cfg, mesh), None, None),
                   out_shardings=(ts.shardings, None), donate_argnums=0)

  def run(state, video_u8, step_index, lpips_params):
    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules):
      return jitted(state, video_u8, step_index, lpips_params)

  run.jitted = jitted
  return run
