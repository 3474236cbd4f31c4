"""Train-state creation and orbax checkpointing (periodic keep-N, best-by-validation, resume)."""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp

from asg_jax import parallel

logger = logging.getLogger(__name__)


def init_state(config: ml_collections.ConfigDict, model, tx, rng: jax.Array,
               example_batch: dict, constants: dict, mesh, state_cls: Callable) -> Any:
  """Initialises parameters (then loads pretrained encoders named in the config) and the
  optimizer, and places the state replicated on the mesh.

  Args:
    example_batch: a host batch (any batch size) fixing the input shapes.
  """
  batch = {k: jnp.asarray(v[:2]) for k, v in example_batch.items()}
  variables = jax.jit(lambda r: model.init({"params": r, "dropout": r}, batch, train=False,
                                           tag_queries=constants.get("tag_queries")))(rng)
  params, batch_stats = load_pretrained(config, variables["params"],
                                        variables.get("batch_stats", {}))
  state = state_cls(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params))
  return parallel.replicate(state, mesh)


def load_pretrained(config: ml_collections.ConfigDict, params: dict,
                    batch_stats: dict) -> tuple[dict, dict]:
  """Replaces the image/text encoder parameters (and a ResNet's BatchNorm statistics) with
  the checkpoints named in the config. Returns `(params, batch_stats)`."""
  from asg_jax.models import checkpoint_convert  # pylint: disable=import-outside-toplevel
  params, batch_stats = dict(params), dict(batch_stats)
  if config.model.text.pretrained:
    params["text_encoder"] = checkpoint_convert.load_bert(
        config.model.text.pretrained, params["text_encoder"])
    logger.info("text encoder initialised from %s", config.model.text.pretrained)
  if config.model.image.pretrained:
    if config.model.image.name == "vit":
      params["image_encoder"] = checkpoint_convert.load_vit(
          config.model.image.pretrained, params["image_encoder"])
    else:
      params["image_encoder"], batch_stats["image_encoder"] = checkpoint_convert.load_resnet(
          config.model.image.pretrained, params["image_encoder"],
          batch_stats["image_encoder"])
    logger.info("image encoder initialised from %s", config.model.image.pretrained)
  return params, batch_stats


class Manager:
  """`<workdir>/checkpoints` (the latest `keep`, for resume) and `<workdir>/best` (the best
  by the validation metric, with `best.json` recording step and value).

  A periodic checkpoint holds two items: `state` (the train state pytree) and `loop` (JSON:
  the host loop's own state at that step — the best validation value so far, the early-
  stopping counter, why training stopped), so a resumed run continues exactly as an
  uninterrupted one would.
  """

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

  def restore_latest(self, state: Any) -> tuple[Any, int]:
    """(restored state, its step), or (state, 0) when there is no checkpoint yet."""
    step = self._latest.latest_step()
    if step is None:
      return state, 0
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    restored = self._latest.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))
    return restored["state"], int(step)

  def restore_loop(self, step: int | None = None) -> dict:
    """The `loop` item of checkpoint `step` (default: the latest); {} when there is none."""
    step = self._latest.latest_step() if step is None else step
    if step is None:
      return {}
    restored = self._latest.restore(step, args=ocp.args.Composite(loop=ocp.args.JsonRestore()))
    return dict(restored["loop"] or {})

  def save(self, step: int, state: Any, loop: dict | None = None, force: bool = False) -> None:
    """Checkpoint `state` and the host loop's state `loop` (JSON-serialisable) at `step`."""
    self._latest.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), loop=ocp.args.JsonSave(dict(loop or {}))),
        force=force)

  def save_best(self, step: int, state: Any, record: dict) -> None:
    self._best.save(step, args=ocp.args.StandardSave(state), force=True)
    if jax.process_index() == 0:
      with open(self._best_json, "w") as f:
        json.dump(record, f, indent=2)

  def best_record(self) -> dict:
    if os.path.exists(self._best_json):
      with open(self._best_json) as f:
        return json.load(f)
    return {}

  def has_best(self) -> bool:
    return self._best.latest_step() is not None

  def restore_best(self, state: Any) -> Any:
    step = self._best.latest_step()
    if step is None:
      raise FileNotFoundError(f"no best checkpoint in {self.best_directory}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self._best.restore(step, args=ocp.args.StandardRestore(abstract))

  def wait(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()
