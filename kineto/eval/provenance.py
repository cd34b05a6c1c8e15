"""What produced a figure: the code version and the fingerprints of the data and models.

Every eval.json carries these, so a number can be traced to the exact checkpoint, dataset
split and source tree behind it. The fingerprints are the ones the token shards already
record (`train/data/shards.py`): a model's config hash and weights hash, and the sha256 of
the dataset's `dataset_info.json`.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import pathlib
import subprocess

import numpy as np
from flax import nnx

import configs
from train.data.shards import fingerprint

ROOT = pathlib.Path(__file__).resolve().parents[2]


def code_version() -> dict:
  """The package version and, in a git checkout, the commit and whether the tree was dirty."""
  try:
    version = importlib.metadata.version("kineto")
  except importlib.metadata.PackageNotFoundError:
    version = None
  out = {"kineto": version, "git_commit": None, "git_dirty": None}
  try:
    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True,
                                    timeout=10, check=True).stdout.strip()
    out["git_commit"] = git("rev-parse", "HEAD")
    out["git_dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
  except (OSError, subprocess.SubprocessError):
    pass  # an installed copy without git: the version is what there is
  return out


def dataset_identity(data_dir: str | pathlib.Path, split: str, examples: int) -> dict:
  data_dir = pathlib.Path(data_dir)
  info = data_dir / "dataset_info.json"
  return {"path": str(data_dir.absolute()), "split": split, "split_examples": int(examples),
          "fingerprint": hashlib.sha256(info.read_bytes()).hexdigest() if info.is_file() else None}


def model_fingerprint(config, model) -> dict:
  """`fingerprint` (config hash + weights hash) of any NNX model and its config dataclass."""
  flat = {}

  def walk(prefix: str, tree) -> None:
    if isinstance(tree, dict):
      for key in tree:
        walk(f"{prefix}/{key}", tree[key])
    else:
      flat[prefix] = np.asarray(tree)

  walk("", nnx.to_pure_dict(nnx.state(model, nnx.Param)))
  return fingerprint(configs.to_dict(config), flat)
