"""The frozen encoders' features on downstream data, shared by the transfer evaluators
(docs/transfer.md):

- `extract`: the frozen image encoder run ONCE over a downstream split (jitted, fixed batch
  size, a progress line), cached as `<cache_dir>/<dataset>__<split>__<tag>.npz`;
- text features: `load_prompts` (the GLoRIA/MGCA prompt sets shipped in transfer/prompts/),
  `embed_prompts`, `class_prototypes`.

The transfer evaluators read their own downstream dataset from their keyword arguments
(`downstream`, `data_dir`, splits).
"""
from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np

from asg_jax.data.pipeline import downstream_input

PROMPT_DIR = os.path.join(os.path.dirname(__file__), "prompts")


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def progress(msg: str) -> None:
  print(msg, file=sys.stderr, flush=True)


CACHE_SOURCE = "source_build"   # the cached npz's entry naming the tfds build it came from


def _build_dir(b) -> str:
  return os.path.abspath(os.fspath(b.data_dir))


def _cache_matches(cached: Mapping[str, Any], b, split: str, max_examples: int) -> bool:
  """Whether cached features were extracted from this build of the dataset (its folder and
  the split's image ids; with `max_examples`, its folder and the count)."""
  from asg_jax.data.builders import downstream as ds_lib  # pylint: disable=import-outside-toplevel
  if str(cached.get(CACHE_SOURCE, "")) != _build_dir(b):
    return False
  ids = ds_lib.read_index(b).get(split, {}).get("image_id", [])
  if max_examples > 0:     # the first N read: compare the count only
    return len(cached["image_id"]) == min(max_examples, len(ids))
  return sorted(cached["image_id"]) == sorted(ids)


def extract(predict_fns, state, dataset: str, split: str, *, data_dir: str,
            keys: Sequence[str] = ("image_feature",), batch_size: int = 64,
            cache_dir: str = "", tag: str = "", max_examples: int = 0,
            extra: Mapping[str, Any] | None = None) -> dict:
  """{"image_id" [N] str, "labels" [N, C], key: [N, ...] for each key} of one split.

  `keys` are outputs of `predict_fns.encode_images` (image_feature, image_emb, patch_emb)
  or "tag_logits" (`predict_fns.tag_logits`, the IRL decoder). Cached in `cache_dir`
  (when set) under `tag` (e.g. "pretrained_step500"): a second call with the same arguments
  reads the npz and runs no model. The cache is used only if it was written from the same
  built dataset: the same tfds folder and the same image ids as the split in the build's
  index (a rebuilt or regenerated dataset is extracted afresh, and its npz replaced).
  """
  b = downstream_input.builder(dataset, data_dir)
  path = ""
  if cache_dir:
    name = "__".join(_safe(x) for x in (dataset, split, tag or "model", *sorted(keys)))
    path = os.path.join(cache_dir, f"{name}__n{max_examples}.npz")
    if os.path.isfile(path):
      with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
      out["image_id"] = [str(i) for i in out["image_id"]]
      if _cache_matches(out, b, split, max_examples):
        out.pop(CACHE_SOURCE, None)
        return out
      progress(f"  features {dataset}/{split}: the cache {os.path.basename(path)} was written "
               "from another build of the dataset; extracting again")
  geo = predict_fns.info.geometry
  total = downstream_input.num_examples(b, split)
  if max_examples > 0:
    total = min(total, max_examples)
  got: dict[str, list] = {k: [] for k in keys}
  labels, ids = [], []
  start, done = time.time(), 0
  last = start
  for batch in downstream_input.batches(b, split, data_dir=data_dir, batch_size=batch_size,
                                        max_examples=max_examples, **geo):
    v = batch["valid"]
    enc = None
    for k in keys:
      if k == "tag_logits":
        if predict_fns.tag_logits is None:
          raise ValueError("tag_logits requested but predict_fns has no tag decoder")
        val = predict_fns.tag_logits(state, batch["image"])
      else:
        if enc is None:
          enc = predict_fns.encode_images(state, batch["image"])
        val = enc[k]
      got[k].append(np.asarray(val, np.float32)[v])
    labels.append(batch["labels"][v])
    ids += [i for i, ok in zip(batch["image_id"], v) if ok]
    done += int(v.sum())
    now = time.time()
    if now - last > 10 or done == total:
      rate = done / max(now - start, 1e-9)
      progress(f"  features {dataset}/{split}: {done}/{total} images | {rate:.1f} images/s")
      last = now
  if not ids:
    raise ValueError(f"{dataset}/{split}: no example")
  out = {k: np.concatenate(v) for k, v in got.items()}
  out["labels"] = np.concatenate(labels)
  out["image_id"] = ids
  out["seconds"] = np.float64(time.time() - start)
  if path:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}.npz"   # several processes may write the same cache
    np.savez(tmp, **{k: (np.asarray(v) if k != "image_id" else np.asarray(v, str))
                     for k, v in out.items()}, **(extra or {}),
             **{CACHE_SOURCE: np.asarray(_build_dir(b))})
    os.replace(tmp, path)
  return out


