"""Crash consistency (asg_jax/checkpoints.py): a run killed at any file-system commit of its
first two checkpoints resumes and ends with the parameters, best checkpoint, best.json and
summary of an uninterrupted run; so does the reported brick (best/N committed while
checkpoints/N is unfinished), made by a real SIGKILL; a half-written best.json is rewritten.

The kill points: the uninterrupted run (tests/workdir_worker.py's job: 4 steps, a checkpoint
and an improving evaluation every 2) copies its workdir just before each rename, replace
and tree removal, one at a time — the state a `kill -9` at that moment leaves behind — and
each distinct state is resumed (a real SIGKILL is the other test: it costs a process)."""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from asg_jax import checkpoints, parallel, train
from tests import workdir_worker
from tests.helpers import FakeData, build

pytestmark = pytest.mark.slow   # the whole file: see pyproject.toml's `slow` marker

WORKER = pathlib.Path(workdir_worker.__file__)
CONFIG = workdir_worker.get_config()


def _copy_tree(src: str, dst: str) -> None:
  """`src` as it is now; a file removed while copying is left out (as a kill could)."""
  for root, _, files in os.walk(src):
    target = os.path.join(dst, os.path.relpath(root, src))
    os.makedirs(target, exist_ok=True)
    for name in files:
      try:
        shutil.copy2(os.path.join(root, name), os.path.join(target, name))
      except FileNotFoundError:
        pass


def _state(workdir) -> tuple:
  """What a rerun starts from: the step folders (finished or not) and best.json."""
  folders = tuple(sorted(f"{sub}/{e}" for sub in ("checkpoints", "best")
                         if os.path.isdir(os.path.join(workdir, sub))
                         for e in os.listdir(os.path.join(workdir, sub))))
  best = pathlib.Path(workdir, "best.json")
  return folders, best.read_bytes() if best.exists() else None


