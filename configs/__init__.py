"""Named configs and the `--set a.b=c` override machinery.

`load("lm_tiny")` or `load("configs/lm_tiny.py")` runs that file's `get_config()`;
`override(cfg, ["lm.layers=4", "mesh.fsdp=-1"])` returns a new config with the values
parsed by the type of the field they replace. Unknown keys and values of the wrong type
raise `ConfigError` naming the valid choices.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib
import types
import typing

from configs.schema import DEFAULT_RULES, MESH_AXES, Config, ConfigError, LmConfig, MeshConfig, TrainConfig, VocabConfig

__all__ = ["Config", "ConfigError", "LmConfig", "MeshConfig", "TrainConfig", "VocabConfig", "DEFAULT_RULES",
           "MESH_AXES", "available", "from_dict", "load", "override", "to_dict"]

_HERE = pathlib.Path(__file__).parent


def available() -> list[str]:
  """Names of the config files shipped in `configs/`."""
  return sorted(p.stem for p in _HERE.glob("*.py") if not p.stem.startswith("_") and p.stem != "schema")


def load(name_or_path: str, overrides: typing.Sequence[str] = ()) -> Config:
  """Runs `get_config()` of a named config or a config file, then applies `overrides`."""
  path = pathlib.Path(name_or_path)
  if not path.suffix:
    path = _HERE / f"{name_or_path}.py"
  if not path.is_file():
    raise ConfigError(f"config {name_or_path!r} not found; pass a path to a .py file or one of "
                      f"{available()}.")
  spec = importlib.util.spec_from_file_location(f"kineto_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"config {path}:{e.lineno}: {e.msg}; fix the file.") from None
  except Exception as e:  # an import or name error in the file: the file is at fault, say where
    raise ConfigError(f"config {path} fails to load ({type(e).__name__}: {e}); fix the file.") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} has no get_config() function.")
  try:
    cfg = module.get_config()
  except ConfigError:
    raise
  except Exception as e:
    raise ConfigError(f"config {path}: get_config() raised {type(e).__name__}: {e}; fix the file.") from None
  return override(cfg, overrides)


def override(cfg, assignments: typing.Sequence[str]):
  """Applies `key.path=value` assignments to a frozen dataclass tree.

  All assignments are applied together and validated once, so their order does not
  matter (`lm.heads=4 lm.kv_heads=4` and the reverse both work).
  """
  tree: dict = {}
  for assignment in assignments:
    key, sep, raw = assignment.partition("=")
    if not sep:
      raise ConfigError(f"override {assignment!r} is not of the form key.path=value.")
    *sections, leaf = key.strip().split(".")
    node = tree
    for section in sections:
      node = node.setdefault(section, {})
      if not isinstance(node, dict):
        raise ConfigError(f"override {assignment!r} conflicts with another override of {section!r}.")
    node[leaf] = raw.strip()
  return _apply(cfg, tree, "")


def _apply(node, tree: dict, prefix: str):
  fields = {f.name for f in dataclasses.fields(node)}
  hints = typing.get_type_hints(type(node))
  changes = {}
  for name, value in tree.items():
    key = prefix + name
    if name not in fields:
      raise ConfigError(f"unknown config key {key!r}: {type(node).__name__} has no field "
                        f"{name!r}; valid fields are {sorted(fields)}.")
    current = getattr(node, name)
    if isinstance(value, dict):
      if not dataclasses.is_dataclass(current):
        raise ConfigError(f"config key {key!r} is a {type(current).__name__}, not a section.")
      changes[name] = _apply(current, value, key + ".")
    elif dataclasses.is_dataclass(current):
      raise ConfigError(f"config key {key!r} names a section; set one of its fields "
                        f"{[f.name for f in dataclasses.fields(current)]}.")
    else:
      changes[name] = _parse(value, hints[name], key)
  return dataclasses.replace(node, **changes)


def _parse(raw: str, hint, key: str):
  if hint is bool:
    if raw.lower() in ("true", "1", "yes"):
      return True
    if raw.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"{key}={raw!r}: expected a bool (true/false).")
  if hint in (int, float, str):
    try:
      value = hint(raw)
    except ValueError:
      raise ConfigError(f"{key}={raw!r}: expected {hint.__name__}.") from None
    if hint is float and not math.isfinite(value):  # inf and nan parse, then poison a run
      raise ConfigError(f"{key}={raw!r}: expected a finite number.")
    return value
  args = typing.get_args(hint)
  if typing.get_origin(hint) is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, str, bool):
    # A homogeneous tuple: comma-separated items, e.g. vidtok.fsq_levels=4,4,4,4,4 (or "(4, 4)").
    items = [item.strip() for item in raw.strip().strip("()").split(",") if item.strip()]
    return tuple(_parse(item, args[0], key) for item in items)
  if typing.get_origin(hint) in (tuple, types.UnionType, typing.Union):
    raise ConfigError(f"{key} is a structured field ({hint}); edit it in the config file, "
                      "not with --set.")
  raise ConfigError(f"{key}: cannot parse a value of type {hint}.")


def from_dict(cls, data: dict):
  """Rebuilds a config dataclass from `to_dict` output (e.g. checkpoint metadata); JSON
  lists become the tuples the dataclasses hold."""
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for f in dataclasses.fields(cls):
    if f.name not in data:
      continue  # a field added since the checkpoint was written keeps its default
    value, hint = data[f.name], hints[f.name]
    if dataclasses.is_dataclass(hint):
      value = from_dict(hint, value)
    elif isinstance(value, list):
      value = _tuples(value)
    kwargs[f.name] = value
  return cls(**kwargs)


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def to_dict(cfg) -> dict:
  """A JSON-ready dict of a config (for summaries and checkpoint metadata)."""
  return dataclasses.asdict(cfg)
