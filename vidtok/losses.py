"""Tokenizer training losses: reconstruction, GAN (non-saturating), LeCAM, R1."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def reconstruction(recon, video, kind: str) -> jax.Array:
  diff = recon.astype(jnp.float32) - video.astype(jnp.float32)
  return jnp.mean(jnp.abs(diff)) if kind == "l1" else jnp.mean(jnp.square(diff))


def generator_adversarial(fake_logits) -> jax.Array:
  """Non-saturating generator loss: -log sigmoid(D(fake))."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def discriminator_loss(real_logits, fake_logits) -> jax.Array:
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def lecam(real_logits, fake_logits, ema_real, ema_fake) -> jax.Array:
  """LeCAM regularization (Tseng et al. 2021): keeps D's outputs near the other side's EMA,
  which bounds how far D can drift when data is scarce."""
  return (jnp.mean(jnp.square(jax.nn.relu(real_logits - ema_fake)))
          + jnp.mean(jnp.square(jax.nn.relu(ema_real - fake_logits))))


def r1_penalty(disc_fn, real) -> jax.Array:
  """Mean squared gradient norm of D at real data (per example, summed over pixels)."""
  grads = jax.grad(lambda x: jnp.sum(disc_fn(x)))(real)
  return jnp.mean(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))))
