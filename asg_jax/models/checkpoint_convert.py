"""Hugging Face (PyTorch) checkpoints -> the Flax parameter trees of bert / vit / resnet.

The Flax modules are named after the Hugging Face checkpoint layout, so the mapping is by
name: a Flax path `encoder/layer_0/attention/self/query/kernel` reads the checkpoint key
`encoder.layer.0.attention.self.query.weight` (`layer_N`, `layers_N`, `stages_N` -> `.N.`),
possibly under a model prefix (`bert.`, `vit.`, `resnet.`, ...). Leaves:

    Dense kernel [in, out]        <- weight [out, in] (transposed)
    Conv kernel [kh, kw, in, out] <- weight [out, in, kh, kw]
    LayerNorm / BatchNorm scale   <- weight (old checkpoints: gamma); bias <- bias (beta)
    Embed embedding               <- weight
    BatchNorm batch_stats mean / var <- running_mean / running_var
    other params (cls_token, position_embeddings) <- the same name

A scanned ViT / BERT tree (`encoder/layers/...` with a leading layer axis, `scan=True`) is
read through the unscanned layout and restacked (`remat.unstack_layers` / `stack_layers`).
Only the leaves present in the given tree are read (so a 6-layer BERT loads from a 12-layer
checkpoint; the pooler / classifier are ignored). Every shape is checked and all missing or
mismatched keys are reported in one error. Reading prefers `safetensors` (NumPy); a
PyTorch pickle (`pytorch_model.bin`, `*.pt`, `*.pth`, a Lightning `*.ckpt`) is read by
`torch_checkpoint` (no torch needed, no pickled code executed). Nothing is downloaded: a hub
name must already be in the local Hugging Face cache.

Other layouts are recognised by their keys and renamed to the Hugging Face one first: a timm
ViT / DeiT (`timm_convert`, in `load_vit`) and a torchvision ResNet (`torchvision_convert`, in
`load_resnet`). Those loads are strict: a key that is neither converted nor a classifier is
reported as unexpected (LayerScale, fc_norm, ... would change the network).
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Callable, Iterable, Mapping

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

logger = logging.getLogger(__name__)

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_INDEXED = re.compile(r"^(layer|layers|stages)_(\d+)$")
_SHOW = 20  # keys listed in an error message


# --------------------------------------------------------------------------- reading


def resolve_files(path_or_name: str) -> list[str]:
  """The weight file(s) of a checkpoint: a file, a local directory, or a hub name already in
  the local Hugging Face cache (offline, `local_files_only`)."""
  path = os.path.expanduser(str(path_or_name))
  if os.path.isfile(path):
    return _expand_index(path)
  if os.path.isdir(path):
    return _files_in_dir(path, path_or_name)
  if path.startswith(("/", ".", "~")) or path.count("/") > 1:  # a path, not "org/name"
    raise FileNotFoundError(f"checkpoint {path_or_name!r}: no such file or directory")
  try:
    from huggingface_hub import snapshot_download  # pylint: disable=import-outside-toplevel
    snapshot = snapshot_download(repo_id=path, local_files_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise FileNotFoundError(
        f"checkpoint {path_or_name!r} is neither a local file/directory nor a Hugging Face "
        f"hub name in the local cache (HF_HOME / HF_HUB_CACHE; nothing is downloaded at run "
        f"time). Fetch it once with `huggingface-cli download {path_or_name}` or pass a local "
        f"directory holding model.safetensors or pytorch_model.bin ({type(e).__name__}: {e})"
    ) from e
  return _files_in_dir(snapshot, path_or_name)


def _files_in_dir(directory: str, what: str) -> list[str]:
  for name in _WEIGHT_FILES:
    f = os.path.join(directory, name)
    if os.path.isfile(f):
      return _expand_index(f)
  raise FileNotFoundError(f"checkpoint {what!r}: directory {directory} holds none of "
                          f"{', '.join(_WEIGHT_FILES)}")


def _expand_index(path: str) -> list[str]:
  """A sharded checkpoint's `*.index.json` -> its shard files; any other file -> [file]."""
  if not path.endswith(".index.json"):
    return [path]
  with open(path) as f:
    weight_map = json.load(f).get("weight_map")
  if not isinstance(weight_map, dict):
    raise ValueError(f"{path}: expected a JSON object with a 'weight_map' field")
  directory = os.path.dirname(path)
  return [os.path.join(directory, s) for s in sorted(set(weight_map.values()))]


