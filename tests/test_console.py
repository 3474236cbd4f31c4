"""asg_jax.console: the quiet console drops library noise only; bars, steps, native stderr."""
import logging
import os

import pytest
from absl import logging as absl_logging

from asg_jax import console


@pytest.fixture
def quiet_console():
  """console.configure(verbose=False), undone afterwards (other tests keep their logging)."""
  absl_logger = logging.getLogger("absl")
  saved = (absl_logging.get_verbosity(), logging.getLogger().level, absl_logger.level,
           console._configured_quiet)  # pylint: disable=protected-access
  console.configure(verbose=False)
  yield
  absl_logger.removeFilter(console._FILTER)  # pylint: disable=protected-access
  absl_logging.get_absl_handler().removeFilter(console._FILTER)  # pylint: disable=protected-access
  absl_logging.set_verbosity(saved[0])
  logging.getLogger().setLevel(saved[1])
  absl_logger.setLevel(saved[2])
  console._configured_quiet = saved[3]  # pylint: disable=protected-access


class _Capture(logging.Handler):
  def __init__(self):
    super().__init__(logging.DEBUG)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


def test_quiet_console_keeps_warnings_but_drops_info_and_tfds_chatter(quiet_console):
  del quiet_console
  absl_logger = logging.getLogger("absl")
  capture = _Capture()
  absl_logger.addHandler(capture)
  try:
    for level, path, msg in [
        (logging.INFO, "/x/orbax/checkpoint/checkpoint_manager.py", "orbax info"),
        (logging.WARNING, "/x/tensorflow_datasets/core/features/feature.py", "tfds deprecation"),
        (logging.ERROR, "/x/tensorflow_datasets/core/dataset_builder.py", "tfds error"),
        (logging.WARNING, "/x/jax/_src/xla_bridge.py", "jax warning")]:
      if absl_logger.isEnabledFor(level):     # what Logger.log checks first
        absl_logger.handle(absl_logger.makeRecord("absl", level, path, 1, msg, (), None))
  finally:
    absl_logger.removeHandler(capture)
  assert capture.messages == ["tfds error", "jax warning"]
  assert console.is_quiet()


def test_progress_yields_everything_and_draws_only_when_enabled(monkeypatch, capsys):
  monkeypatch.setenv(console.PROGRESS_ENV, "0")
  assert list(console.progress(range(5), total=5, desc="counting")) == list(range(5))
  assert capsys.readouterr().err == ""
  monkeypatch.setenv(console.PROGRESS_ENV, "1")
  make = console.with_progress(lambda: iter("abc"), desc="letters", total=3)
  assert list(make()) == ["a", "b", "c"]
  assert "letters" in capsys.readouterr().err


def test_step_prints_one_line_with_the_seconds(capsys):
  with console.step("Compiling the train step"):
    print("", end="")
  out = capsys.readouterr().out
  assert out.startswith("Compiling the train step ... ") and out.endswith(" s\n")
  assert out.count("\n") == 1


def test_native_stderr_is_silenced_only_inside_the_block(capfd):
  with console.quiet_native_stderr():
    os.write(2, b"oneDNN custom operations are on\n")
  os.write(2, b"after\n")
  err = capfd.readouterr().err
  assert "oneDNN" not in err and "after" in err


def test_tfds_prints_are_hidden_only_on_a_quiet_console(quiet_console, capsys):
  del quiet_console
  with console.quiet_tfds_prints():
    print("Downloading and preparing dataset Unknown size")
  assert capsys.readouterr().out == ""
  console._configured_quiet = False  # pylint: disable=protected-access
  with console.quiet_tfds_prints():
    print("shown")
  assert capsys.readouterr().out == "shown\n"
