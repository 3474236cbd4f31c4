"""The peers' released checkpoints (and plain timm / torchvision / Hugging Face files) mapped
onto the parameters of `vlp.VisionLanguageModel` (docs/models.md "Weights from PyTorch").

    variables, report = convert(source, tensors, variables, config, name)

`source` is one of `SOURCES`; `tensors` the checkpoint's state dict (`torch_checkpoint.load`);
`variables` a freshly initialised `{"params", "batch_stats"}` of the target model: what the
checkpoint carries replaces its leaves, the rest keeps its random init. Every mapped tower and
head is loaded strictly (all its leaves, exact shapes, no stray key under its prefix), with
the one-line error of `checkpoint_convert.load_error`.

    source       checkpoint keys (Lightning state_dict)       -> our modules
    asg, mgca    img_encoder_q.model.*  (timm ViT / torchvision ResNet)  image_encoder
                 img_encoder_q.global_embed.head.{0,1,3,4}   image_global_head
                 img_encoder_q.local_embed.head.{0,1,3,4}    image_local_head (Conv1d k=1)
                 text_encoder_q.model.*  (HF BERT)           text_encoder (first use_layers)
                 text_encoder_q.{global,local}_embed.head.*  text_{global,local}_head
    asg          irl.*  (IRLModel decoder + mlp_head)        tag_decoder
                 text_encoder.*  (frozen Bio_ClinicalBERT)   the tag-query tower (a file)
    gloria       gloria.img_encoder.model.*  (torchvision)   image_encoder
                 gloria.text_encoder.model.*  (HF BERT)      text_encoder
    timm / torchvision / hf: a bare image (or, hf, text) tower.

Heads: MGCA's / ASG's `GlobalEmbedding` / `LocalEmbedding` (Linear|Conv1d -> BatchNorm1d ->
ReLU -> Linear|Conv1d -> BatchNorm1d(affine=False)) are exactly `heads.ProjectionHead`
(`head.0` -> dense_0, `head.1` -> bn_0 with its running statistics, `head.3` -> dense_1,
`head.4` -> bn_1). Not carried (reported): MGCA's `prototype_layer` (this model has no
prototype layer) and its unused `*_local_atten_layer`s; GLoRIA's `global_embedder` (one
Linear) and `local_embedder` (one 1x1 conv) — GLoRIA's text embeddings are sums of the last
four BERT layers, which these heads do not compute, so the heads stay random.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Mapping

import numpy as np
from flax import traverse_util

from asg_jax.models import checkpoint_convert as cc

SOURCES = ("asg", "mgca", "gloria", "timm", "torchvision", "hf")
HEADS = ("image_global_head", "image_local_head", "text_global_head", "text_local_head")
_MGCA_HEADS = {"image_global_head": "img_encoder_q.global_embed.head.",
               "image_local_head": "img_encoder_q.local_embed.head.",
               "text_global_head": "text_encoder_q.global_embed.head.",
               "text_local_head": "text_encoder_q.local_embed.head."}
_HEAD_LAYERS = {"0": "dense_0", "1": "bn_0", "3": "dense_1", "4": "bn_1"}
_NOT_CARRIED = {
    "prototype_layer.": "MGCA's prototype layer (CPA); this model has no prototype layer",
    "patch_local_atten_layer.": "MGCA's patch cross-attention (unused: use_local_atten=False)",
    "word_local_atten_layer.": "MGCA's word cross-attention (unused: use_local_atten=False)",
    "gloria.img_encoder.global_embedder.": "GLoRIA's global image embedder (one Linear): not "
    "our MLP head, and GLoRIA's text side sums the last 4 BERT layers (heads stay random)",
    "gloria.img_encoder.local_embedder.": "GLoRIA's local image embedder (one 1x1 conv): not "
    "our MLP head (heads stay random)",
}


@dataclasses.dataclass
class Report:
  """What a conversion carried (`carried`: "our module <- checkpoint keys") and did not
  (`not_carried`: "keys: why"), the key prefixes it read (`prefixes`), and the frozen
  tag-query tower's BERT tensors (ASG)."""
  carried: list[str] = dataclasses.field(default_factory=list)
  not_carried: list[str] = dataclasses.field(default_factory=list)
  prefixes: list[str] = dataclasses.field(default_factory=list)
  query_tower: dict | None = None