def read_state_dict(path_or_name: str) -> dict[str, np.ndarray]:
  """All tensors of a checkpoint as NumPy arrays, keyed by their names (a Lightning / timm
  wrapper's `state_dict` / `model` entry; bfloat16 read as float32)."""
  state: dict[str, np.ndarray] = {}
  for f in resolve_files(path_or_name):
    state.update(_read_safetensors(f) if f.endswith(".safetensors") else _read_torch(f))
  return state


def _state(path_or_state, source: str = "") -> tuple[Mapping[str, np.ndarray], str]:
  """(tensors, name for messages) of a checkpoint path / hub name or a loaded state dict."""
  if isinstance(path_or_state, Mapping):
    return path_or_state, source or "the given state dict"
  return read_state_dict(path_or_state), source or str(path_or_state)


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors import safe_open  # pylint: disable=import-outside-toplevel
  out = {}
  try:
    with safe_open(path, framework="numpy") as f:
      for k in f.keys():
        out[k] = f.get_tensor(k)
  except (TypeError, ValueError):  # e.g. bfloat16, which NumPy lacks: go through JAX
    with safe_open(path, framework="flax") as f:
      for k in f.keys():
        t = f.get_tensor(k)
        out[k] = np.asarray(t.astype(jnp.float32) if jnp.issubdtype(t.dtype, jnp.floating)
                            else t)
  return out


def _read_torch(path: str) -> dict[str, np.ndarray]:
  """A PyTorch pickle's tensors, read without executing pickled code (`torch_checkpoint`)."""
  from asg_jax.models import torch_checkpoint  # pylint: disable=import-outside-toplevel
  ckpt = torch_checkpoint.load(path)
  if ckpt.skipped:
    logger.info("%s: not loaded (not plain data): %s", path,
                "; ".join(f"{name} at {where}" for where, name in ckpt.skipped[:5]))
  return ckpt.tensors


# --------------------------------------------------------------------------- mapping


def hf_key(path: tuple[str, ...], collection: str = "params") -> tuple[str, Callable]:
  """Flax leaf path -> (checkpoint key without model prefix, array transform).

  The transform maps the checkpoint array to the Flax layout (identity, or a transpose).
  """
  *mods, leaf = path
  mods = [(f"{m.group(1)}.{m.group(2)}" if (m := _INDEXED.match(s)) else s) for s in mods]
  ident = lambda a: a
  if collection == "batch_stats":
    name, fn = {"mean": "running_mean", "var": "running_var"}[leaf], ident
  elif leaf == "kernel":
    name = "weight"
    fn = lambda a: np.transpose(a, (2, 3, 1, 0)) if a.ndim == 4 else a.T
  elif leaf in ("scale", "embedding"):
    name, fn = "weight", ident
  else:
    name, fn = leaf, ident
  return ".".join(mods + [name]), fn


def _legacy_aliases(key: str) -> list[str]:
  """Alternative spellings of a key in older / newer checkpoints."""
  out = []
  if key.endswith("LayerNorm.weight"):
    out.append(key[:-len("weight")] + "gamma")
  if key.endswith("LayerNorm.bias"):
    out.append(key[:-len("bias")] + "beta")
  return out


def _vit_v5_aliases(key: str) -> list[str]:
  """The transformers-v5 in-memory names of a ViT key (`layers.N.attention.q_proj`, ...),
  for state dicts saved with `torch.save(model.state_dict())` rather than `save_pretrained`."""
  k = re.sub(r"^encoder\.layer\.", "layers.", key)
  for old, new in (("attention.attention.query", "attention.q_proj"),
                   ("attention.attention.key", "attention.k_proj"),
                   ("attention.attention.value", "attention.v_proj"),
                   ("attention.output.dense", "attention.o_proj"),
                   ("intermediate.dense", "mlp.fc1"), ("output.dense", "mlp.fc2")):
    k = k.replace(old, new)
  return [k] if k != key else []


