"""File-system problems a user can cause, as one line: checked before anything is written,
or found inside whatever a library wrapped them in.

    problem = os_errors.check_folders(config, workdir)    # None, or the line to print
    os_errors.hold_back_library_reports()                 # quiet console: see below
    line = os_errors.describe(exc, workdir)               # None: not such a problem
    os_errors.exit_with(line)                             # the last word, exit status 2

`check_folders` is what the command line runs before it writes anything (config.json
included): the workdir must be a folder it can create or write, and an own-data
`config.data.manual_dir` must be an existing folder. `describe` walks an exception's
`__cause__` / `__context__` chain (and exception groups) for an `OSError` a user can cause —
a full disk or quota, a read-only or forbidden folder, a missing file or folder — or for a
library's error whose message is one (TensorFlow's and TensorStore's "No space left on
device"), and says what happened where: for a full disk, the free space left there and, for
a checkpoint, about how much one takes.

Libraries report such a failure of their background threads themselves (orbax logs each
failed write of an asynchronous checkpoint with its traceback: thousands of lines on a full
disk); on the quiet console `hold_back_library_reports` drops those records, as the one
line says it, and `exit_with` quiets the threads still failing while the job exits.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import sys
import threading

# errno values whose cause is the user's machine or arguments, not the program
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
               errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.EMFILE}
_MESSAGES = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
             "Read-only file system": errno.EROFS}
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _existing_ancestor(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.exists(path) and os.path.dirname(path) != path:
    path = os.path.dirname(path)
  return path


def _why_unwritable(folder: str) -> str:
  try:
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
      return "it is on a read-only file system"
  except OSError:
    pass
  return "permission denied"


def check_folders(config, workdir: str) -> str | None:
  """The one-line problem with `workdir` or `config.data.manual_dir`, or None when both
  are usable. Writes nothing."""
  workdir = os.path.abspath(workdir)
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    return f"--workdir {workdir} is a file, not a folder"
  folder = _existing_ancestor(workdir)
  if not os.path.isdir(folder):
    return f"--workdir {workdir}: {folder} is a file, not a folder"
  if not os.access(folder, os.W_OK | os.X_OK):
    what = "cannot be written" if folder == workdir else f"cannot be created in {folder}"
    return f"--workdir {workdir} {what}: {_why_unwritable(folder)}"
  data = config.get("data") if hasattr(config, "get") else None
  manual_dir = data.get("manual_dir", "") if data is not None else ""
  if manual_dir and not data.get("demo_num_studies", 0):   # the demo generates its own
    if not os.path.exists(manual_dir):
      return f"config.data.manual_dir = {manual_dir!r}: no such folder"
    if not os.path.isdir(manual_dir):
      return f"config.data.manual_dir = {manual_dir!r} is a file, not a folder"
  return None


def _chain(exc: BaseException):
  """`exc` and every exception it was raised from or during (breadth first, once each)."""
  seen, queue = set(), [exc]
  while queue:
    e = queue.pop(0)
    if e is None or id(e) in seen:
      continue
    seen.add(id(e))
    yield e
    queue.extend([e.__cause__, e.__context__] + list(getattr(e, "exceptions", ()) or ()))


def find(exc: BaseException) -> tuple[int, OSError | BaseException] | None:
  """(errno, the exception) of the first user-caused file-system problem in `exc`'s chain."""
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno in USER_ERRNOS:
      return e.errno, e
  for e in _chain(exc):
    if isinstance(e, OSError) and e.errno is None and isinstance(
        e, (FileNotFoundError, NotADirectoryError, PermissionError)):
      return errno.ENOENT, e     # a message of ours, e.g. "... manual_dir ... is not a folder"
    text = str(e)
    for message, number in _MESSAGES.items():
      if message in text:
        return number, e
  return None