def sub(tensors: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
  """The tensors under `prefix`, the prefix removed."""
  return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _under(tensors: Mapping, prefix: str) -> bool:
  return any(k.startswith(prefix) for k in tensors)


def head_state(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """MGCA / ASG `Global|LocalEmbedding` `head.{0,1,3,4}.*` tensors -> `ProjectionHead`
  names (`dense_0.weight`, `bn_0.running_mean`, ...); Conv1d kernels `[out, in, 1]` become
  Linear weights `[out, in]`; `num_batches_tracked` is dropped."""
  out = {}
  for key, value in tensors.items():
    layer, _, leaf = key.partition(".")
    if leaf == "num_batches_tracked":
      continue
    value = np.asarray(value)
    if leaf == "weight" and value.ndim == 3 and value.shape[-1] == 1:
      value = value[..., 0]
    out[f"{_HEAD_LAYERS.get(layer, 'head.' + layer)}.{leaf}"] = value
  return out


def irl_to_tag_decoder(tensors: Mapping[str, np.ndarray], params: Mapping, source: str
                       ) -> dict:
  """ASG's `IRLModel` (`irl.*` without the prefix) -> `tag_decoder.TagDecoder` params.

  nn.MultiheadAttention `in_proj_weight [3d, d]` / `in_proj_bias` split into query / key /
  value `[d, heads, d/heads]`, `out_proj` -> `out [heads, d/heads, d]`; the decoder norm
  (`decoder.norm`) -> `final_norm`; the ONE `mlp_head.0` Linear(d, 1) shared by all queries is
  every tag's row of `head_kernel [T, d]` / `head_bias [T]` (the same function)."""
  flat = traverse_util.flatten_dict(cc._unfreeze(params))   # pylint: disable=protected-access
  heads = {p[0]: flat[p].shape[1] for p in flat if p[-2:] == ("query", "kernel")}
  state, used = {}, set()

  def take(key):
    used.add(key)
    return np.asarray(tensors[key]) if key in tensors else None

  def attention(layer, ours, theirs):
    w, b = take(f"decoder.layers.{layer}.{theirs}.in_proj_weight"), take(
        f"decoder.layers.{layer}.{theirs}.in_proj_bias")
    ow, ob = take(f"decoder.layers.{layer}.{theirs}.out_proj.weight"), take(
        f"decoder.layers.{layer}.{theirs}.out_proj.bias")
    if w is None or b is None or ow is None or ob is None:
      return
    d = w.shape[1]
    h = heads.get(f"layer{layer}", 1)
    for j, name in enumerate(("query", "key", "value")):
      state[(f"layer{layer}", ours, name, "kernel")] = w[j * d:(j + 1) * d].T.reshape(d, h, -1)
      state[(f"layer{layer}", ours, name, "bias")] = b[j * d:(j + 1) * d].reshape(h, -1)
    state[(f"layer{layer}", ours, "out", "kernel")] = ow.T.reshape(h, -1, ow.shape[0])
    state[(f"layer{layer}", ours, "out", "bias")] = ob

  layers = sorted({int(m.group(1)) for k in tensors
                   if (m := re.match(r"decoder\.layers\.(\d+)\.", k))})
  for i in layers:
    attention(i, "self_attn", "self_attn")
    attention(i, "cross_attn", "multihead_attn")
    for name in ("norm1", "norm2", "norm3", "linear1", "linear2"):
      w, b = take(f"decoder.layers.{i}.{name}.weight"), take(f"decoder.layers.{i}.{name}.bias")
      if w is not None:
        state[(f"layer{i}", name, "kernel" if name.startswith("linear") else "scale")] = (
            w.T if name.startswith("linear") else w)
      if b is not None:
        state[(f"layer{i}", name, "bias")] = b
  for norm in ("decoder.norm", "decoder_norm"):   # one module, registered twice
    w, b = take(f"{norm}.weight"), take(f"{norm}.bias")
    if w is not None:
      state[("final_norm", "scale")], state[("final_norm", "bias")] = w, b
  w, b = take("mlp_head.0.weight"), take("mlp_head.0.bias")
  num_tags = flat[("head_kernel",)].shape[0] if ("head_kernel",) in flat else 0
  if w is not None and b is not None and w.shape[0] == 1:
    state[("head_kernel",)] = np.repeat(w, num_tags, axis=0)
    state[("head_bias",)] = np.repeat(b, num_tags, axis=0)
  missing = [("/".join(p)) for p in flat if p not in state]
  mismatched = [f"{'/'.join(p)} {tuple(flat[p].shape)} <- {tuple(state[p].shape)}"
                for p in flat if p in state and tuple(state[p].shape) != tuple(flat[p].shape)]
  unexpected = sorted(f"irl.{k}" for k in tensors if k not in used)
  if missing or mismatched or unexpected:
    raise ValueError(cc.load_error("IRL tag decoder", "params", source, tensors, missing,
                                   unexpected, mismatched))
  return traverse_util.unflatten_dict({p: np.asarray(v, np.float32) for p, v in state.items()})


def _set(variables: dict, name: str, params, stats=None) -> None:
  variables["params"][name] = params
  if stats:
    variables["batch_stats"][name] = stats


def _image_tower(config, tensors, variables, prefix, source, report, what) -> None:
  """The image tower under `prefix` (timm ViT, torchvision ResNet, or their HF layouts)."""
  state = sub(tensors, prefix)
  where = f"{source} [{prefix}*]" if prefix else source
  params = variables["params"]["image_encoder"]
  if config.model.image.name == "vit":
    _set(variables, "image_encoder", cc.load_vit(state, params, source=where))
  else:
    new, stats = cc.load_resnet(state, params, variables["batch_stats"].get("image_encoder", {}),
                                source=where)
    _set(variables, "image_encoder", new, stats)
  report.carried.append(f"image_encoder <- {prefix or ''}* ({what})")
  report.prefixes.append(prefix)


def _text_tower(tensors, variables, prefix, source, report) -> None:
  where = f"{source} [{prefix}*]" if prefix else source
  _set(variables, "text_encoder",
       cc.load_bert(sub(tensors, prefix), variables["params"]["text_encoder"], source=where))
  report.carried.append(f"text_encoder <- {prefix}* (Hugging Face BERT, the layers the "
                        f"config's text tower has)")
  report.prefixes.append(prefix)


def _heads(tensors, variables, source, report) -> None:
  for ours, prefix in _MGCA_HEADS.items():
    if not _under(tensors, prefix):
      report.not_carried.append(f"{ours}: not in the checkpoint ({prefix}*): random init")
      continue
    params, stats = cc.load_named(head_state(sub(tensors, prefix)), variables["params"][ours],
                                  variables["batch_stats"].get(ours, {}),
                                  what=f"{ours} ({prefix}*)", source=source)
    _set(variables, ours, params, stats)
    report.prefixes.append(prefix)
    report.carried.append(f"{ours} <- {prefix}{{0,1,3,4}} (Linear-BN-ReLU-Linear-BN, running "
                          f"statistics included)")


def convert(source: str, tensors: Mapping[str, np.ndarray], variables: Mapping, config,
            name: str = "") -> tuple[dict, Report]:
  """The model variables with what checkpoint `tensors` of `source` carries.

  Args:
    source: one of `SOURCES`.
    tensors: the checkpoint's state dict (flat names -> NumPy arrays).
    variables: `{"params", "batch_stats"}` of the target `vlp.VisionLanguageModel` (its
      random init: the leaves the checkpoint does not carry keep it).
    config: the run config (`config.model.image.name` picks the image layout).
    name: the file, for messages.
  Returns:
    (new variables, `Report`).
  Raises:
    ValueError: one line naming the file and every missing / unexpected / mis-shaped key.
  """
  if source not in SOURCES:
    raise ValueError(f"--from {source!r}: expected one of {', '.join(SOURCES)}")
  out = {"params": dict(variables["params"]), "batch_stats": dict(variables["batch_stats"])}
  report = Report()
  if source in ("timm", "torchvision"):
    _image_tower(config, tensors, out, "", name, report, f"{source} layout")
  elif source == "hf":
    _hf(config, tensors, out, name, report)
  elif source in ("asg", "mgca"):
    layout = "timm ViT" if config.model.image.name == "vit" else "torchvision ResNet"
    _image_tower(config, tensors, out, "img_encoder_q.model.", name, report, layout)
    _text_tower(tensors, out, "text_encoder_q.model.", name, report)
    _heads(tensors, out, name, report)
    if source == "asg":
      _asg_extras(config, tensors, out, name, report)
  else:
    _image_tower(config, tensors, out, "gloria.img_encoder.model.", name, report,
                 "torchvision ResNet")
    _text_tower(tensors, out, "gloria.text_encoder.model.", name, report)
    report.not_carried += [f"{h}: GLoRIA has no such MLP head: random init" for h in HEADS]
  for prefix, why in _NOT_CARRIED.items():
    if _under(tensors, prefix):
      report.not_carried.append(f"{prefix}*: {why}")
      report.prefixes.append(prefix)
  if source in ("asg", "mgca", "gloria"):
    rest = sorted({k.rsplit(".", 1)[0] for k in tensors
                   if not any(k.startswith(p) for p in report.prefixes)})
    if rest:
      report.not_carried.append(f"{len(rest)} other modules not mapped: {', '.join(rest[:8])}")
  if "tag_decoder" in out["params"] and not any(c.startswith("tag_decoder") for c in
                                                report.carried):
    report.not_carried.append("tag_decoder: not in the checkpoint: random init")
  if "local_head" in out["params"]:
    report.not_carried.append("local_head (RECLF SRM/IRM): not in the checkpoint: random init")
  return out, report


def _hf(config, tensors, out, name, report) -> None:
  """A Hugging Face checkpoint: whichever towers it holds (BERT; ViT / ResNet)."""
  text = any(k.endswith("embeddings.word_embeddings.weight") for k in tensors)
  image = any(k.endswith(("patch_embeddings.projection.weight",
                          "embedder.embedder.convolution.weight")) for k in tensors)
  if not (text or image):
    raise ValueError(f"{name}: --from hf: no Hugging Face BERT, ViT or ResNet keys found "
                     f"(e.g. {sorted(tensors)[:5]})")
  if text:
    _set(out, "text_encoder", cc.load_bert(tensors, out["params"]["text_encoder"], source=name))
    report.carried.append("text_encoder <- Hugging Face BERT")
  if image:
    _image_tower(config, tensors, out, "", name, report, "Hugging Face layout")


def _asg_extras(config, tensors, out, name, report) -> None:
  """ASG's IRL decoder and its frozen query tower (`text_encoder.*`)."""
  if _under(tensors, "irl."):
    if "tag_decoder" not in out["params"]:
      report.not_carried.append("irl.*: ASG's tag decoder; config.model.tag_decoder.enabled "
                                "is False")
    else:
      out["params"]["tag_decoder"] = irl_to_tag_decoder(
          sub(tensors, "irl."), out["params"]["tag_decoder"], f"{name} [irl.*]")
      report.carried.append("tag_decoder <- irl.* (IRLModel: decoder layers, decoder norm; its "
                            "one mlp_head Linear(d, 1) copied to every tag's row)")
    report.prefixes.append("irl.")
  if _under(tensors, "text_encoder."):
    report.query_tower = sub(tensors, "text_encoder.")
    report.prefixes.append("text_encoder.")
    report.carried.append("tag-query tower (config.model.text.pretrained) <- text_encoder.* "
                          "(the frozen BERT that embeds the 40 tag phrases)")
  del config
