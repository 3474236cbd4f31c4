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
`pytorch_model.bin` needs torch. Nothing is downloaded: a hub name must already be in the
local Hugging Face cache.
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
  """All tensors of a checkpoint as float32/int NumPy arrays, keyed by their names."""
  state: dict[str, np.ndarray] = {}
  for f in resolve_files(path_or_name):
    state.update(_read_safetensors(f) if f.endswith(".safetensors") else _read_torch(f))
  return state


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
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError(f"{path} is a PyTorch pickle; reading it needs torch (pip install "
                      f"torch), or convert it to model.safetensors") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if not isinstance(sd, Mapping):
    raise ValueError(f"{path}: expected a state dict (a mapping of tensors), got {type(sd)}")
  return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in sd.items()
          if hasattr(v, "numpy")}


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
               source: str) -> tuple[dict, set[str]]:
  """Fills every leaf of `tree` from `state`; returns (new tree, checkpoint keys used)."""
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
  if missing or mismatched:
    lines = [f"cannot load {what} {collection} from {source!r}:"]
    if missing:
      lines.append(f"  {len(missing)} missing in the checkpoint: " + "; ".join(missing[:_SHOW])
                   + (" ..." if len(missing) > _SHOW else ""))
    if mismatched:
      lines.append(f"  {len(mismatched)} shape mismatches (model <- checkpoint): "
                   + "; ".join(mismatched[:_SHOW]) + (" ..." if len(mismatched) > _SHOW else ""))
    sample = sorted(state)[:8]
    lines.append(f"  (the checkpoint has {len(state)} tensors, e.g. {sample}); check the "
                 f"config sizes (hidden size, layers, heads, vocab, image/patch size)")
    raise ValueError("\n".join(lines))
  return traverse_util.unflatten_dict(new), used


def _unfreeze(tree: Mapping) -> dict:
  return {k: _unfreeze(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def _load(path_or_name: str, params: Mapping, what: str, prefixes: tuple[str, ...],
          aliases: Callable[[str], list[str]] = lambda k: [],
          batch_stats: Mapping | None = None):
  state = read_state_dict(path_or_name)
  kw = dict(prefixes=prefixes, aliases=aliases, what=what, source=str(path_or_name))
  new_params, used = _load_tree(params, state, collection="params", **kw)
  new_stats = None
  if batch_stats is not None:
    new_stats, used_stats = _load_tree(batch_stats, state, collection="batch_stats", **kw)
    used |= used_stats
  logger.info("%s: loaded %d tensors from %s (%d checkpoint tensors unused)", what, len(used),
              path_or_name, len(state) - len(used))
  return new_params, new_stats


def _load_layers(path_or_name: str, params: Mapping, what: str, prefixes: tuple[str, ...],
                 aliases: Callable[[str], list[str]] = lambda k: []) -> dict:
  """`_load` for a ViT / BERT tree in either layout: a scanned tree (`encoder/layers`, the
  `scan=True` towers) is unstacked to `encoder/layer_{i}`, loaded, and stacked again."""
  from asg_jax.models import remat  # pylint: disable=import-outside-toplevel
  scanned = remat.is_scanned(params)
  tree = remat.unstack_layers(params) if scanned else params
  new, _ = _load(path_or_name, tree, what, prefixes, aliases)
  return remat.stack_layers(new) if scanned else new


# --------------------------------------------------------------------------- public


def load_bert(path_or_name: str, params: Mapping) -> dict:
  """Loads a Hugging Face BERT checkpoint into `BertEncoder` params.

  Args:
    path_or_name: local dir (model.safetensors / pytorch_model.bin), weight file, or hub
      name in the local HF cache (e.g. "emilyalsentzer/Bio_ClinicalBERT").
    params: the `BertEncoder` params tree (its layers decide which checkpoint layers are read),
      arrays or ShapeDtypeStructs; the scanned layout (`encoder/layers`, `scan=True`) too.
  Returns:
    a params tree of the same structure with the checkpoint's values.
  Raises:
    ValueError naming every missing / shape-mismatched key; FileNotFoundError.
  """
  return _load_layers(path_or_name, params, "BERT", ("bert.", "model.", "encoder."))


def load_vit(path_or_name: str, params: Mapping) -> dict:
  """Loads a Hugging Face ViT / DeiT checkpoint (`ViTModel`, `ViTForImageClassification`,
  keys possibly prefixed `vit.`) into `ViT` params; same contract as `load_bert`. The
  position embeddings must match the model's patch grid (no interpolation)."""
  return _load_layers(path_or_name, params, "ViT", ("vit.", "deit.", "model."),
                      _vit_v5_aliases)


def load_resnet(path_or_name: str, params: Mapping, batch_stats: Mapping | None = None):
  """Loads a Hugging Face `ResNetModel` / `ResNetForImageClassification` checkpoint
  (microsoft/resnet-50 layout, keys possibly prefixed `resnet.`) into `ResNet50` params.

  Args:
    path_or_name, params: as `load_bert`.
    batch_stats: the `ResNet50` batch_stats tree; when given, the BatchNorm running
      statistics are loaded too.
  Returns:
    the new params, or `(params, batch_stats)` when `batch_stats` is given.
  """
  new, stats = _load(path_or_name, params, "ResNet", ("resnet.", "model."),
                     batch_stats=batch_stats)
  return new if batch_stats is None else (new, stats)
