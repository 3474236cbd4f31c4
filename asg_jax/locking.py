"""Exclusive file locks that the operating system releases when their holder dies.

    with locking.hold_workdir(workdir, jax.process_index()):   # one training run per workdir
      ...                                  # WorkdirBusyError at once if another run holds it
    with locking.take_turns(path, "preparing mimic_cxr/demo in DIR"):   # waits its turn
      ...

Both are `fcntl.flock` locks on a small file: a run killed in any way (`kill -9`, OOM, a
lost machine) leaves no stale lock, because the kernel drops the lock with the process. The
lock file itself stays (removing it would race with a run opening it) and holds the current
holder's pid, host and start time, so that the refused run can name them.

`hold_workdir` is re-entrant within one process (the command line holds it for the whole job
and `train.train_and_evaluate` holds it again inside); in a multi-host job process `i > 0`
locks `.lock.process{i}`, so the processes of one job never wait for each other while a
second job started on the same workdir is refused on every process.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from typing import Iterator

LOCK_FILE = ".lock"


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir's lock (the message names its pid and host)."""


def lock_path(workdir: str, process_index: int = 0) -> str:
  """The lock file of `workdir` for one process of a (multi-host) job."""
  name = LOCK_FILE if process_index == 0 else f"{LOCK_FILE}.process{process_index}"
  return os.path.join(os.path.abspath(workdir), name)


def _holder(fd: int) -> dict:
  """What the holder wrote into the lock file ({} while it has not written yet)."""
  try:
    os.lseek(fd, 0, os.SEEK_SET)
    return json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
  except (OSError, ValueError):
    return {}


def _describe(holder: dict) -> str:
  if not holder:
    return "another process (it has not written its pid yet)"
  since = holder.get("since")
  started = f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" \
      if isinstance(since, (int, float)) else ""
  return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{started}"


def _write_holder(fd: int) -> None:
  record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "argv": sys.argv[:8]}
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, json.dumps(record).encode("utf-8"))


# realpath of the lock file -> [fd, depth]: the locks this process holds (re-entrant)
_HELD: dict[str, list] = {}


def acquire_workdir(workdir: str, process_index: int = 0) -> None:
  """Take the workdir's lock for this process (creating the workdir), or raise at once.

  Re-entrant: each call is matched by one `release_workdir`; a process that exits without
  releasing loses the lock anyway (the command line relies on that).

  Raises:
    WorkdirBusyError: another process holds it (the message names its pid and host).
    OSError: the workdir cannot be created or written.
  """
  path = os.path.realpath(lock_path(workdir, process_index))
  if path in _HELD:
    _HELD[path][1] += 1
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    holder = _holder(fd)
    os.close(fd)
    raise WorkdirBusyError(
        f"{os.path.abspath(workdir)} is in use by another run: {_describe(holder)}; wait for "
        f"it to finish (or stop it), or pass another --workdir") from None
  except BaseException:
    os.close(fd)
    raise
  _write_holder(fd)
  _HELD[path] = [fd, 1]


def release_workdir(workdir: str, process_index: int = 0) -> None:
  """Undo one `acquire_workdir`; the lock is dropped when the outermost one is undone."""
  path = os.path.realpath(lock_path(workdir, process_index))
  held = _HELD.get(path)
  if held is None:
    return
  held[1] -= 1
  if held[1] == 0:
    del _HELD[path]
    fcntl.flock(held[0], fcntl.LOCK_UN)
    os.close(held[0])


@contextlib.contextmanager
def hold_workdir(workdir: str, process_index: int = 0) -> Iterator[None]:
  """The workdir's lock for the duration of the block (see `acquire_workdir`)."""
  acquire_workdir(workdir, process_index)
  try:
    yield
  finally:
    release_workdir(workdir, process_index)


@contextlib.contextmanager
def take_turns(path: str, what: str) -> Iterator[None]:
  """An exclusive lock on the file `path` for the block, waiting for it when another
  process holds it (printing one line that names the holder and `what` both do). In a
  folder this process cannot write, no lock is taken (it cannot write what it guards)."""
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
      raise
    fd = None
  if fd is None:
    yield
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"Waiting for {_describe(_holder(fd))} to finish {what} ...", flush=True)
      fcntl.flock(fd, fcntl.LOCK_EX)
    _write_holder(fd)
    try:
      yield
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
