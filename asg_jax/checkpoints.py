"""Orbax checkpointing: the latest N for resume, the best by validation, parameters apart.

`<workdir>/checkpoints/<step>/` holds three items:
  model   `{"params", "batch_stats"}`: all that inference needs (restored alone, no
          optimizer is built to read it);
  train   `{"step", "opt_state"}`: the rest of the train state;
  loop    JSON: the host loop's own state at that step — the best validation value so
          far, the early-stopping counter, why training stopped — so a resumed run
          continues exactly as an uninterrupted one would.
`<workdir>/best/<step>/` holds the `model` item of the best evaluation, `best.json` its step
and value.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

logger = logging.getLogger(__name__)


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _model_item(state) -> dict:
  return {"params": state.params, "batch_stats": state.batch_stats}


def saved_steps(workdir: str) -> list[int]:
  """The steps of the finished checkpoints in `<workdir>/checkpoints` (orbax's listing;
  partial saves are not counted), without creating a Manager ([] when there is none)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  return list(ocp.utils.checkpoint_steps(directory)) if os.path.isdir(directory) else []


class Manager:
  """`<workdir>/checkpoints` (the latest `keep`) and `<workdir>/best` (see the module)."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.best_directory = os.path.join(os.path.abspath(workdir), "best")
    self._best_json = os.path.join(os.path.abspath(workdir), "best.json")
    self._latest = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
    self._best = ocp.CheckpointManager(
        self.best_directory, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def has_best(self) -> bool:
    return self._best.latest_step() is not None

  # ------------------------------------------------------------------ train state
  def save(self, step: int, state: Any, loop: dict | None = None, force: bool = False) -> None:
    """Checkpoint the train state and the host loop's state `loop` (JSON) at `step`."""
    self._latest.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(_model_item(state)),
        train=ocp.args.StandardSave({"step": state.step, "opt_state": state.opt_state}),
        loop=ocp.args.JsonSave(dict(loop or {}))), force=force)

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
    step = manager.latest_step()
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
    self._best.save(step, args=ocp.args.Composite(
        model=ocp.args.StandardSave(_model_item(state))), force=True)
    if jax.process_index() == 0:
      with open(self._best_json, "w") as f:
        json.dump(record, f, indent=2)

  def best_record(self) -> dict:
    if os.path.exists(self._best_json):
      with open(self._best_json) as f:
        return json.load(f)
    return {}

  def wait(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()
