"""File-system problems through the command line (asg_jax/os_errors.py, asg_jax/main.py):
one `ERROR:` line on stderr, exit status 2, nothing written before a folder is found unusable,
the traceback back with --verbosity, and a full disk followed by a rerun that resumes."""
import errno
import json
import os
import pathlib
import subprocess
import sys

import pytest

from tests import workdir_worker

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = pathlib.Path(workdir_worker.__file__)


def _run(args, timeout=600):
  return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                        timeout=timeout, cwd=REPO)


def _error_line(proc) -> str:
  """The one line the command printed on stderr (asserting there is only that)."""
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert len(lines) == 1 and lines[0].startswith("ERROR: "), proc.stderr[-3000:]
  return lines[0]


@pytest.mark.slow
def test_a_missing_or_non_folder_manual_dir_is_one_line_and_nothing_is_written(tmp_path):
  workdir = tmp_path / "w"
  main = ["-m", "asg_jax.main", "--config", "configs/own_data.py", "--workdir", workdir]
  line = _error_line(_run(main + [f"--config.data.manual_dir={tmp_path / 'missing'}"]))
  assert line == f"ERROR: config.data.manual_dir = '{tmp_path / 'missing'}': no such folder"
  (tmp_path / "pairs.csv").write_text("image,report\n")
  line = _error_line(_run(main + [f"--config.data.manual_dir={tmp_path / 'pairs.csv'}"]))
  assert line.endswith("pairs.csv' is a file, not a folder")
  assert not workdir.exists()                    # no config.json, not even the folder
  workdir.write_text("")
  assert _error_line(_run(main + [f"--config.data.manual_dir={tmp_path}"])) == \
      f"ERROR: --workdir {workdir} is a file, not a folder"


@pytest.mark.slow
def test_a_read_only_workdir_is_one_line():
  """A read-only file system (a tmpfs mounted read-only in a private mount namespace)."""
  probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
  if probe.returncode != 0:
    pytest.skip("unshare -rm (a user + mount namespace) is not available here")
  import tempfile  # pylint: disable=import-outside-toplevel
  with tempfile.TemporaryDirectory() as folder:
    for workdir, what in ((folder, "cannot be written"),
                          (os.path.join(folder, "new"), f"cannot be created in {folder}")):
      proc = subprocess.run(
          ["unshare", "-rm", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', folder,
           sys.executable, "-m", "asg_jax.main", "--config", "configs/demo.py:runlocal",
           "--workdir", workdir], capture_output=True, text=True, timeout=300, cwd=REPO)
      assert _error_line(proc) == \
          f"ERROR: --workdir {workdir} {what}: it is on a read-only file system"


@pytest.mark.slow
def test_a_wrapped_disk_full_error_is_one_line_and_verbosity_brings_the_traceback(tmp_path):
  """ENOSPC raised under a RuntimeError (as libraries wrap it), before the model is built."""
  workdir = tmp_path / "w"
  line = _error_line(_run([WORKER, "--workdir", workdir, "--main", "--enospc-config"]))
  assert line.startswith(f"ERROR: no space left on the device writing {workdir}/config.json (")
  assert "free there" in line and line.endswith("it resumes from the last complete checkpoint")
  proc = _run([WORKER, "--workdir", workdir, "--main", "--enospc-config", "--verbosity", "0"])
  assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr
  assert "RuntimeError: could not save the config" in proc.stderr
  assert "No space left on device" in proc.stderr


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_rerun_resumes(tmp_path):
  """The second checkpoint's orbax writes fail with ENOSPC (in orbax's own threads, wrapped
  by it); then, with space again, the same command resumes from the first."""
  workdir = tmp_path / "w"
  line = _error_line(_run([WORKER, "--workdir", workdir, "--main", "--enospc", "checkpoints/4."]))
  assert line.startswith(f"ERROR: no space left on the device writing {workdir}/checkpoints/4.")
  assert "a checkpoint of this run takes about " in line
  rerun = _run([WORKER, "--workdir", workdir, "--main"])
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert "Resuming from step 2" in rerun.stdout
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["steps"] == workdir_worker.STEPS and summary["stopped"] == "completed"


def test_describe_finds_the_problem_however_it_was_wrapped(tmp_path):
  from asg_jax import os_errors   # pylint: disable=import-outside-toplevel
  # TensorStore's message inside orbax's exception group, raised during another error
  store = ValueError(f'RESOURCE_EXHAUSTED: Error writing "params/0" at local file "{tmp_path}/'
                     f'x/": Failed writing: "{tmp_path}/x/d/9f": Failed to write 612292 bytes '
                     f"to file 6: No space left on device [os_error_code='28']")
  try:
    try:
      raise KeyError("while saving")
    except KeyError:
      raise ExceptionGroup("commit failed", [RuntimeError("other"), store])  # noqa: B904
  except ExceptionGroup as e:
    line = os_errors.describe(e, str(tmp_path))
  assert line.startswith(f"no space left on the device writing {tmp_path}/x/d/9f (0.6 MB more "
                         f"were being written; ") and "free there" in line
  quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), "/q/f")
  assert os_errors.describe(quota).startswith("no space left on the device writing /q/f")
  denied = PermissionError(errno.EACCES, "Permission denied", "/w/config.json")
  wrapped = RuntimeError("save")
  wrapped.__cause__ = denied
  assert os_errors.describe(wrapped) == "/w/config.json: Permission denied"
  assert os_errors.describe(FileNotFoundError("config.data.manual_dir = '/m' is not a folder")) \
      == "config.data.manual_dir = '/m' is not a folder"
  assert os_errors.describe(ValueError("shapes do not match")) is None   # a bug: traceback