def _load_tree(tree: Mapping, state: Mapping[str, np.ndarray], *, collection: str,
               prefixes: Iterable[str], aliases: Callable[[str], list[str]], what: str,
               source: str, unexpected: Iterable[str] = ()) -> tuple[dict, set[str]]:
  """Fills every leaf of `tree` from `state`; returns (new tree, checkpoint keys used).
  `unexpected`: checkpoint keys a strict layout could not place (reported, refused)."""
  flat = traverse_util.flatten_dict(_unfreeze(tree))
  prefixes = ("",) + tuple(prefixes)
  new, used, missing, mismatched = {}, set(), [], []
  for path, leaf in flat.items():
    base, fn = hf_key(path, collection)
    names = [base] + _legacy_aliases(base) + aliases(base)
    found = next((p + n for n in names for p in prefixes if p + n in state), None)
    if found is None:
      missing.append(f"{'/'.join(path)} (checkpoint key {base!r})")
      continue
    used.add(found)
    value = fn(np.asarray(state[found]))
    if tuple(value.shape) != tuple(leaf.shape):
      mismatched.append(f"{'/'.join(path)} {tuple(leaf.shape)} <- {found} "
                        f"{tuple(np.asarray(state[found]).shape)}")
      continue
    new[path] = jnp.asarray(value, dtype=leaf.dtype)
  unexpected = sorted(unexpected)
  if missing or mismatched or unexpected:
    raise ValueError(load_error(what, collection, source, state, missing, unexpected,
                                mismatched))
  return traverse_util.unflatten_dict(new), used


def load_error(what: str, collection: str, source: str, state: Mapping, missing: list[str],
               unexpected: list[str], mismatched: list[str]) -> str:
  """The one-line message naming the file and every missing / unexpected / mis-shaped key."""
  def some(items):
    return "; ".join(items[:_SHOW]) + (" ..." if len(items) > _SHOW else "")
  parts = [f"cannot load {what} {collection} from {source!r}:"]
  if missing:
    parts.append(f"{len(missing)} missing in the checkpoint ({some(missing)});")
  if unexpected:
    parts.append(f"{len(unexpected)} unexpected in the checkpoint, not part of this "
                 f"architecture ({some(unexpected)});")
  if mismatched:
    parts.append(f"{len(mismatched)} shape mismatches, model <- checkpoint ({some(mismatched)});")
  parts.append(f"the checkpoint has {len(state)} tensors, e.g. {sorted(state)[:8]}; check the "
               f"config sizes (hidden size, layers, heads, vocab, image/patch size)")
  return " ".join(parts)


