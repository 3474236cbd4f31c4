"""One run per workdir (asg_jax/locking.py): a second run is refused at once with one line
naming the first's pid and host, writing nothing; the first finishes; the workdir resumes;
a lock dies with its holder (no stale lock after kill -9); builds in one data_dir take turns."""
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from asg_jax import locking, train
from tests import workdir_worker
from tests.helpers import FakeData

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = pathlib.Path(workdir_worker.__file__)


def _wait_for(path: pathlib.Path, proc: subprocess.Popen, timeout: float = 600) -> None:
  deadline = time.time() + timeout
  while not path.exists():
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    assert time.time() < deadline, f"{path} did not appear"
    time.sleep(0.05)


def _holder(code: str) -> subprocess.Popen:
  """A python process running `code` (asg_jax.locking imported), then printing "ready" and
  waiting for its stdin to close."""
  script = "import sys\nfrom asg_jax import locking\n" + textwrap.dedent(code) + \
      "\nprint('ready', flush=True)\nsys.stdin.read()\n"
  proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True, cwd=REPO)
  assert proc.stdout.readline().strip() == "ready"
  return proc


@pytest.mark.slow
def test_a_second_run_is_refused_naming_the_first_which_finishes_and_the_workdir_resumes(
    tmp_path, capsys):
  workdir = tmp_path / "w"
  first = subprocess.Popen([sys.executable, str(WORKER), "--workdir", str(workdir),
                            "--pause-before", "checkpoints/2"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, cwd=REPO)
  try:
    _wait_for(pathlib.Path(f"{workdir}.ready"), first)   # paused mid-run, holding the lock
    def files():   # what a second run would write (the first is still logging events)
      return {p.name: p.read_bytes() for p in workdir.iterdir()
              if p.is_file() and not p.name.startswith("events.")}
    before = files()
    second = subprocess.run([sys.executable, "-m", "asg_jax.main", "--config",
                             "configs/demo.py:runlocal", "--workdir", str(workdir)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    expected = (f"ERROR: {workdir} is in use by another run: pid {first.pid} on host "
                f"{socket.gethostname()}, started ")
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert second.returncode == 2 and len(lines) == 1, second.stderr[-3000:]
    assert lines[0].startswith(expected) and lines[0].endswith(
        "; wait for it to finish (or stop it), or pass another --workdir"), lines[0]
    # refused before writing anything: no data built, config.json and the rest unchanged
    assert files() == before and ".lock" in before and "config.json" in before
    assert not (workdir / "data").exists()
    # the same in a notebook: train_and_evaluate raises
    with pytest.raises(locking.WorkdirBusyError, match=f"pid {first.pid} on host "):
      train.train_and_evaluate(workdir_worker.get_config(), str(workdir))
    pathlib.Path(f"{workdir}.go").touch()
    out, _ = first.communicate(timeout=600)
  finally:
    first.kill()
  assert first.returncode == 0 and "worker done: 4 steps" in out, out[-3000:]
  # the workdir resumes: two more steps continue from the first run's last checkpoint
  config = workdir_worker.get_config()
  config.unlock()
  config.train.num_steps = workdir_worker.STEPS + 2
  summary = train.train_and_evaluate(config, str(workdir), data=FakeData(config))
  assert f"Resuming from step {workdir_worker.STEPS}" in capsys.readouterr().out
  assert summary["steps"] == workdir_worker.STEPS + 2
  # the lock file names its last holder (this process), who no longer holds it
  assert json.loads((workdir / ".lock").read_text())["pid"] == os.getpid()
  with locking.hold_workdir(str(workdir)):
    pass


def test_a_lock_dies_with_its_holder_and_is_reentrant_within_a_process(tmp_path):
  workdir = str(tmp_path / "w")
  holder = _holder(f"locking.acquire_workdir({workdir!r})")
  with pytest.raises(locking.WorkdirBusyError, match=f"pid {holder.pid} on host "):
    locking.acquire_workdir(workdir)
  # another process index of a multi-host job locks its own file
  with locking.hold_workdir(workdir, process_index=1):
    assert os.path.exists(os.path.join(workdir, ".lock.process1"))
  holder.kill()                                   # kill -9: the kernel drops the lock
  holder.wait()
  with locking.hold_workdir(workdir):
    with locking.hold_workdir(workdir):           # the command line, then train_and_evaluate
      pass
    other = subprocess.run([sys.executable, "-c", f"from asg_jax import locking; "
                            f"locking.acquire_workdir({workdir!r})"], capture_output=True,
                           text=True, cwd=REPO)
    assert other.returncode != 0 and "WorkdirBusyError" in other.stderr   # still held
  other = subprocess.run([sys.executable, "-c", f"from asg_jax import locking; "
                          f"locking.acquire_workdir({workdir!r})"], cwd=REPO)
  assert other.returncode == 0                    # released by the outermost block


def test_builds_in_one_data_dir_take_turns(tmp_path, capsys):
  """Another process (a run of another workdir sharing config.data.data_dir) is preparing
  mimic_cxr/demo there: `build.prepare` waits for it, naming it, then goes on."""
  from asg_jax.data.builders import build  # pylint: disable=import-outside-toplevel
  data_dir, manual_dir = tmp_path / "data", tmp_path / "empty_manual"
  manual_dir.mkdir()
  path = str(data_dir / ".mimic_cxr.demo.build.lock")
  holder = _holder(f"import contextlib\nstack = contextlib.ExitStack()\n"
                   f"stack.enter_context(locking.take_turns({path!r}, 'preparing it'))")
  done = []

  def prepare():
    try:
      build.prepare("mimic_cxr", "demo", str(data_dir), str(manual_dir))
    except Exception as e:  # pylint: disable=broad-except
      done.append(e)       # an empty manual_dir: the build itself fails, after its turn
    done.append(time.time())
  thread = threading.Thread(target=prepare)
  thread.start()
  thread.join(timeout=2.0)
  assert thread.is_alive() and not done                   # waiting for its turn
  released = time.time()
  holder.stdin.close()                                    # the other build finishes
  thread.join(timeout=120)
  holder.wait()
  assert done and done[-1] >= released
  out = capsys.readouterr().out
  assert out.startswith(f"Waiting for pid {holder.pid} on host {socket.gethostname()}")
  assert f" to finish preparing mimic_cxr/demo in {data_dir} ..." in out


def test_evaluating_into_a_held_workdir_is_refused_and_elsewhere_is_not(tmp_path, capsys):
  """`python -m asg_jax.evaluate` writing into the workdir (the default `--out`) takes its
  lock; with `--out` elsewhere it only reads and takes none."""
  from asg_jax import evaluate  # pylint: disable=import-outside-toplevel
  workdir = tmp_path / "run"
  holder = _holder(f"locking.acquire_workdir({str(workdir)!r})")
  try:
    argv = ["evaluate", "--workdir", str(workdir), "--config", "configs/transfer/demo.py:tiny"]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and "--out" in err
    # elsewhere: no lock taken, so it goes on (and fails later: the workdir has no model)
    with pytest.raises(FileNotFoundError, match="config.json"):
      evaluate.main(argv + ["--out", str(tmp_path / "elsewhere")])
  finally:
    holder.stdin.close()
    holder.wait(timeout=30)
  assert not (workdir / "transfer").exists()