def class_names(dataset: str, data_dir: str) -> list[str]:
  return downstream_input.class_names(downstream_input.builder(dataset, data_dir))


def state_tag(state, init: str = "") -> str:
  import jax  # pylint: disable=import-outside-toplevel
  step = int(jax.device_get(getattr(state, "step", 0)))
  return f"{init or getattr(state, 'init', 'model')}_step{step}"


# ------------------------------------------------------------------------- prompts

def load_prompts(name_or_dict: str | Mapping, classes: Sequence[str] | None = None,
                 max_per_class: int = 0, seed: int = 0) -> tuple[dict[str, list[str]],
                                                                 dict[str, list[str]]]:
  """({class: positive prompts}, {class: negative prompts}) of a prompt set.

  `name_or_dict`: a file name in transfer/prompts/ ("chexpert", "rsna"), a path to such a
  JSON file, or {class: [prompts]} directly. A JSON set lists, per class, phrase lists whose
  product in the `template` order, joined by spaces (empty phrases dropped), gives the
  prompts (GLoRIA's construction). `classes` keeps those (KeyError naming a missing one);
  `max_per_class` > 0 samples that many per class (NumPy RandomState(seed), sorted order).
  """
  negatives: dict[str, list[str]] = {}
  if isinstance(name_or_dict, Mapping):
    positives = {k: list(v) for k, v in name_or_dict.items()}
  else:
    path = name_or_dict
    if not os.path.isfile(path):
      path = os.path.join(PROMPT_DIR, f"{name_or_dict}.json")
    with open(path) as f:
      spec = json.load(f)
    positives = {}
    for cls, lists in spec["classes"].items():
      seen, out = set(), []
      for combo in itertools.product(*[lists[k] for k in spec["template"]]):
        text = " ".join(p.strip() for p in combo if p.strip())
        if text not in seen:
          seen.add(text)
          out.append(text)
      positives[cls] = out
    negatives = {k: list(v) for k, v in spec.get("negatives", {}).items()}
  if classes is not None:
    missing = [c for c in classes if c not in positives]
    if missing:
      raise KeyError(f"prompt set has no prompts for {missing} (it has {sorted(positives)})")
    positives = {c: positives[c] for c in classes}
    negatives = {c: negatives[c] for c in classes if c in negatives}
  if max_per_class > 0:
    rng = np.random.RandomState(seed)
    positives = {c: [p[i] for i in sorted(rng.permutation(len(p))[:max_per_class])]
                 for c, p in positives.items()}
  return positives, negatives


def embed_prompts(predict_fns, state, texts: Sequence[str], batch_size: int = 256) -> np.ndarray:
  """[K, E] L2-normalised embeddings of free texts, cleaned like training captions."""
  from asg_jax.inference import caption_of  # pylint: disable=import-outside-toplevel
  out = []
  texts = [caption_of(t) for t in texts]
  for i in range(0, len(texts), batch_size):
    chunk = texts[i:i + batch_size]
    pad = batch_size - len(chunk) if len(texts) > batch_size else 0
    emb = np.asarray(predict_fns.embed_texts(state, chunk + [chunk[-1]] * pad), np.float32)
    out.append(emb[:len(chunk)])
  emb = np.concatenate(out)
  return emb / np.maximum(np.linalg.norm(emb, axis=-1, keepdims=True), 1e-12)


def class_prototypes(predict_fns, state, prompts: Mapping[str, Sequence[str]]) -> np.ndarray:
  """[C, E]: per class the re-normalised mean of its prompts' embeddings (GLoRIA/MGCA)."""
  protos = []
  for cls, texts in prompts.items():
    if not texts:
      raise ValueError(f"class {cls!r} has no prompt")
    m = embed_prompts(predict_fns, state, texts).mean(0)
    protos.append(m / max(float(np.linalg.norm(m)), 1e-12))
  return np.stack(protos)


def l2n(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
