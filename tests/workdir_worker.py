"""A tiny training job in a process of its own, for the workdir tests
(tests/test_crash_consistency.py, tests/test_workdir_lock.py, tests/test_cli_errors.py):

    python tests/workdir_worker.py --workdir W [--kill-before REL | --pause-before REL]
                                   [--main [--enospc TEXT] [--verbosity 0]]

`--kill-before checkpoints/2`: SIGKILL itself just before the file-system commit (a rename,
replace or tree removal) whose target is `W/checkpoints/2`, as `kill -9` would at that
moment. `--pause-before REL`: at that commit, create `W.ready` beside the workdir and wait
for `W.go` (the lock is held meanwhile). `--main`: run through the command line
(`asg_jax.main`, this file as the config, FakeData for the data source); `--enospc TEXT`:
every write of orbax whose path contains TEXT fails with ENOSPC, as on a full disk;
`--enospc-config`: writing config.json fails with ENOSPC wrapped in a RuntimeError, as a
library wraps it (before the model is built: a quick failure).

Also the config file of `--main` (`get_config`): the job the tests run in-process too.
"""
import argparse
import contextlib
import errno
import os
import pathlib
import shutil
import signal
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 4


def get_config(arg=None):
  """IRA alone, one device, 4 steps, a checkpoint and an evaluation every 2 (the first two
  checkpoints both improve the best), keep 1: the fewest programs that exercise every kind
  of write (best/, best.json, checkpoints/, removing old ones)."""
  del arg
  sys.path.insert(0, str(REPO))
  from tests.helpers import demo_config  # pylint: disable=import-outside-toplevel
  return demo_config("runlocal,objective=ira", evals=("loss",), **{
      "train.num_devices": 1, "train.num_steps": STEPS, "train.checkpoint_every": 2,
      "train.log_every": 2, "eval.every_steps": 2, "train.keep_checkpoints": 1})


def hook_commits(before, lock=None):
  """Calls `before(target)` ahead of every rename / replace / tree removal in this process
  (their absolute target paths; orbax's background threads included); with `lock`, each
  call of `before` and the operation after it hold it (one at a time). Returns the function
  that removes the hooks."""
  saved = os.rename, os.replace, shutil.rmtree

  def wrap(fn, target_of):
    def wrapper(*args, **kwargs):
      with lock or contextlib.nullcontext():
        before(os.path.abspath(os.fspath(target_of(args))))
        return fn(*args, **kwargs)
    return wrapper
  os.rename = wrap(os.rename, lambda a: a[1])
  os.replace = wrap(os.replace, lambda a: a[1])
  shutil.rmtree = wrap(shutil.rmtree, lambda a: a[0])

  def unhook():
    os.rename, os.replace, shutil.rmtree = saved
  return unhook


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--kill-before", default="")
  parser.add_argument("--pause-before", default="")
  parser.add_argument("--main", action="store_true")
  parser.add_argument("--enospc", default="")
  parser.add_argument("--enospc-config", action="store_true")
  parser.add_argument("--verbosity", default="")
  args = parser.parse_args()
  workdir = os.path.abspath(args.workdir)
  sys.path.insert(0, str(REPO))

  def before(target):
    if args.kill_before and target == os.path.join(workdir, args.kill_before):
      os.kill(os.getpid(), signal.SIGKILL)
    if args.pause_before and target == os.path.join(workdir, args.pause_before):
      pathlib.Path(workdir + ".ready").write_text(str(os.getpid()))
      while not os.path.exists(workdir + ".go"):
        time.sleep(0.05)
  hook_commits(before)

  if args.enospc:
    from etils import epath  # pylint: disable=import-outside-toplevel
    cls = type(epath.Path(workdir))
    write_text = cls.write_text

    def full_disk(self, *a, **k):
      if args.enospc in os.fspath(self):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(self))
      return write_text(self, *a, **k)
    cls.write_text = full_disk

  if args.enospc_config:
    from asg_jax import train  # pylint: disable=import-outside-toplevel

    def write_config(config, workdir):
      path = os.path.join(workdir, "config.json")
      try:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
      except OSError as e:
        raise RuntimeError(f"could not save the config of {workdir}") from e
    train.write_config = write_config

  from tests.helpers import FakeData  # pylint: disable=import-outside-toplevel
  if args.main:
    from absl import app  # pylint: disable=import-outside-toplevel
    from asg_jax import main as main_lib  # pylint: disable=import-outside-toplevel
    from asg_jax import data as data_lib  # pylint: disable=import-outside-toplevel
    class Source(FakeData):   # what the command line's DataSource also tells
      @property
      def num_eval_examples(self):
        return self.num_eval
    data_lib.prepare = lambda config, workdir, **_: Source(config)
    argv = ["asg_jax.main", "--config", __file__, "--workdir", workdir, "--nofigures"]
    if args.verbosity:
      argv.append(f"--verbosity={args.verbosity}")
    app.run(main_lib.main, argv=argv)
  else:
    from asg_jax import train  # pylint: disable=import-outside-toplevel
    config = get_config()
    summary = train.train_and_evaluate(config, workdir, data=FakeData(config))
    print(f"worker done: {summary['steps']} steps", flush=True)


if __name__ == "__main__":
  main()
