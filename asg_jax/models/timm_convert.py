"""timm ViT / DeiT state dicts -> the Hugging Face ViT key layout that `vit.ViT` loads by name
(`checkpoint_convert.load_vit` calls this when it sees timm keys).

    timm                                  Hugging Face ViT (Flax path of vit.ViT)
    cls_token [1,1,D]                     embeddings.cls_token
    pos_embed [1,1+M,D] or [1,M,D]        embeddings.position_embeddings [1,1+M,D] (a
                                          class-less pos_embed, timm `no_embed_class`: the
                                          CLS slot gets 0, as timm adds none to the CLS)
    patch_embed.proj                      embeddings.patch_embeddings.projection
    blocks.i.norm1 / norm2                encoder.layer.i.layernorm_before / layernorm_after
    blocks.i.attn.qkv [3D,D] (+ bias)     encoder.layer.i.attention.attention.{query,key,value}
                                          (rows 0:D, D:2D, 2D:3D; no qkv bias -> zeros)
    blocks.i.attn.proj                    encoder.layer.i.attention.output.dense
    blocks.i.mlp.fc1 / fc2                encoder.layer.i.intermediate.dense / output.dense
    norm                                  layernorm
    head, head_dist, pre_logits, fc       ignored (classifiers)

DeiT's distillation token (`dist_token` and its position slot 1) has no place in `vit.ViT`: it
is dropped with a message; the remaining tokens then attend without it, so the features differ
from the distilled model's. Anything else (LayerScale `ls1`, `fc_norm`, register tokens,
qk-norm, ...) changes the network: it is reported as unexpected, never silently ignored.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Mapping

import numpy as np

logger = logging.getLogger(__name__)

_IGNORED = re.compile(r"^(head|head_dist|pre_logits|fc)\.")
_BLOCK = {"norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
          "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
          "attn.proj.weight": "attention.output.dense.weight",
          "attn.proj.bias": "attention.output.dense.bias",
          "mlp.fc1.weight": "intermediate.dense.weight", "mlp.fc1.bias": "intermediate.dense.bias",
          "mlp.fc2.weight": "output.dense.weight", "mlp.fc2.bias": "output.dense.bias"}
_TOP = {"patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
        "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
        "norm.weight": "layernorm.weight", "norm.bias": "layernorm.bias",
        "cls_token": "embeddings.cls_token"}


def timm_prefix(state: Mapping[str, np.ndarray]) -> str | None:
  """The prefix under which `state` holds a timm ViT (`""`, `"model."`, `"encoder."`, ...),
  or None when it holds none."""
  for key in state:
    if key.endswith("patch_embed.proj.weight"):
      prefix = key[:-len("patch_embed.proj.weight")]
      if f"{prefix}pos_embed" in state:
        return prefix
  return None


def _has_class_slot(pos_tokens: int, num_patches: int | None, extra: int) -> bool:
  """Does `pos_embed` carry the class (and distillation) slots? Decided by the model's patch
  count when known, else by the patch grid being a square."""
  if num_patches is not None:
    return pos_tokens == num_patches + extra
  return math.isqrt(pos_tokens) ** 2 != pos_tokens


def to_hf(state: Mapping[str, np.ndarray], prefix: str = "", num_patches: int | None = None,
          source: str = "") -> tuple[dict[str, np.ndarray], list[str]]:
  """The timm ViT under `prefix` in `state` as Hugging Face ViT keys.

  Args:
    state: checkpoint tensors (NumPy).
    prefix: where the ViT's keys start (`timm_prefix`).
    num_patches: M of the model the weights are for (decides whether `pos_embed` has the class
      slot); None: guessed from the grid being square.
    source: the file, for messages.
  Returns:
    (HF-named tensors, unexpected: timm keys under `prefix` that were not converted and are no
    classifier; the caller refuses to load when there are any).
  """
  sub = {k[len(prefix):]: np.asarray(v) for k, v in state.items() if k.startswith(prefix)}
  out, used = {}, set()
  for old, new in _TOP.items():
    if old in sub:
      out[new] = sub[old]
      used.add(old)
  extra = 1 + ("dist_token" in sub)
  if "dist_token" in sub:
    used.add("dist_token")
    logger.warning("%s: the DeiT distillation token (dist_token and its position slot) is "
                   "ignored: vit.ViT has no distillation token, so its features differ from "
                   "the distilled model's", source or "timm checkpoint")
  if "pos_embed" in sub:
    pos = sub["pos_embed"]
    used.add("pos_embed")
    if _has_class_slot(pos.shape[1], num_patches, extra):
      pos = np.concatenate([pos[:, :1], pos[:, extra:]], axis=1)    # drop the dist slot
    else:   # timm no_embed_class: the CLS token gets no position embedding
      pos = np.concatenate([np.zeros_like(pos[:, :1]), pos], axis=1)
    out["embeddings.position_embeddings"] = pos
  blocks = sorted({int(m.group(1)) for k in sub if (m := re.match(r"blocks\.(\d+)\.", k))})
  for i in blocks:
    b, h = f"blocks.{i}.", f"encoder.layer.{i}."
    for old, new in _BLOCK.items():
      if b + old in sub:
        out[h + new] = sub[b + old]
        used.add(b + old)
    if b + "attn.qkv.weight" in sub:
      qkv = sub[b + "attn.qkv.weight"]
      used.add(b + "attn.qkv.weight")
      d = qkv.shape[0] // 3
      bias = sub.get(b + "attn.qkv.bias")
      if bias is None:   # qkv_bias=False: a zero bias is the same function
        bias = np.zeros((3 * d,), qkv.dtype)
      used.add(b + "attn.qkv.bias")
      for j, name in enumerate(("query", "key", "value")):
        out[f"{h}attention.attention.{name}.weight"] = qkv[j * d:(j + 1) * d]
        out[f"{h}attention.attention.{name}.bias"] = bias[j * d:(j + 1) * d]
  unexpected = sorted(prefix + k for k in sub if k not in used and not _IGNORED.match(k))
  return out, unexpected
