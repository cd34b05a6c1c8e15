"""Files that a crash never leaves half-written: write under a temporary name, then rename.

A reader (a resumed run, the demo's stage list, a user) sees the old file or the new one,
never a torn one; summaries, manifests and stage records all go through here.
"""
from __future__ import annotations

import json
import os
import pathlib


def write_json(path: str | os.PathLike, data) -> pathlib.Path:
  """Writes `data` as indented JSON to `path` atomically (temp file in the same directory +
  rename); returns the path."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_text(json.dumps(data, indent=1) + "\n")
  os.replace(tmp, path)
  return path


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically, as `write_json` does; returns the path."""
  path = pathlib.Path(path)
  tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
  tmp.write_bytes(data)
  os.replace(tmp, path)
  return path
