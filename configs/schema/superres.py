"""The super-resolution stage's configs (lm/superres.py, train/sr_trainer.py): `SrModelConfig`
(the token grid, windows and conditions), `SrDataConfig` (the paired token shards) and `SrConfig`,
one SR run. The transformer blocks themselves are the LM's (`LmConfig`: width, depth, heads)."""
from __future__ import annotations

import dataclasses

from configs.schema.checks import ConfigError, _check_positive
from configs.schema.lm import LmConfig
from configs.schema.mesh import MeshConfig
from configs.schema.train import TrainConfig


@dataclasses.dataclass(frozen=True)
class SrModelConfig:
  """The token-space SR transformer: low-res codes [T, H/s, W/s] -> high-res codes [T, H, W]."""
  video_bits: int = 6          # LFQ bits of the video codes (both resolutions): 2**bits codes
  frames: int = 3              # T: latent frames
  height: int = 8              # H: high-res latent rows
  width: int = 8               # W: high-res latent columns
  scale: int = 2               # s: the low-res grid is [T, H/s, W/s] (divides H and W)
  window: int = 4              # side of the square spatial attention windows (divides H and W)
  temporal_window: int = 0     # frames per temporal attention window (0: all T; else divides T)
  text_vocab: int = 256        # caption piece ids are < this (0: no text condition)
  text_budget: int = 16        # caption pieces read (longer captions are cut)

  def __post_init__(self):
    _check_positive(self, "video_bits", "frames", "height", "width", "scale", "window", "text_budget")
    for side, name in ((self.height, "height"), (self.width, "width")):
      if side % self.scale or side % self.window:
        raise ConfigError(f"sr.{name}={side} must be divisible by sr.scale={self.scale} and "
                          f"sr.window={self.window}; change the window or the grid.")
    if self.temporal_window < 0 or (self.temporal_window and self.frames % self.temporal_window):
      raise ConfigError(f"sr.temporal_window={self.temporal_window} must be 0 or divide "
                        f"sr.frames={self.frames}.")
    if self.text_vocab < 0:
      raise ConfigError(f"sr.text_vocab={self.text_vocab} must be >= 0.")

  @property
  def codes(self) -> int:
    return 2 ** self.video_bits

  @property
  def high_thw(self) -> tuple[int, int, int]:
    return (self.frames, self.height, self.width)

  @property
  def low_thw(self) -> tuple[int, int, int]:
    return (self.frames, self.height // self.scale, self.width // self.scale)


@dataclasses.dataclass(frozen=True)
class SrDataConfig:
  """What the SR stage trains on: token shards with `video` (high-res) and `video_lowres`
  codes of the same clips (`kineto tokenize --lowres S`)."""
  tokens_dir: str = ""         # the paired token shards (train and validation splits)
  cond_dropout: float = 0.1    # probability a training example loses both conditions (guidance)

  def __post_init__(self):
    if not 0 <= self.cond_dropout <= 1:
      raise ConfigError(f"data.cond_dropout={self.cond_dropout} must be in [0, 1].")


@dataclasses.dataclass(frozen=True)
class SrConfig:
  """Everything one SR run needs."""
  name: str = "unnamed"        # the config's name (its file's stem for shipped configs)
  sr: SrModelConfig = SrModelConfig()   # token grids, windows, conditions
  lm: LmConfig = LmConfig()             # the transformer blocks (lm.vocab is ignored; layers even)
  mesh: MeshConfig = MeshConfig()       # devices and sharding rules
  train: TrainConfig = TrainConfig()    # optimizer, schedule, checkpoints (seq_len is ignored)
  data: SrDataConfig = SrDataConfig()   # the paired token shards

  def __post_init__(self):
    if self.lm.layers % 2:
      raise ConfigError(f"lm.layers={self.lm.layers} must be even for the SR model: layers "
                        "alternate spatial and temporal windows in pairs.")
