"""One registry per kind of component, looked up by config name in one place.

Adding a component = one new file + one line here:

  image towers  `config.model.image.name` -> a module exposing `build(cfg, dtype, name)`
                (the Linen module), `features(out) -> (global [B, D], local [B, M, D'])`,
                `patch_grid(cfg, image_size) -> (gh, gw)`, `load_pretrained(path, params,
                batch_stats) -> (params, batch_stats)`
  text towers   `config.model.text.name` -> a module exposing `build(cfg, dtype, use_layers,
                name)` and `load_pretrained(path, params) -> params`
  objectives    `config.loss.name` -> `"module:function"`, a factory
                `function(config) -> objective(outputs, batch) -> (loss, measurements)`
  evaluators    `config.evals.<name>.type` -> a module exposing `Evaluator(predict_fns, *,
                data, **kwargs)` (asg_jax/evaluators/plugins.py); a dotted module path is
                accepted too (an evaluator outside the package, e.g. in a test)
  transfer evaluators  the `type` of a transfer config's `evals` entries -> a module exposing
                `Evaluator(predict_fns, **kwargs)` with `rows(state, init)` (docs/transfer.md)
"""
from __future__ import annotations

import importlib

from asg_jax.errors import ConfigError

IMAGE_TOWERS = {
    "vit": "asg_jax.models.vit",
    "resnet50": "asg_jax.models.resnet",
}
TEXT_TOWERS = {
    "bert": "asg_jax.models.bert",
}
OBJECTIVES = {
    "ira": "asg_jax.objectives:make_asg_objective",
    "asg": "asg_jax.objectives:make_asg_objective",
    "reclf": "asg_jax.objectives:make_reclf_objective",
    "gloria": "asg_jax.objectives:make_reclf_objective",
    "mgca": "asg_jax.objectives:make_mgca_objective",
    "convirt": "asg_jax.objectives:make_convirt_objective",
}
EVALUATORS = {
    "grounding": "asg_jax.evaluators.grounding",
    "loss": "asg_jax.evaluators.loss",
    "retrieval": "asg_jax.evaluators.retrieval",
    "zeroshot": "asg_jax.evaluators.zeroshot",
}
TRANSFER_EVALUATORS = {
    "linear_probe": "asg_jax.transfer.linear_probe",   # fine_tune=True: transfer/fine_tune.py
    "zeroshot": "asg_jax.transfer.zeroshot",
    "retrieval": "asg_jax.transfer.retrieval",
    "segmentation": "asg_jax.transfer.segmentation",
}


def _lookup(table: dict, kind: str, name: str, key: str):
  if name not in table:
    raise ConfigError(f"config.{key} = {name!r} is not a registered {kind}; expected one of "
                      f"{sorted(table)} (asg_jax/registry.py)")
  module, _, attr = table[name].partition(":")
  module = importlib.import_module(module)
  return getattr(module, attr) if attr else module


def image_tower(name: str):
  """The image-tower module registered as `name`."""
  return _lookup(IMAGE_TOWERS, "image tower", name, "model.image.name")


def text_tower(name: str):
  """The text-tower module registered as `name`."""
  return _lookup(TEXT_TOWERS, "text tower", name, "model.text.name")


def objective_factory(name: str):
  """The objective factory `f(config) -> objective` registered as `name`."""
  return _lookup(OBJECTIVES, "objective", name, "loss.name")


def evaluator_module(table: dict, kind: str, key: str):
  """The evaluator module registered as `kind` in `table` (EVALUATORS or
  TRANSFER_EVALUATORS), or the module at the dotted path `kind`; ConfigError naming `key`
  (the config entry) when there is none or it has no `Evaluator`."""
  if kind in table:
    module = importlib.import_module(table[kind])
  elif "." in kind:
    try:
      module = importlib.import_module(kind)
    except ModuleNotFoundError as e:
      if e.name not in (kind, kind.rsplit(".", 1)[0]):
        raise
      raise ConfigError(f"config.{key} = {kind!r}: no module {kind}") from e
  else:
    raise ConfigError(f"config.{key} = {kind!r} is not a registered evaluator; expected one of "
                      f"{sorted(table)} or a dotted module path (asg_jax/registry.py)")
  if not hasattr(module, "Evaluator"):
    raise ConfigError(f"config.{key} = {kind!r}: module {module.__name__} has no `Evaluator` "
                      "class")
  return module
