"""The device mesh (sharding/): axis sizes and the logical-axis -> mesh-axis rules."""
from __future__ import annotations

import dataclasses

from configs.schema.checks import ConfigError

# Logical axis name -> mesh axes. Weights and activations use distinct names (activations
# start with `act_`), so one table can shard parameters over `fsdp` while activations
# are split over the batch. Mesh axes: data (pure data parallel), fsdp (data parallel with
# parameters and optimizer state sharded), tensor (heads, MLP and vocab split).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("act_batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_head_dim", None),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
    # vidtok: convolutions are data parallel with FSDP-sharded output channels.
    ("conv_in", None),
    ("conv_out", "fsdp"),
)

MESH_AXES = ("data", "fsdp", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh sizes; -1 on one axis means "all remaining devices"."""
  # Devices on the pure data-parallel axis (parameters replicated).
  data: int = 1
  # Devices on the FSDP axis: data parallel, parameters and optimizer state sharded.
  fsdp: int = -1
  # Devices on the tensor-parallel axis (heads, MLP and vocab split).
  tensor: int = 1
  # (logical axis name, mesh axis / tuple of mesh axes / None = replicated) pairs.
  rules: tuple[tuple[str, str | tuple[str, ...] | None], ...] = DEFAULT_RULES

  def __post_init__(self):
    sizes = self.shape
    if sum(s == -1 for s in sizes) > 1:
      raise ConfigError(f"mesh sizes {dict(zip(MESH_AXES, sizes))}: at most one axis may be -1.")
    for name, s in zip(MESH_AXES, sizes):
      if s == 0 or s < -1:
        raise ConfigError(f"mesh.{name}={s} must be a positive size or -1 (the remaining devices).")
    for logical, mesh_axes in self.rules:
      for a in (mesh_axes if isinstance(mesh_axes, tuple) else (mesh_axes,)):
        if a is not None and a not in MESH_AXES:
          raise ConfigError(f"mesh.rules maps {logical!r} to unknown mesh axis {a!r}; "
                            f"valid axes are {list(MESH_AXES)}.")

  @property
  def shape(self) -> tuple[int, int, int]:
    return (self.data, self.fsdp, self.tensor)
