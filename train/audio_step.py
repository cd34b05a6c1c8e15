"""The audio codec's train state and jitted step, functional: state in, state out.

`init_state(cfg, train, seed)` builds an `AudioTrainState` (codec parameters, RVQ
statistics, optimizer states, discriminator, step, RNG: arrays only, the graph
definitions ride along as static fields), `make_train_step(cfg, train)` returns a
jitted `step(state, waves_bs) -> (state, metrics)` that does

  1. the generator update: spectral (+ mel, + waveform L1) reconstruction, RVQ
     commitment (+ codebook loss in straight-through mode), and with a discriminator
     the adversarial and feature-matching terms; optax AdamW;
  2. the RVQ codebook update: EMA statistics and dead-code restarts (not gradients);
  3. the discriminator update (hinge or least squares), when enabled.

`fit(cfg, waves, steps, seed)` runs a few steps in memory (tests and notebooks: no files);
`kineto audio train` runs the same step in the one training loop (`train/loop.py`).
Held-out scores are `vidtok.audio.evaluate`.

Shape letters: B batch, S samples, L levels.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx, struct

from configs.schema import AudioCodecConfig, TrainConfig
from train.optimizer import schedule
from vidtok.audio import losses
from vidtok.audio.codec import AudioCodec, check_waveform
from vidtok.audio.discriminator import MultiScaleDiscriminator
from vidtok.audio.rvq import dropout_levels


@struct.dataclass
class AudioTrainState:
  """Everything a codec training run carries from step to step (a pytree of arrays)."""
  step: jax.Array
  rng: jax.Array
  params: Any              # nnx.State of the codec's Params (optimized)
  stats: Any               # nnx.State of the rest: EMA codebooks and usage counts
  opt_state: Any
  disc_params: Any         # None without a discriminator
  disc_opt_state: Any
  codec_def: Any = struct.field(pytree_node=False)
  disc_def: Any = struct.field(pytree_node=False)

  def codec(self) -> AudioCodec:
    """The codec module with this state's parameters and codebooks."""
    return nnx.merge(self.codec_def, self.params, self.stats)


