"""Files that a crash never leaves half-written: write under a temporary name, then rename.

A reader (a resumed run, the demo's stage list, a user) sees the old file or the new one,
never a torn one; summaries, manifests, samples, GIFs and stage records all go through here.
The temporary file sits in the target's directory (a rename across file systems is not
atomic), is fsynced before the rename, and the rename replaces a symlink at the target
instead of writing through it: a `sample.txt` that links elsewhere never overwrites that file.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
  """Yields a temporary path next to `path` (`.NAME.tmp-PID.SUFFIX`: the same suffix, so
  writers that pick a format by the name still do); when the block exits cleanly the file is
  fsynced and renamed onto `path`. On an error the temporary file is removed and `path` is
  left as it was; one a killed writer left is removed by the next write."""
  path = pathlib.Path(path)
  _remove_stale_temporaries(path)
  tmp = path.with_name(f"{temporary_prefix(path)}{os.getpid()}{path.suffix}")
  try:
    yield tmp
    with open(tmp, "rb+") as f:  # a crash after the rename must not leave an empty file
      os.fsync(f.fileno())
    os.replace(tmp, path)  # replaces a symlink at `path` itself, never its target
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """Writes `data` to `path` atomically; returns the path."""
  with atomic_path(path) as tmp:
    tmp.write_bytes(data)
  return pathlib.Path(path)


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """Writes `text` (UTF-8) to `path` atomically; returns the path."""
  return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, data) -> pathlib.Path:
  """Writes `data` as indented JSON to `path` atomically; returns the path."""
  return write_text(path, json.dumps(data, indent=1) + "\n")


def temporary_prefix(path: str | os.PathLike) -> str:
  """How the names of `path`'s temporary files (`atomic_path`) begin."""
  return f".{pathlib.Path(path).name}.tmp-"


def _remove_stale_temporaries(path: pathlib.Path) -> None:
  """Removes the temporary files of `path` that a killed writer left (its process is gone)."""
  for tmp in path.parent.glob(f"{temporary_prefix(path)}*"):
    pid = tmp.name[len(temporary_prefix(path)):].split(".")[0]
    if not pid.isdigit() or int(pid) == os.getpid():
      continue
    try:
      os.kill(int(pid), 0)
    except ProcessLookupError:
      tmp.unlink(missing_ok=True)
    except PermissionError:
      pass  # alive, another user's


def _fsync_dir(directory: pathlib.Path) -> None:
  """Makes a rename durable; some file systems cannot open a directory, which is harmless."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)