def _folder_size(path: str) -> int:
  total = 0
  for root, _, files in os.walk(path):
    for name in files:
      try:
        total += os.path.getsize(os.path.join(root, name))
      except OSError:
        pass
  return total


def _mb(n: int) -> str:
  return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _disk_full(path: str, workdir: str | None, text: str) -> str:
  """The line for a full disk; `text`: the error's message (TensorStore's names the file
  and the bytes it failed to write)."""
  quoted = re.findall(r'"(/[^"]+)"', text)
  where = path or (quoted[-1] if quoted else "") or workdir or "."
  wanted = re.search(r"write (\d+) bytes", text)
  parts = [f"{_mb(int(wanted.group(1)))} more were being written"] if wanted else []
  try:
    parts.append(f"{_mb(shutil.disk_usage(_existing_ancestor(where)).free)} free there")
  except OSError:
    pass
  if workdir:
    from asg_jax import checkpoints  # pylint: disable=import-outside-toplevel
    steps = checkpoints.saved_steps(workdir)
    if steps:
      size = _folder_size(os.path.join(os.path.abspath(workdir), "checkpoints", str(steps[-1])))
      parts.append(f"a checkpoint of this run takes about {_mb(size)}")
  detail = f" ({'; '.join(parts)})" if parts else ""
  return (f"no space left on the device writing {where}{detail}: free some space (or pass "
          f"another --workdir) and rerun the same command; it resumes from the last complete "
          f"checkpoint")


def describe(exc: BaseException, workdir: str | None = None) -> str | None:
  """One line for a user-caused file-system problem anywhere in `exc`'s chain, else None."""
  found = find(exc)
  if found is None:
    return None
  number, e = found
  path = getattr(e, "filename", None) or ""
  if number in _DISK_FULL:
    return _disk_full(str(path), workdir, str(e))
  if isinstance(e, OSError) and e.errno is not None and path:
    return f"{path}: {e.strerror or os.strerror(number)}"
  return str(e).splitlines()[0] if str(e) else type(e).__name__


class _UserProblemReports(logging.Filter):
  """Drops a library's error records about a user-caused file-system problem."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno < logging.ERROR or record.name.startswith("asg_jax"):
      return True
    exc = record.exc_info[1] if record.exc_info else None
    if exc is not None and find(exc) is not None:
      return False
    message = record.getMessage()
    return not any(m in message for m in _MESSAGES)


_REPORTS = _UserProblemReports()


class _ForeignThreadQuiet:
  """`sys.stderr` that drops what threads started outside Python write through it: the
  tracebacks TensorStore's write threads print (`RuntimeError: Event loop is closed`, once
  per pending write, hundreds) after a checkpoint write has failed. Python's own threads and
  native code writing to the file descriptor are untouched."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text):
    if isinstance(threading.current_thread(), getattr(threading, "_DummyThread", ())):
      return len(text)
    return self._stream.write(text)

  def __getattr__(self, name):
    return getattr(self._stream, name)


def hold_back_library_reports() -> None:
  """Install the filter of the module docstring on the loggers libraries report through,
  and quiet the tracebacks native library threads print through `sys.stderr`."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  for target in (logging.getLogger("absl"), absl_logging.get_absl_handler(),
                 logging.getLogger()):
    if _REPORTS not in target.filters:
      target.addFilter(_REPORTS)
  if not isinstance(sys.stderr, _ForeignThreadQuiet):
    sys.stderr = _ForeignThreadQuiet(sys.stderr)


def exit_with(line: str, status: int = 2) -> None:
  """Print `ERROR: line` on stderr as the process's last word and exit with `status`: the
  background threads that keep failing while it exits (orbax's writes, TensorStore's
  callbacks on closed event loops) report nothing more."""
  logging.disable(logging.CRITICAL)
  threading.excepthook = lambda args: None
  sys.excepthook = lambda *args: None
  sys.stdout.flush()
  print(f"ERROR: {line}", file=sys.stderr, flush=True)
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  sys.exit(status)