def _unfreeze(tree: Mapping) -> dict:
  return {k: _unfreeze(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def _load(path_or_name, params: Mapping, what: str, prefixes: tuple[str, ...],
          aliases: Callable[[str], list[str]] = lambda k: [],
          batch_stats: Mapping | None = None, convert: Callable | None = None,
          source: str = ""):
  """`convert(state, source) -> (state, unexpected) | None`: another layout renamed to HF
  keys first (None: the state is in the HF layout already)."""
  state, source = _state(path_or_name, source)
  unexpected = []
  converted = None if convert is None else convert(state, source)
  if converted is not None:   # strict: every converted key must have its place
    (state, unexpected), prefixes = converted, ("",)
    wanted = {hf_key(p)[0] for p in traverse_util.flatten_dict(_unfreeze(params))} | {
        hf_key(p, "batch_stats")[0]
        for p in traverse_util.flatten_dict(_unfreeze(batch_stats or {}))}
    unexpected = list(unexpected) + [k for k in state if k not in wanted]
  kw = dict(prefixes=prefixes, aliases=aliases, what=what, source=source,
            unexpected=unexpected)
  new_params, used = _load_tree(params, state, collection="params", **kw)
  new_stats = None
  if batch_stats is not None:
    new_stats, used_stats = _load_tree(batch_stats, state, collection="batch_stats", **kw)
    used |= used_stats
  logger.info("%s: loaded %d tensors from %s (%d checkpoint tensors unused)", what, len(used),
              source, len(state) - len(used))
  return new_params, new_stats


def _load_layers(path_or_name, params: Mapping, what: str, prefixes: tuple[str, ...],
                 aliases: Callable[[str], list[str]] = lambda k: [],
                 convert: Callable | None = None, source: str = "") -> dict:
  """`_load` for a ViT / BERT tree in either layout: a scanned tree (`encoder/layers`, the
  `scan=True` towers) is unstacked to `encoder/layer_{i}`, loaded, and stacked again."""
  from asg_jax.models import remat  # pylint: disable=import-outside-toplevel
  scanned = remat.is_scanned(params)
  tree = remat.unstack_layers(params) if scanned else params
  new, _ = _load(path_or_name, tree, what, prefixes, aliases, convert=convert, source=source)
  return remat.stack_layers(new) if scanned else new


# --------------------------------------------------------------------------- public


def load_named(state: Mapping[str, np.ndarray], params: Mapping,
               batch_stats: Mapping | None = None, *, what: str, source: str,
               strict: bool = True) -> tuple[dict, dict | None]:
  """Fills `params` (and `batch_stats`) from `state` already named in the Hugging Face way
  (`hf_key`: `dense_0.weight`, `bn_0.running_mean`, ...). `strict`: a key of `state` that no
  leaf reads is an error too. Returns (params, batch_stats or None)."""
  convert = (lambda st, src: (dict(st), [])) if strict else None
  return _load(state, params, what, ("",), batch_stats=batch_stats, convert=convert,
               source=source)


def load_bert(path_or_name, params: Mapping, source: str = "") -> dict:
  """Loads a Hugging Face BERT checkpoint into `BertEncoder` params.

  Args:
    path_or_name: local dir (model.safetensors / pytorch_model.bin), weight file, hub
      name in the local HF cache (e.g. "emilyalsentzer/Bio_ClinicalBERT"), or a state dict
      of NumPy arrays.
    params: the `BertEncoder` params tree (its layers decide which checkpoint layers are read),
      arrays or ShapeDtypeStructs; the scanned layout (`encoder/layers`, `scan=True`) too.
  Returns:
    a params tree of the same structure with the checkpoint's values.
  Raises:
    ValueError naming every missing / shape-mismatched key; FileNotFoundError.
  """
  return _load_layers(path_or_name, params, "BERT", ("bert.", "model.", "encoder."),
                      source=source)


def load_vit(path_or_name, params: Mapping, source: str = "") -> dict:
  """Loads a Hugging Face ViT / DeiT checkpoint (`ViTModel`, `ViTForImageClassification`,
  keys possibly prefixed `vit.`) or a timm ViT / DeiT (`VisionTransformer`, a DeiT release's
  `{"model": ...}`; `timm_convert`) into `ViT` params; same contract as `load_bert`. The
  position embeddings must match the model's patch grid (no interpolation)."""
  pos = _find_leaf(params, "position_embeddings")
  num_patches = None if pos is None else int(pos.shape[1]) - 1

  def convert(state, source):
    from asg_jax.models import timm_convert  # pylint: disable=import-outside-toplevel
    prefix = timm_convert.timm_prefix(state)
    return None if prefix is None else timm_convert.to_hf(state, prefix, num_patches, source)
  return _load_layers(path_or_name, params, "ViT", ("vit.", "deit.", "model."),
                      _vit_v5_aliases, convert=convert, source=source)


def load_resnet(path_or_name, params: Mapping, batch_stats: Mapping | None = None,
                source: str = ""):
  """Loads a Hugging Face `ResNetModel` / `ResNetForImageClassification` checkpoint
  (microsoft/resnet-50 layout, keys possibly prefixed `resnet.`) or a torchvision ResNet
  (`torchvision.models.resnet50`, `torchvision_convert`) into `ResNet50` params.

  Args:
    path_or_name, params, source: as `load_bert` (`source`: the name in messages).
    batch_stats: the `ResNet50` batch_stats tree; when given, the BatchNorm running
      statistics are loaded too.
  Returns:
    the new params, or `(params, batch_stats)` when `batch_stats` is given.
  """
  def convert(state, source):
    del source
    from asg_jax.models import torchvision_convert  # pylint: disable=import-outside-toplevel
    prefix = torchvision_convert.torchvision_prefix(state)
    return None if prefix is None else torchvision_convert.to_hf(state, prefix)
  new, stats = _load(path_or_name, params, "ResNet", ("resnet.", "model."),
                     batch_stats=batch_stats, convert=convert, source=source)
  return new if batch_stats is None else (new, stats)


def _find_leaf(tree: Mapping, name: str):
  """The first leaf called `name` in a nested mapping (None when there is none)."""
  for key, value in tree.items():
    if key == name and not isinstance(value, Mapping):
      return value
    if isinstance(value, Mapping):
      found = _find_leaf(value, name)
      if found is not None:
        return found
  return None