def _variables(workdir, abstract, which):
  variables, step = checkpoints.Manager(str(workdir), 1).restore_model(abstract, which)
  return step, jax.device_get(variables)


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The uninterrupted run, and a copy of its workdir before each commit: [(target, copy)]."""
  root = tmp_path_factory.mktemp("crash")
  workdir = str(root / "full")
  points = []

  def before(target):
    if target.startswith(workdir + os.sep):
      copy = str(root / f"kill{len(points):02d}")
      _copy_tree(workdir, copy)
      points.append((os.path.relpath(target, workdir), copy))
  unhook = workdir_worker.hook_commits(before, threading.RLock())
  try:
    summary = train.train_and_evaluate(CONFIG, workdir, data=FakeData(CONFIG))
  finally:
    unhook()
  _, state, _, _ = build(CONFIG, parallel.make_mesh(1))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          {"params": state.params, "batch_stats": state.batch_stats})
  return {"workdir": workdir, "summary": summary, "points": points, "abstract": abstract,
          "latest": _variables(workdir, abstract, "latest"),
          "best": _variables(workdir, abstract, "best"),
          "best.json": json.loads(pathlib.Path(workdir, "best.json").read_text())}


def _assert_resumes_as_uninterrupted(workdir, full):
  summary = train.train_and_evaluate(CONFIG, str(workdir), data=FakeData(CONFIG))
  for key in ("steps", "stopped", "best", "metrics"):
    assert summary[key] == full["summary"][key], (workdir, key)
  latest, best = (_variables(workdir, full["abstract"], w) for w in ("latest", "best"))
  assert latest[0] == full["latest"][0] == workdir_worker.STEPS
  _assert_same(latest[1], full["latest"][1])
  assert best[0] == full["best"][0]
  _assert_same(best[1], full["best"][1])
  assert json.loads(pathlib.Path(workdir, "best.json").read_text()) == full["best.json"]
  assert _state(workdir) == _state(full["workdir"]), workdir   # no leftover folder


def test_a_kill_at_any_commit_of_the_first_two_checkpoints_resumes_as_uninterrupted(
    uninterrupted, capsys):
  full = uninterrupted
  targets = [t for t, _ in full["points"]]
  # every kind of commit was seen: the best model, best.json, the checkpoint (its items and
  # the step folder), the removal of the superseded checkpoint and best
  for expected in ("best/2", "best.json", "checkpoints/2", "checkpoints/2.orbax-checkpoint-tmp/"
                   "train", "best/4", "checkpoints/4"):
    assert expected in targets, (expected, targets)
  assert targets.count("checkpoints/2") == 2 and targets.count("best/2") == 2   # made, removed
  assert targets.index("best/2") < targets.index("best.json") < targets.index("checkpoints/2")
  distinct = {}
  for target, copy in full["points"]:
    distinct.setdefault(_state(copy), (target, copy))
  # 8 with orbax 0.12 (the async checkpoint and the next steps interleave in any order):
  # nothing committed, best/2 unfinished, best/2 alone, the reported brick (best/2 +
  # best.json, checkpoints/2 unfinished), best/4 unfinished or ahead of best.json,
  # checkpoints/4 unfinished, the superseded checkpoint not yet removed
  assert len(distinct) >= 8, sorted(t for t, _ in distinct.values())
  assert any({"best/2", "checkpoints/2.orbax-checkpoint-tmp"} <= set(folders)
             and "checkpoints/2" not in folders and json.loads(best)["step"] == 2
             for folders, best in distinct if best)
  for target, copy in distinct.values():
    _assert_resumes_as_uninterrupted(copy, full)
  out = capsys.readouterr().out
  assert re.search(r"^Removed best/2(, best/4)?: written after the last complete checkpoint "
                   r"\(none yet\) by an interrupted run", out, re.M)
  assert re.search(r"^Removed best/4: written after the last complete checkpoint \(step 2\)",
                   out, re.M)
  assert re.search(r"^Removed \d unfinished checkpoint folder\(s\) of an interrupted run: "
                   r".*checkpoints/2.orbax-checkpoint-tmp", out, re.M)


def test_the_reported_brick_made_by_a_real_kill_resumes(uninterrupted, tmp_path, capsys):
  """kill -9 after best/2 and best.json were committed, while checkpoints/2 was still being
  written: every rerun used to restart at step 0 and die at step 2 on `best/2`."""
  workdir = tmp_path / "killed"
  proc = subprocess.run([sys.executable, str(WORKER), "--workdir", str(workdir),
                         "--kill-before", "checkpoints/2"], capture_output=True, text=True,
                        timeout=600, cwd=WORKER.parents[1])
  assert proc.returncode == -signal.SIGKILL, proc.stdout[-2000:] + proc.stderr[-2000:]
  assert checkpoints.saved_steps(str(workdir)) == []
  assert os.listdir(workdir / "checkpoints") == ["2.orbax-checkpoint-tmp"]
  # (training goes on while checkpoints/2 is written: best/4 may be under way or done too)
  assert sorted(e for e in os.listdir(workdir / "best") if e.isdigit()) in (["2"], ["2", "4"])
  assert json.loads((workdir / "best.json").read_text())["step"] == 2
  # the killed run's lock went with it: the rerun takes it, repairs and finishes
  _assert_resumes_as_uninterrupted(workdir, uninterrupted)
  out = capsys.readouterr().out
  assert re.search(r"^Removed best/2(, best/4)?: written after the last complete checkpoint "
                   r"\(none yet\)", out, re.M)
  assert re.search(r"of an interrupted run: checkpoints/2.orbax-checkpoint-tmp", out)


def test_a_half_written_best_json_is_ignored_by_readers_and_rewritten_by_the_next_run(
    uninterrupted, tmp_path, capsys):
  workdir = str(tmp_path / "w")
  shutil.copytree(uninterrupted["workdir"], workdir)
  record = uninterrupted["best.json"]
  best_json = pathlib.Path(workdir, "best.json")
  best_json.write_text(json.dumps(record)[:17])          # cut short by a kill
  manager = checkpoints.Manager(workdir, 1)              # a reader (no lock, no repair)
  assert manager.best_record() == {} and manager.best_step() == record["step"]
  notices = checkpoints.repair_workdir(workdir)
  assert notices == [f"Rewrote best.json (it was half-written): best step {record['step']}, "
                     f"as the last complete checkpoint says"]
  assert json.loads(best_json.read_text()) == record
  assert checkpoints.repair_workdir(workdir) == []       # a sound workdir is left alone
  assert capsys.readouterr().out.count("Rewrote best.json") == 1
