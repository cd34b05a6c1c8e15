"""The one claim on an output directory and the one description of I/O failures.

Every command that writes a work directory or a dataset (`lm|tokenizer|audio train`,
`data build|demo`, `tokenize`, `demo`) claims it first with `claim(path, command)`:

- a lock file next to it (`PARENT/.NAME.lock`, so a dataset renamed into place or a work
  directory not yet made is covered too) holding the holder's pid, host and command, locked
  with `flock`: the kernel drops it when the holder dies, so a lock left by a kill is seen
  as stale, said so, and taken over; a live holder makes a second writer fail at once with
  a one-line error naming it;
- a write probe: a file created, fsynced and removed inside the directory (or its parent
  when it does not exist yet), so a read-only folder, a path that is a file or a full disk
  is a one-line error before any long work starts.

`io_problem(e)` turns an exception raised by a write (OSError, or orbax / tensorstore
errors that carry an errno's text such as RESOURCE_EXHAUSTED) into one sentence for the
CLI, which prints it and exits 2.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pathlib
import re
import socket
import sys
import time

from configs.schema import ConfigError


class WorkdirBusy(ConfigError):
  """Another live process holds the directory's lock."""


class NotWritable(ConfigError):
  """The directory cannot be written (read-only, a file, full disk, no permission)."""


def lock_path(path: pathlib.Path) -> pathlib.Path:
  return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def claim(path: str | os.PathLike, command: str, *, lock: bool = True):
  """Holds `path`'s lock and checks it can be written; yields the absolute path. The other
  processes of a multi-host run (`lock=False`) only probe: process 0 holds the lock for all."""
  path = pathlib.Path(path).absolute()
  if path.exists() and not path.is_dir():
    raise NotWritable(f"{path} exists and is a file, not a directory; choose another path.")
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise NotWritable(f"cannot create {path.parent}: {_reason(e)}; choose another path.") from None
  fd = _lock(path, command) if lock else None
  try:
    probe(path if path.is_dir() else path.parent)
    yield path
  finally:
    if fd is not None:
      _unlock(path, fd)


def probe(directory: pathlib.Path) -> None:
  """Creates, fsyncs and removes a small file in `directory`: raises NotWritable if it cannot."""
  test = directory / f".kineto-write-probe-{socket.gethostname()}-{os.getpid()}"
  try:
    with open(test, "wb") as f:
      f.write(b"\0" * 4096)  # a full disk refuses a block; an empty file might still fit
      f.flush()
      os.fsync(f.fileno())
  except OSError as e:
    raise NotWritable(f"cannot write in {directory}: {_reason(e)}; {_fix(e)}") from None
  finally:
    with contextlib.suppress(OSError):
      test.unlink()


def _lock(path: pathlib.Path, command: str) -> int:
  lock = lock_path(path)
  while True:
    try:
      fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise NotWritable(f"cannot create the lock file {lock}: {_reason(e)}; {_fix(e)}") from None
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(fd)
      os.close(fd)
      raise WorkdirBusy(f"{path} is in use by {holder}; wait for it to finish, or use another "
                        "directory.") from None
    # The holder before us may have removed the file after we opened it: lock the live one.
    try:
      same = os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(fd)
  stale = _holder(fd) if os.fstat(fd).st_size else None
  if stale:
    print(f"kineto: {path}: taking over a stale lock of {stale} (that process is gone).", file=sys.stderr)
  record = {"pid": os.getpid(), "host": socket.gethostname(), "command": command, "since": time.time()}
  try:
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
  except OSError as e:
    os.close(fd)
    raise NotWritable(f"cannot write the lock file {lock}: {_reason(e)}; {_fix(e)}") from None
  return fd


def _unlock(path: pathlib.Path, fd: int) -> None:
  with contextlib.suppress(OSError):
    lock_path(path).unlink()  # before the unlock: a waiting opener re-checks the inode
  os.close(fd)


def _holder(fd: int) -> str:
  try:
    record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record["since"]))
    return f"`kineto {record['command']}` (pid {record['pid']} on {record['host']}, since {since})"
  except (OSError, ValueError, KeyError, TypeError):
    return "another kineto process"


# --- I/O failures as one sentence --------------------------------------------------------

_REASONS = {
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENOENT: "a folder on the path does not exist",
}
# Text that orbax, tensorstore and XLA put in errors that are really one of the above.
_TEXTS = (("no space left on device", errno.ENOSPC), ("resource_exhausted", errno.ENOSPC),
          ("read-only file system", errno.EROFS), ("permission denied", errno.EACCES),
          ("not a directory", errno.ENOTDIR))


def _reason(e: OSError) -> str:
  return _REASONS.get(e.errno, e.strerror or str(e))


def _fix(e: OSError) -> str:
  if e.errno in (errno.ENOSPC, errno.EDQUOT):
    return "free some space (the same command resumes) or choose another directory."
  return "choose another directory, or fix its permissions."


def io_problem(e: BaseException) -> str | None:
  """One sentence for an exception that is an I/O failure (its cause chain included), or None."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in _REASONS:
      where = e.filename or "a file"
      return f"{where}: {_reason(e)}; {_fix(e)}"
    text = str(e).lower()
    for needle, code in _TEXTS:
      if needle in text:
        fake = OSError(code, os.strerror(code))
        path = re.search(r'"(/[^"]+)"', str(e))  # orbax and tensorstore quote the file they wrote
        return f"{path.group(1) if path else 'writing'}: {_reason(fake)}; {_fix(fake)}"
    e = e.__cause__ or e.__context__
  return None


class _DropIOTracebacks(logging.Filter):
  """Drops log records whose exception is an I/O failure (the CLI reports it in one line)."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and record.exc_info[1] is not None and io_problem(record.exc_info[1]))


def quiet_io_tracebacks() -> None:
  """Keeps orbax's background threads from logging a full disk's traceback (absl's logger)."""
  logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropIOTracebacks) for f in logger.filters):
    logger.addFilter(_DropIOTracebacks())
