"""The encoders a transfer config evaluates (`config.inits`): the workdir's pre-trained
model, the same architecture freshly initialised (`random`), and that random init with the
image tower's ImageNet weights (`imagenet`, whenever `config.imagenet` names a local
checkpoint)."""
from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from asg_jax import registry


@dataclasses.dataclass
class TransferState:
  """What evaluators read of a state: `.params`, `.batch_stats`, `.step`, and `.init`."""
  params: Any
  batch_stats: Any
  step: int = 0
  init: str = "pretrained"


def imagenet_variables(pretrained, path: str, random: dict) -> dict:
  """The random-init variables `random` with the image tower replaced by the ImageNet
  weights of a local Hugging Face checkpoint (`path`: a folder with model.safetensors /
  pytorch_model.bin or the file; ViT: `ViTModel` layout, ResNet: `ResNetModel`, via the
  tower's `load_pretrained`); the heads and the text tower stay random."""
  if not path:
    raise ValueError("config.inits has 'imagenet' but config.imagenet is empty: pass "
                     "--config.imagenet=<local checkpoint of the ImageNet weights> (nothing "
                     "is downloaded; docs/transfer.md)")
  params, stats = dict(random["params"]), dict(random["batch_stats"])
  tower = registry.image_tower(pretrained.config.model.image.name)
  params["image_encoder"], enc_stats = tower.load_pretrained(
      path, params["image_encoder"], stats.get("image_encoder", {}))
  if enc_stats:
    stats["image_encoder"] = enc_stats
  return {"params": params, "batch_stats": stats}


def states(pretrained, config: ml_collections.ConfigDict, step: int) -> list[TransferState]:
  """The encoders `config.inits` names (+ `imagenet` when `config.imagenet` is set), of an
  `inference.Pretrained`."""
  out = []
  inits = list(config.inits)
  if config.get("imagenet") and "imagenet" not in inits:
    inits.append("imagenet")
  for init in inits:
    if init == "pretrained":
      v = pretrained.variables
      out.append(TransferState(v["params"], v.get("batch_stats", {}), step, "pretrained"))
    elif init in ("random", "imagenet"):
      v = pretrained.random_variables(config.random_seed)   # one init, shared by both
      if init == "imagenet":
        v = imagenet_variables(pretrained, config.get("imagenet", ""), v)
      out.append(TransferState(v["params"], v["batch_stats"], 0, init))
    else:
      raise ValueError(f"config.inits: {init!r} is not supported (pretrained, random, "
                       f"imagenet)")
  return out