def default_train_config(steps: int, **overrides) -> TrainConfig:
  """Optimizer settings that suit the codec (the LM's defaults decay weights and use b2 0.95)."""
  base = dict(steps=steps, batch_size=8, learning_rate=1e-3, warmup_steps=min(50, steps // 10),
              weight_decay=0.0, b1=0.8, b2=0.99, clip_norm=1.0)
  return TrainConfig(**{**base, **overrides})


def make_optimizer(train: TrainConfig) -> optax.GradientTransformation:
  """AdamW with linear warmup and cosine decay to 10%, after global-norm clipping."""
  chain = [optax.clip_by_global_norm(train.clip_norm)] if train.clip_norm > 0 else []
  chain.append(optax.adamw(schedule(train), b1=train.b1, b2=train.b2, weight_decay=train.weight_decay))
  return optax.chain(*chain)


def init_state(cfg: AudioCodecConfig, train: TrainConfig | None = None, seed: int = 0) -> AudioTrainState:
  """Fresh codec (+ discriminator) parameters and optimizer states."""
  train = train or default_train_config(1000)
  rngs = nnx.Rngs(seed)
  codec_def, params, stats = nnx.split(AudioCodec(cfg, rngs=rngs), nnx.Param, ...)
  tx = make_optimizer(train)
  disc_def = disc_params = disc_opt_state = None
  if cfg.discriminator:
    disc_def, disc_params = nnx.split(MultiScaleDiscriminator(cfg, rngs=rngs), nnx.Param)
    disc_opt_state = tx.init(disc_params)
  return AudioTrainState(step=jnp.zeros((), jnp.int32), rng=jax.random.key(seed), params=params,
                         stats=stats, opt_state=tx.init(params), disc_params=disc_params,
                         disc_opt_state=disc_opt_state, codec_def=codec_def, disc_def=disc_def)


def reconstruction_terms(cfg: AudioCodecConfig, ref_bs: jax.Array, est_bs: jax.Array) -> dict:
  """The unweighted reconstruction terms the config asks for."""
  terms = {}
  if cfg.stft_weight or cfg.mel_weight:
    terms.update(losses.spectral_loss(ref_bs, est_bs, cfg.stft_windows,
                                      mel_bins=cfg.mel_bins if cfg.mel_weight else 0,
                                      sample_rate=cfg.sample_rate))
  if cfg.waveform_weight:
    terms["waveform"] = jnp.mean(jnp.abs(ref_bs - est_bs))
  return terms


def reconstruction_loss(cfg: AudioCodecConfig, terms: dict) -> jax.Array:
  weights = {"stft": cfg.stft_weight, "mel": cfg.mel_weight, "waveform": cfg.waveform_weight}
  return sum(weights[k] * v for k, v in terms.items() if k in weights)


def _global_norm(tree) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def make_train_step(cfg: AudioCodecConfig, train: TrainConfig | None = None, *, jit: bool = True
                    ) -> Callable[[AudioTrainState, jax.Array], tuple[AudioTrainState, dict]]:
  """step(state, waves_bs) -> (new state, metrics); jitted with the old state donated."""
  train = train or default_train_config(1000)
  tx = make_optimizer(train)

  def step(state: AudioTrainState, wave_bs: jax.Array):
    key = jax.random.fold_in(state.rng, state.step)
    k_drop, k_restart = jax.random.split(key)
    wave_bs = wave_bs.astype(jnp.float32)
    ref_bs = wave_bs[:, :wave_bs.shape[1] // cfg.hop * cfg.hop]
    active_bl = dropout_levels(k_drop, wave_bs.shape[0], cfg.levels, cfg.quantizer_dropout)
    disc = nnx.merge(state.disc_def, state.disc_params) if cfg.discriminator else None

    def generator_loss(params):
      codec = nnx.merge(state.codec_def, params, state.stats)
      recon_bs, q = codec(wave_bs, active_bl)
      terms = reconstruction_terms(cfg, ref_bs, recon_bs)
      total = reconstruction_loss(cfg, terms)
      terms["commitment"] = q.commitment
      total += cfg.commitment_weight * q.commitment
      if cfg.codebook_mode == "straight_through":
        terms["codebook"] = q.codebook_loss
        total += q.codebook_loss
      if disc is not None:
        fake_logits, fake_features = disc(recon_bs)
        _, real_features = disc(ref_bs)
        terms["adversarial"] = losses.generator_adversarial_loss(fake_logits, cfg.adversarial_loss)
        terms["feature_matching"] = losses.feature_matching_loss(real_features, fake_features)
        total += (cfg.adversarial_weight * terms["adversarial"]
                  + cfg.feature_matching_weight * terms["feature_matching"])
      return total, (terms, recon_bs, q)

    (loss, (terms, recon_bs, q)), grads = jax.value_and_grad(generator_loss, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    # Codebooks move by EMA and restarts, outside the gradient (in straight-through mode
    # restarts overwrite rows of the codebook parameter).
    codec = nnx.merge(state.codec_def, params, state.stats)
    usage = codec.rvq.update_codebooks(q, k_restart)
    _, params, stats = nnx.split(codec, nnx.Param, ...)

    metrics = {"loss": loss, **terms, "grad_norm": _global_norm(grads),
               "snr_db": jnp.mean(losses.snr_db(ref_bs, recon_bs)),
               "levels_used": jnp.mean(jnp.sum(active_bl, axis=1).astype(jnp.float32)),
               "codebook_used_fraction": usage["used_fraction"],
               "codebook_entropy_bits": usage["entropy_bits"],
               "codebook_restarted_fraction": usage["restarted_fraction"]}
    disc_params, disc_opt_state = state.disc_params, state.disc_opt_state
    if disc is not None:
      fake_bs = jax.lax.stop_gradient(recon_bs)

      def discriminator_loss(d_params):
        d = nnx.merge(state.disc_def, d_params)
        return losses.discriminator_loss(d(ref_bs)[0], d(fake_bs)[0], cfg.adversarial_loss)

      d_loss, d_grads = jax.value_and_grad(discriminator_loss)(disc_params)
      d_updates, disc_opt_state = tx.update(d_grads, disc_opt_state, disc_params)
      disc_params = optax.apply_updates(disc_params, d_updates)
      metrics["discriminator"] = d_loss
    new_state = state.replace(step=state.step + 1, params=params, stats=stats, opt_state=opt_state,
                              disc_params=disc_params, disc_opt_state=disc_opt_state)
    return new_state, metrics

  return jax.jit(step, donate_argnums=0) if jit else step


# --- a small training loop ----------------------------------------------------------------
def random_crops(waves: Sequence[np.ndarray], batch: int, samples: int,
                 rng: np.random.Generator) -> np.ndarray:
  """[batch, samples] crops at uniform offsets, recordings picked in proportion to length."""
  lengths = np.array([len(w) - samples + 1 for w in waves], np.float64)
  picks = rng.choice(len(waves), size=batch, p=lengths / lengths.sum())
  return np.stack([waves[i][o:o + samples] for i, o in
                   ((i, rng.integers(0, lengths[i])) for i in picks)]).astype(np.float32)


@dataclasses.dataclass
class FitResult:
  state: AudioTrainState
  history: list[dict]      # per-step metrics as floats (per-level ones as lists)
  seconds: float           # wall time of the steps (first step's compile included)


def fit(cfg: AudioCodecConfig, train_waves, steps: int, seed: int = 0, *,
        train: TrainConfig | None = None, crop_seconds: float | None = None,
        log_every: int = 0, log: Callable[[str], None] = print,
        state: AudioTrainState | None = None) -> FitResult:
  """Trains on random crops of `train_waves` (mono 1-D arrays at cfg.sample_rate) for `steps`.

  crop_seconds defaults to cfg.clip_seconds (rounded down to whole latent frames); the
  batch size comes from `train` (default `default_train_config(steps)`).
  """
  train = train or default_train_config(steps)
  waves = [np.asarray(train_waves, np.float32)] if np.ndim(train_waves[0]) == 0 else [
      np.asarray(w, np.float32) for w in train_waves]
  samples = int((crop_seconds or cfg.clip_seconds) * cfg.sample_rate) // cfg.hop * cfg.hop
  if samples < cfg.hop:
    raise ValueError(f"crop_seconds={crop_seconds} is shorter than one latent frame "
                     f"({cfg.hop} samples).")
  waves = [w for w in waves if w.ndim == 1 and len(w) >= samples]
  if not waves:
    raise ValueError(f"no mono training recording has the {samples} samples one crop needs; "
                     "pass longer audio (1-D arrays) or a smaller crop_seconds.")
  for w in waves:
    check_waveform(w[None], cfg)
  state = state or init_state(cfg, train, seed)
  step_fn = make_train_step(cfg, train)
  rng = np.random.default_rng(seed)
  history, start = [], time.perf_counter()
  for i in range(steps):
    state, metrics = step_fn(state, jnp.asarray(random_crops(waves, train.batch_size, samples, rng)))
    history.append({k: (float(v) if np.ndim(v) == 0 else np.asarray(v).tolist())
                    for k, v in jax.device_get(metrics).items()})
    if log_every and (i + 1) % log_every == 0:
      h = history[-1]
      log(f"step {i + 1}/{steps}  loss {h['loss']:.4f}  snr {h['snr_db']:.2f} dB  "
          f"entropy/level {np.round(h['codebook_entropy_bits'], 2).tolist()}  "
          f"{time.perf_counter() - start:.0f}s")
  return FitResult(state=state, history=history, seconds=time.perf_counter() - start)
