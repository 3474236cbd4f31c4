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
  evaluators    `config.evals.<name>.type` -> `asg_jax.evaluators.<type>` (by module name,
                see evaluators/common.py; no line needed here)
"""
from __future__ import annotations

import importlib

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
}


def _lookup(table: dict, kind: str, name: str, key: str):
  if name not in table:
    from asg_jax.errors import ConfigError  # pylint: disable=import-outside-toplevel
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
