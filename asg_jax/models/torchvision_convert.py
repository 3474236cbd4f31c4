"""torchvision ResNet state dicts (`torchvision.models.resnet50()`, GLoRIA's / MGCA's / ASG's
CNN backbones) -> the Hugging Face `ResNetModel` key layout that `resnet.ResNet50` loads by
name (`checkpoint_convert.load_resnet` calls this when it sees torchvision keys).

    torchvision                          Hugging Face ResNet (Flax path of resnet.ResNet50)
    conv1, bn1                           embedder.embedder.convolution / .normalization
    layer{s}.{j}.conv{r}, .bn{r}         encoder.stages.{s-1}.layers.{j}.layer.{r-1}.convolution
                                         / .normalization
    layer{s}.{j}.downsample.0 / .1       encoder.stages.{s-1}.layers.{j}.shortcut.convolution
                                         / .normalization
    BatchNorm running_mean / var         the same names (-> batch_stats mean / var)
    fc, num_batches_tracked              ignored (classifier, step counter)

Same geometry (torchvision v1.5 Bottleneck: stride on the 3x3 conv; 7x7/2 stem, pad 3;
3x3/2 max-pool, pad 1); other keys are reported as unexpected, never silently ignored.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.(conv(\d)|bn(\d)|downsample\.(\d))\.(.+)$")
_STEM = {"conv1": "embedder.embedder.convolution", "bn1": "embedder.embedder.normalization"}
_IGNORED = re.compile(r"(^fc\.|num_batches_tracked$)")


def torchvision_prefix(state: Mapping[str, np.ndarray]) -> str | None:
  """The prefix of a torchvision ResNet in `state` (`""`, `"model."`, ...), or None."""
  for key in state:
    if key.endswith("layer1.0.conv1.weight"):
      prefix = key[:-len("layer1.0.conv1.weight")]
      if f"{prefix}conv1.weight" in state:
        return prefix
  return None


def _new_name(key: str) -> str | None:
  head, _, leaf = key.partition(".")
  if head in _STEM and "." not in leaf:
    return f"{_STEM[head]}.{leaf}"
  m = _BLOCK.match(key)
  if not m:
    return None
  stage, block = int(m.group(1)) - 1, int(m.group(2))
  base = f"encoder.stages.{stage}.layers.{block}."
  if m.group(4):
    return f"{base}layer.{int(m.group(4)) - 1}.convolution.{m.group(7)}"
  if m.group(5):
    return f"{base}layer.{int(m.group(5)) - 1}.normalization.{m.group(7)}"
  part = {"0": "convolution", "1": "normalization"}.get(m.group(6))
  return f"{base}shortcut.{part}.{m.group(7)}" if part else None


def to_hf(state: Mapping[str, np.ndarray], prefix: str = ""
          ) -> tuple[dict[str, np.ndarray], list[str]]:
  """(the ResNet under `prefix` as Hugging Face `ResNetModel` keys, unexpected keys: neither
  converted nor classifier / counter; the caller refuses to load when there are any)."""
  out, unexpected = {}, []
  for key, value in state.items():
    if not key.startswith(prefix):
      continue
    rel = key[len(prefix):]
    if _IGNORED.search(rel):
      continue
    new = _new_name(rel)
    if new is None:
      unexpected.append(key)
    else:
      out[new] = np.asarray(value)
  return out, sorted(unexpected)
