"""Device meshes and logical-axis sharding, shared by vidtok, lm and train.

Every weight is created with logical axis names (`("embed", "mlp")`) and every key
activation is constrained with `shard(x, "act_batch", "act_length", "act_embed")`. A rules
table (`configs.MeshConfig.rules`) maps logical names to the mesh axes
`("data", "fsdp", "tensor")`; the trainer installs it for a run with

    with jax.set_mesh(mesh), nnx.logical_axis_rules(cfg.mesh.rules): ...

Outside such a context (a notebook on one device) `shard` does nothing, so model code
runs unchanged everywhere.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import jax
from flax import nnx
from flax.core import spmd

from configs.schema import MESH_AXES

P = jax.sharding.PartitionSpec
Rules = Sequence[tuple[str, "str | tuple[str, ...] | None"]]

__all__ = ["MESH_AXES", "MeshError", "param", "resolve_mesh_shape", "make_mesh", "logical_to_spec", "shard",
           "named_sharding", "batch_sharding", "check_divisible"]


class MeshError(ValueError):
  """The requested mesh does not fit the devices or the model; the message says how to fix it."""


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Replaces one -1 by the remaining devices and checks the product equals `num_devices`."""
  sizes = list(shape)
  named = dict(zip(MESH_AXES, sizes))
  if sizes.count(-1) > 1:
    raise MeshError(f"mesh {named}: at most one axis may be -1.")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise MeshError(f"mesh {named}: the fixed axes ({known} devices) do not divide the "
                      f"{num_devices} available devices; choose sizes whose product divides {num_devices}.")
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise MeshError(f"mesh {named} needs {math.prod(sizes)} devices but {num_devices} are available; "
                    f"set the sizes so their product is {num_devices}, or use -1 on one axis "
                    "(e.g. --set mesh.fsdp=-1).")
  return tuple(sizes)


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A `("data", "fsdp", "tensor")` mesh in Auto mode over `devices` (default: all)."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(shape, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  return jax.make_mesh(sizes, MESH_AXES, axis_types=auto, devices=devices)


def logical_to_spec(names: Iterable[str | None], rules: Rules | None = None) -> P:
  """Maps logical axis names to a PartitionSpec with `rules` (default: the active context)."""
  table = dict(spmd.get_logical_axis_rules() if rules is None else rules)
  return P(*(table.get(name) if name is not None else None for name in names))


def param(value: jax.Array, names: Sequence[str | None]) -> nnx.Param:
  """A parameter annotated with logical axis `names`.

  Inside a mesh context it is placed on its shards at creation; outside one (a notebook
  on one device) it is created unsharded but keeps the names for later sharding.
  """
  if jax.sharding.get_abstract_mesh().empty:
    with nnx.use_eager_sharding(False):
      return nnx.Param(value, out_sharding=tuple(names))
  return nnx.Param(value, out_sharding=tuple(names))


def shard(x: jax.Array, *names: str | None) -> jax.Array:
  """Constrains activation `x` to the sharding its logical axis `names` map to.

  A no-op outside a mesh context or without active rules (`nnx.logical_axis_rules`), so
  the same model code runs in a notebook on one device and never silently replicates.
  """
  if x.ndim != len(names):
    raise ValueError(f"shard: array of shape {x.shape} given {len(names)} axis names {names}.")
  if jax.sharding.get_abstract_mesh().empty or not spmd.get_logical_axis_rules():
    return x
  return jax.lax.with_sharding_constraint(x, logical_to_spec(names))


def named_sharding(mesh: jax.sharding.Mesh, *names: str | None, rules: Rules | None = None):
  return jax.sharding.NamedSharding(mesh, logical_to_spec(names, rules))


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int, rules: Rules | None = None):
  """Sharding of a host batch `[B, ...]`: batch over the data axes, the rest replicated."""
  return named_sharding(mesh, "act_batch", *([None] * (ndim - 1)), rules=rules)


def check_divisible(mesh: jax.sharding.Mesh, dims: dict[str, int], rules: Rules) -> None:
  """Raises `MeshError` when a logical dimension's size is not divisible by its mesh axes.

  `dims` maps logical names to sizes, e.g. {"heads": 8, "act_batch": 16}. Checked before
  any compile, so a mesh that cannot shard the model fails with a message, not an XLA error.
  """
  for name, size in dims.items():
    spec = logical_to_spec((name,), rules)[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else spec
    ways = math.prod(mesh.shape[a] for a in axes)
    if size % ways:
      raise MeshError(f"{name}={size} is not divisible by the mesh axes {list(axes)} of total size "
                      f"{ways} (mesh {dict(mesh.shape)}); change the mesh sizes or the model size.")
