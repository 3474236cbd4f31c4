"""Orbax checkpointing: the latest N for resume, the best by validation, parameters apart.

`<workdir>/checkpoints/<step>/` holds three items:
  model   `{"params", "batch_stats"}`: all that inference needs (restored alone, no
          optimizer is built to read it);
  train   `{"step", "opt_state"}`: the rest of the train state;
  loop    JSON: the host loop's own state at that step — the best validation value so
          far (`best`: step, metric, value), the early-stopping counter, why training
          stopped — so a resumed run continues exactly as an uninterrupted one would.
`<workdir>/best/<step>/` holds the `model` item of the best evaluation, `best.json` its step
and value.

Crash consistency. Every write is a commit that orbax or `os.replace` makes atomically (a
step folder is written as `<step>.orbax-checkpoint-tmp` and renamed), and they happen in an
order whose every prefix is a state a rerun resumes from:

  1. `best/<S>` when evaluation at step S improves (the previous best is kept);
  2. `best.json` naming S, once `best/<S>` is committed;
  3. `checkpoints/<L>` (L >= S), whose `loop` names S;
  4. only once that checkpoint is committed, the best checkpoints before S are deleted.

The committed latest checkpoint is the truth: `repair_workdir` (run by training, under the
workdir's lock, before anything is saved) removes unfinished `*.orbax-checkpoint-tmp`
folders, every `best/<B>` but the one the latest checkpoint's `loop` names (a `best/` ahead
of `checkpoints/` after a kill is recomputed by the rerun, which retraces the same steps),
and rewrites a `best.json` that is missing, half-written or names another step — each with
a one-line notice. Readers that take no lock (inference, evaluation) read the step
`best.json` names when it is committed, else the newest committed best.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)

TMP_MARK = ".orbax-checkpoint-tmp"   # orbax's suffix of a step folder being written
# Orbax writes an array replicated over D devices as D slices, one per replica
# ("replica-parallel"), when it runs on CPU or TPU. For a small model on one host that is
# D eager slice dispatches per array for nothing (1000 arrays x 8 simulated devices: 8400
# slices, 6.3 of a 3-step demo job's 26 s; 1.1 s with this). Arrays whose per-replica
# slice would be under 1 MiB are written whole by replica 0; larger ones stay parallel.
REPLICA_PARALLEL_MIN_SLICE_BYTES = 1 << 20


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _model_item(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def _steps(directory: str) -> list[int]:
  """The committed steps in an orbax root folder (sorted; [] when there is none)."""
  return sorted(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []


def saved_steps(workdir: str) -> list[int]:
  """The steps of the finished checkpoints in `<workdir>/checkpoints` (orbax's listing;
  partial saves are not counted), without creating a Manager ([] when there is none)."""
  return _steps(os.path.join(os.path.abspath(workdir), "checkpoints"))


def read_json(path: str) -> dict | None:
  """The JSON object in `path`; None when it is missing or unreadable (half-written)."""
  try:
    with open(path) as f:
      value = json.load(f)
  except (OSError, ValueError):
    return None
  return value if isinstance(value, dict) else None


def write_json(path: str, value: dict) -> None:
  """Writes `path` atomically: a reader or a rerun sees the old file or the new, never half."""
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


def _read_loop(directory: str, step: int) -> dict | None:
  """The `loop` item of checkpoint `step` read directly (no Manager, no cross-process
  synchronisation: `repair_workdir` runs on process 0 alone); None when the checkpoint has
  none (written before the item existed)."""
  from etils import epath  # pylint: disable=import-outside-toplevel
  path = epath.Path(directory) / str(step) / "loop"
  if not path.exists():
    return None
  return dict(ocp.JsonCheckpointHandler().restore(path, args=ocp.args.JsonRestore()) or {})


def _remove_partial(root: str) -> list[str]:
  """Deletes the unfinished step folders (`*.orbax-checkpoint-tmp*`) in `root`."""
  partial = sorted(e for e in (os.listdir(root) if os.path.isdir(root) else []) if TMP_MARK in e)
  for entry in partial:
    shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
  return [os.path.join(os.path.basename(root), e) for e in partial]


def repair_workdir(workdir: str, keep: int | None = None) -> list[str]:
  """Bring `<workdir>` back to a state its writers agree with after a kill (see the module
  docstring); returns the one-line notices, also printed. `keep`: also delete the complete
  checkpoints before the latest `keep` (a kill can come between a checkpoint and orbax's
  removal of the one it supersedes). Call it on one process, holding the workdir's lock,
  before a `Manager` of the workdir is created."""
  workdir = os.path.abspath(workdir)
  latest_dir, best_dir = os.path.join(workdir, "checkpoints"), os.path.join(workdir, "best")
  best_json = os.path.join(workdir, "best.json")
  notices = []
  partial = _remove_partial(latest_dir) + _remove_partial(best_dir)
  if partial:
    notices.append(f"Removed {len(partial)} unfinished checkpoint folder(s) of an interrupted "
                   f"run: {', '.join(partial)}")
  committed = _steps(latest_dir)
  for step in committed[:-keep] if keep else []:
    shutil.rmtree(os.path.join(latest_dir, str(step)), ignore_errors=True)
  latest = max(committed, default=None)
  loop = _read_loop(latest_dir, latest) if latest is not None else {}
  if loop is None:                 # an old checkpoint that names no best: best/ is kept
    return _notify(notices)
  record = dict(loop.get("best") or {})
  best = record.get("step")        # the best the last complete checkpoint names (or None)
  best_steps = _steps(best_dir)
  ahead = [s for s in best_steps if s != best and (latest is None or s > latest)]
  for step in best_steps:
    if step != best:               # ahead of the checkpoints, or superseded
      shutil.rmtree(os.path.join(best_dir, str(step)), ignore_errors=True)
  if ahead:
    notices.append(
        f"Removed best/{', best/'.join(map(str, ahead))}: written after the last complete "
        f"checkpoint ({f'step {latest}' if latest is not None else 'none yet'}) by an "
        f"interrupted run; this run computes it again")
  current = read_json(best_json)
  if best is not None and best in best_steps:
    if current != record:
      was = (f"it named step {current.get('step')}" if current is not None else
             "it was half-written" if os.path.exists(best_json) else "it was missing")
      write_json(best_json, record)
      notices.append(f"Rewrote best.json ({was}): best step {best}, as the last complete "
                     f"checkpoint says")
  elif os.path.exists(best_json):
    os.remove(best_json)
    notices.append("Removed best.json: it named no complete best checkpoint")
  return _notify(notices)


def _notify(notices: list[str]) -> list[str]:
  for line in notices:
    logger.warning("%s", line)
    print(line, flush=True)
  return notices


class _Notice(logging.Filter):
  """Drops the absl log records that contain `text`."""

  def __init__(self, text: str):
    super().__init__()
    self.text = text

  def filter(self, record: logging.LogRecord) -> bool:
    return self.text not in record.getMessage()


@contextlib.contextmanager
def _without_notice(text: str):
  notice, logger = _Notice(text), logging.getLogger("absl")
  logger.addFilter(notice)
  try:
    yield
  finally:
    logger.removeFilter(notice)


def _without_read_only_notice():
  """Without orbax's "Given directory is read only" warning: reading a workdir read-only is
  what inference and evaluation ask for, not news for the console."""
  return _without_notice("Given directory is read only")


with _without_notice("Type handler registry"):    # "... overriding jax.Array": we mean it
  ocp.type_handlers.register_type_handler(
      jax.Array, ocp.type_handlers.ArrayHandler(
          min_slice_bytes_for_replica_parallel=REPLICA_PARALLEL_MIN_SLICE_BYTES), override=True)


class Manager:
  """`<workdir>/checkpoints` (the latest `keep`) and `<workdir>/best` (see the module).

  `repair=True` (training): `repair_workdir` first, on process 0 while the others wait.
  """

  def __init__(self, workdir: str, keep: int, repair: bool = False, read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.best_directory = os.path.join(os.path.abspath(workdir), "best")
    self._best_json = os.path.join(os.path.abspath(workdir), "best.json")
    if repair:
      from asg_jax import distributed  # pylint: disable=import-outside-toplevel
      with distributed.first_process_only("repair_checkpoints") as mine:
        if mine:
          repair_workdir(workdir, keep)
    # read_only (inference, evaluation): nothing is created or deleted in the workdir; the
    # options orbax would override (with a warning each) are given as it wants them
    def options(max_to_keep):
      if read_only:
        return ocp.CheckpointManagerOptions(max_to_keep=None, save_interval_steps=0,
                                            create=False, read_only=True)
      return ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    with _without_read_only_notice():
      self._latest = ocp.CheckpointManager(self.directory, options=options(keep))
      # every best is kept until no committed checkpoint names it (`_flush_best`)
      self._best = ocp.CheckpointManager(self.best_directory, options=options(None))
    self._saved_best = None      # the best step the latest save's `loop` names
    self._pending_record = None  # best.json to write once its `best/<step>` is committed

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def best_step(self) -> int | None:
    """The step of the best checkpoint: the one `best.json` names when it is committed,
    else the newest committed one (None when there is none)."""
    steps = self._best.all_steps()
    if not steps:
      return None
    named = (read_json(self._best_json) or {}).get("step")
    return named if named in steps else max(steps)

  def has_best(self) -> bool:
    return self.best_step() is not None

  # ------------------------------------------------------------------ train state
  def save(self, step: int, state: Any, loop: dict | None = None, force: bool = False) -> None:
    """Checkpoint the train state and the host loop's state `loop` (JSON) at `step`."""
    self._latest.wait_until_finished()   # the previous checkpoint is committed (or raises)
    self._flush_best(prune=True)
    loop = dict(loop or {})
    saved = self._latest.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(_model_item(state)),
        train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
        loop=ocp.args.JsonSave(loop)), force=force)
    if saved is not False:
      self._saved_best = (loop.get("best") or {}).get("step")

  def restore_latest(self, state: Any) -> tuple[Any, int]:
    """(restored state, its step), or (state, 0) when there is no checkpoint yet. `state`
    gives structure, shapes and shardings."""
    step = self._latest.latest_step()
    if step is None:
      return state, 0
    restored = self._latest.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(_abstract(_model_item(state))),
        train=ocp.args.StandardRestore(_abstract({"step": state.step,
                                                  "opt_state": state.opt_state}))))
    model, rest = restored["model"], restored["train"]
    return state.replace(step=rest["step"], opt_state=rest["opt_state"],
                         params=model["params"], batch_stats=model["batch_stats"]), int(step)

  def restore_loop(self, step: int | None = None) -> dict:
    """The `loop` item of checkpoint `step` (default: the latest); {} when there is none."""
    step = self._latest.latest_step() if step is None else step
    if step is None:
      return {}
    restored = self._latest.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
    return dict(restored["loop"] or {})

  # ------------------------------------------------------------------ model only
  def restore_model(self, variables: dict, which: str = "best") -> tuple[dict, int]:
    """(`{"params", "batch_stats"}`, step) of the `best` or `latest` checkpoint; `variables`
    gives structure and shapes (e.g. `state.abstract_variables`).

    Raises:
      FileNotFoundError: no such checkpoint.
    """
    manager = {"best": self._best, "latest": self._latest}[which]
    step = self.best_step() if which == "best" else manager.latest_step()
    if step is None:
      folder = self.best_directory if which == "best" else self.directory
      raise FileNotFoundError(f"no {which} checkpoint in {folder}")
    # placed on this process's first device, whatever topology wrote it (a checkpoint of
    # a multi-host run loads on one machine for inference)
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=local),
                          variables)
    restored = manager.restore(step, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(target)))
    return restored["model"], int(step)

  def save_best(self, step: int, state: Any, record: dict) -> None:
    """Save the model of `step` as the best (`record`: step, metric, value → best.json,
    written once the model is committed)."""
    self._flush_best(prune=False)
    if step in self._best.all_steps():   # a rerun retracing a step: replace it
      self._best.delete(step)
    self._best.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(_model_item(state))), force=True)
    self._pending_record = dict(record)

  def best_record(self) -> dict:
    """best.json ({} when there is none, or it cannot be read)."""
    return read_json(self._best_json) or {}

  def _flush_best(self, prune: bool) -> None:
    """best.json once its model is committed (step 2 of the module docstring); with
    `prune` (the latest checkpoint is committed: callers waited for it), the bests before
    the one it names are deleted (step 4). Every process calls this at the same points with
    the same state (orbax's `delete` synchronises them)."""
    self._best.wait_until_finished()
    if self._pending_record is not None:
      if jax.process_index() == 0:
        write_json(self._best_json, self._pending_record)
      self._pending_record = None
    if prune and self._saved_best is not None:
      for step in self._best.all_steps():
        if step < self._saved_best:
          self._best.delete(step)

  def wait(self) -> None:
    """Until every save is committed and best.json written."""
    self._latest.wait_until_finished()
    self._flush_best(prune=True)
