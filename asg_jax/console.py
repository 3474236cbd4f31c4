"""What the command-line jobs print: a quiet console, progress bars, one-line steps.

    console.configure(verbose=False)        # absl / TF / orbax / tfds INFO lines off
    with console.quiet_native_stderr():     # TF's C++ start-up lines (oneDNN, absl::InitializeLog)
      import tensorflow as tf
    for x in console.progress(items, total=n, desc="Generating demo studies"):
      ...
    with console.step("Compiling the train step"):   # "Compiling the train step ... 58 s"
      ...

By default (`verbose=False`) the console shows the project's own lines only (its progress
line, evaluation lines, warnings it prints, where the results are): library log records below
WARNING are dropped, and so are tensorflow_datasets' records below ERROR (deprecation notes
about its own API, "variant folder has no dataset_info.json" before a first build). The CLIs
pass `verbose=True` when the user gives `--verbosity` (absl's flag), which restores every
library line.

Progress bars (tqdm) are drawn when stderr is a terminal or a notebook kernel runs the code;
in a log file (stderr redirected) they print nothing, so a log holds whole lines only. The
environment variable `ASG_JAX_PROGRESS=1` / `=0` forces them on / off.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
PROGRESS_ENV = "ASG_JAX_PROGRESS"

_configured_quiet = False


def bars_enabled() -> bool:
  """Whether progress bars are drawn (a terminal or a notebook; `ASG_JAX_PROGRESS` wins)."""
  forced = os.environ.get(PROGRESS_ENV, "").strip().lower()
  if forced in ("1", "true", "yes", "on"):
    return True
  if forced in ("0", "false", "no", "off"):
    return False
  if "ipykernel" in sys.modules:
    return True
  try:
    return sys.stderr.isatty()
  except (AttributeError, ValueError):
    return False


def progress(iterable: Iterable[T], *, total: int | None = None, desc: str = "",
             unit: str = "it", leave: bool = False) -> Iterator[T]:
  """`iterable` with a tqdm bar on stderr (when `bars_enabled()`), else `iterable` as it is.

  The bar disappears when done (`leave=False`): the line the caller prints next says what
  was done.
  """
  if not bars_enabled():
    yield from iterable
    return
  if "ipykernel" in sys.modules:
    from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  else:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  with tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, file=sys.stderr,
            dynamic_ncols=True) as bar:
    yield from bar


@contextlib.contextmanager
def step(text: str):
  """Prints `text ...` now and ` <seconds> s` on the same line when the block ends."""
  print(f"{text} ...", end="", flush=True)
  t0 = time.time()
  try:
    yield
  finally:
    print(f" {time.time() - t0:.0f} s", flush=True)


class _QuietLibraries(logging.Filter):
  """Drops tensorflow_datasets' records below ERROR (its deprecation notes and build chatter)."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno >= logging.ERROR:
      return True
    return "tensorflow_datasets" not in (record.pathname or "")


_FILTER = _QuietLibraries()


def configure(verbose: bool = False) -> None:
  """Sets up the console of a CLI job (call once, after absl parsed the flags).

  Args:
    verbose: keep every library log line (the user gave `--verbosity`); otherwise records
      below WARNING (and tfds' below ERROR) are dropped and tfds draws no progress bars
      unless `bars_enabled()`.
  """
  global _configured_quiet
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if verbose:
    return
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger().setLevel(logging.WARNING)
  # every absl-logging library (tfds, orbax, clu, jax) logs through the "absl" logger
  for target in (logging.getLogger("absl"), absl_logging.get_absl_handler()):
    if _FILTER not in target.filters:
      target.addFilter(_FILTER)
  _configured_quiet = True
  if not bars_enabled():
    try:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      tfds.disable_progress_bar()
    except ImportError:
      pass


def is_quiet() -> bool:
  """Whether `configure(verbose=False)` ran in this process."""
  return _configured_quiet


@contextlib.contextmanager
def quiet_tfds_prints():
  """Hides what tensorflow_datasets prints on stdout itself while building a dataset
  ("Downloading and preparing dataset Unknown size ...", "Dataset ... downloaded and
  prepared to ...") when the console is quiet; the project prints its own line instead."""
  if not _configured_quiet:
    yield
    return
  with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
    yield


@contextlib.contextmanager
def quiet_native_stderr(enabled: bool = True):
  """Sends file descriptor 2 to /dev/null for the block (what C++ libraries print while
  loading: TF's "oneDNN custom operations are on", absl's "All log messages before
  absl::InitializeLog() ..."). Python's own `sys.stderr` output, tracebacks included, is
  unaffected after the block; use it around an import only."""
  if not enabled:
    yield
    return
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):
    yield
    return
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def with_progress(make_iterator, *, desc: str, total: int | None = None, unit: str = "batch"):
  """`make_iterator` (a no-argument callable returning an iterator, e.g. one evaluation
  pass) whose iterators carry a progress bar (`progress`)."""
  return lambda: progress(make_iterator(), total=total, desc=desc, unit=unit)
