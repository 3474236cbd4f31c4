"""Shared helpers of the transfer evaluators (linear_probe, transfer_zeroshot,
transfer_retrieval; docs/transfer.md).

- `extract`: the frozen encoder run ONCE over a downstream split (jitted, fixed batch size,
  a progress line), cached as `<cache_dir>/<dataset>__<split>__<tag>.npz`;
- binary metrics: `f1_accuracy`, `best_threshold` (chosen on validation);
- prompts: `load_prompts` (the GLoRIA/MGCA prompt sets shipped in evaluators/prompts/);
- results rows (`row`) and the published numbers of results.md (`published`).

The transfer evaluators read their own downstream dataset from their keyword arguments
(`downstream`, `data_dir`, splits): the `data` SplitPass of the plug-in interface is the
pre-training layout and is ignored.
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

from asg_jax.evaluators import metrics as metrics_lib

PROMPT_DIR = os.path.join(os.path.dirname(__file__), "prompts")
ROW_KEYS = ("dataset", "protocol", "metric", "fraction", "init", "value", "std", "chance",
            "published")


# --------------------------------------------------------------------------- features

def geometry_of(predict_fns) -> dict:
  dc = predict_fns["config"].data
  return {"resize": int(dc.resize), "image_size": int(dc.image_size),
          "normalization": str(dc.normalization)}


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

  `keys` are outputs of `predict_fns["encode_images"]` (image_feature, image_emb, patch_emb)
  or "tag_logits" (`predict_fns["tag_logits"]`, the IRL decoder). Cached in `cache_dir`
  (when set) under `tag` (e.g. "pretrained_step500"): a second call with the same arguments
  reads the npz and runs no model. The cache is used only if it was written from the same
  built dataset: the same tfds folder and the same image ids as the split in the build's
  index (a rebuilt or regenerated dataset is extracted afresh, and its npz replaced).
  """
  from asg_jax.data.pipeline import downstream_input  # pylint: disable=import-outside-toplevel
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
  geo = geometry_of(predict_fns)
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
        if "tag_logits" not in predict_fns:
          raise ValueError("tag_logits requested but predict_fns has no tag decoder")
        val = predict_fns["tag_logits"](state, batch["image"])
      else:
        if enc is None:
          enc = predict_fns["encode_images"](state, batch["image"])
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
  from asg_jax.data.pipeline import downstream_input  # pylint: disable=import-outside-toplevel
  return downstream_input.class_names(downstream_input.builder(dataset, data_dir))


def state_tag(state, init: str = "") -> str:
  import jax  # pylint: disable=import-outside-toplevel
  step = int(jax.device_get(getattr(state, "step", 0)))
  return f"{init or getattr(state, 'init', 'model')}_step{step}"


# --------------------------------------------------------------------------- metrics

def f1_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
  """(F1 of the positive class, accuracy) of `scores >= threshold`."""
  pred = np.asarray(scores) >= threshold
  y = np.asarray(labels).astype(bool)
  tp = float(np.sum(pred & y))
  fp = float(np.sum(pred & ~y))
  fn = float(np.sum(~pred & y))
  f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0
  return f1, float(np.mean(pred == y))


def best_threshold(scores: np.ndarray, labels: np.ndarray, criterion: str = "f1") -> float:
  """The threshold maximising `criterion` ("f1" or "accuracy") of `scores >= t` over the
  candidate thresholds = every distinct score (ties broken towards the LOWER threshold);
  for the validation split (then applied to test)."""
  scores = np.asarray(scores, np.float64)
  cands = np.unique(scores)
  if len(cands) == 0:
    return 0.0
  best, best_t = -1.0, float(cands[0])
  for t in cands:
    f1, acc = f1_accuracy(scores, labels, t)
    value = f1 if criterion == "f1" else acc
    if value > best + 1e-12:
      best, best_t = value, float(t)
  return best_t


def macro_auroc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list[float]]:
  """(mean over the classes with both labels present, per-class AUROC list (NaN where one
  label is absent))."""
  per = [metrics_lib.auroc(scores[:, c], labels[:, c] > 0.5) for c in range(labels.shape[1])]
  finite = [a for a in per if np.isfinite(a)]
  return (float(np.mean(finite)) if finite else float("nan")), per


def chance_f1(labels: np.ndarray) -> float:
  """F1 of predicting every example positive (the trivial classifier's best F1)."""
  p = float(np.mean(np.asarray(labels) > 0.5))
  return 2 * p / (1 + p) if p > 0 else 0.0


def chance_accuracy(labels: np.ndarray) -> float:
  """Accuracy of always predicting the majority class (binary)."""
  p = float(np.mean(np.asarray(labels) > 0.5))
  return max(p, 1 - p)


# --------------------------------------------------------------------------- prompts

def load_prompts(name_or_dict: str | Mapping, classes: Sequence[str] | None = None,
                 max_per_class: int = 0, seed: int = 0) -> tuple[dict[str, list[str]],
                                                                 dict[str, list[str]]]:
  """({class: positive prompts}, {class: negative prompts}) of a prompt set.

  `name_or_dict`: a file name in evaluators/prompts/ ("chexpert", "rsna"), a path to such a
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
    emb = np.asarray(predict_fns["embed_texts"](state, chunk + [chunk[-1]] * pad), np.float32)
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


# --------------------------------------------------------------------------- rows

def base_name(dataset: str) -> str:
  """"cxr_chexpert/demo" -> "cxr_chexpert" + whether it is a demo/fixture set."""
  return dataset.split("/")[0]


def row(dataset: str, protocol: str, metric: str, value: float, *, fraction: float | None = None,
        std: float | None = None, chance: float | None = None, init: str = "",
        published: float | None = None) -> dict:
  def num(x):
    return None if x is None or not np.isfinite(x) else float(x)
  return {"dataset": dataset, "protocol": protocol, "metric": metric,
          "fraction": None if fraction is None else float(fraction), "init": init,
          "value": num(value), "std": num(std), "chance": num(chance), "published": num(published)}


def metric_name(r: Mapping) -> str:
  """The flat name an evaluator yields for a row: `<protocol>/<metric>[@<fraction>]`."""
  frac = "" if r["fraction"] is None else f"@{r['fraction']:g}"
  return f"{r['protocol']}/{r['metric']}{frac}"


def yield_rows(rows: Sequence[Mapping]):
  """(name, value) pairs of rows, with `<name>_std` and `chance/<name>` (plug-in interface)."""
  for r in rows:
    name = metric_name(r)
    yield name, r["value"]
    if r["std"] is not None:
      yield f"{name}_std", r["std"]
    if r["chance"] is not None:
      yield f"chance/{name}", r["chance"]


# Published numbers (../shared/reference/results.md, in %): ASG's rows (CNN = ResNet-50,
# ViT = ViT-B/16) for the pre-trained model, "Random init" / "ImageNet init" for the
# baselines. Only the real datasets' default configs have published numbers.
FRACTIONS = (0.01, 0.1, 1.0)   # the papers' label fractions
PUBLISHED_LINEAR_PROBE = {
    # (dataset, init, tower): (1 %, 10 %, 100 %)
    ("cxr_nih14", "random", ""): (52.1, 54.6, 55.3),
    ("cxr_chexpert", "random", ""): (56.1, 62.6, 65.7),
    ("cxr_rsna", "random", ""): (58.9, 69.4, 74.1),
    ("cxr_covidx", "random", ""): (50.5, 60.3, 70.0),
    ("cxr_nih14", "imagenet", ""): (67.0, 67.5, 71.6),
    ("cxr_chexpert", "imagenet", ""): (74.4, 79.7, 81.4),
    ("cxr_rsna", "imagenet", ""): (74.9, 74.5, 76.3),
    ("cxr_covidx", "imagenet", ""): (64.8, 78.8, 86.3),
    ("cxr_nih14", "pretrained", "cnn"): (77.0, 81.0, 82.9),
    ("cxr_chexpert", "pretrained", "cnn"): (87.7, 88.2, 88.7),
    ("cxr_rsna", "pretrained", "cnn"): (87.2, 88.8, 89.7),
    ("cxr_covidx", "pretrained", "cnn"): (77.3, 84.8, 93.3),
    ("cxr_nih14", "pretrained", "vit"): (79.5, 82.2, 83.6),
    ("cxr_chexpert", "pretrained", "vit"): (87.9, 89.0, 89.0),
    ("cxr_rsna", "pretrained", "vit"): (88.4, 89.5, 90.2),
    ("cxr_covidx", "pretrained", "vit"): (81.3, 87.0, 93.3),
}
PUBLISHED_ZERO_SHOT = {   # ASG (tag decoder, KAD protocol): AUC / F1 / ACC
    ("cxr_rsna", "auroc"): 86.2, ("cxr_rsna", "f1"): 62.8, ("cxr_rsna", "accuracy"): 79.4,
    ("cxr_nih14", "auroc"): 77.0, ("cxr_nih14", "f1"): 27.5, ("cxr_nih14", "accuracy"): 90.0,
}


# ../shared/reference/results.md "Segmentation (Dice)", in %: (1 %, 10 %, 100 %)
PUBLISHED_SEGMENTATION = {
    ("cxr_siim", "random", ""): (9.0, 28.6, 54.3),
    ("cxr_siim", "imagenet", ""): (10.2, 35.5, 63.5),
    ("cxr_siim", "pretrained", "cnn"): (60.7, 66.7, 73.6),
    ("cxr_siim", "pretrained", "vit"): (71.9, 74.7, 75.6),
    ("cxr_rsna", "random", ""): (6.9, 10.6, 18.5),
    ("cxr_rsna", "imagenet", ""): (34.8, 39.9, 64.0),
    ("cxr_rsna", "pretrained", "cnn"): (68.4, 69.9, 72.6),
    ("cxr_rsna", "pretrained", "vit"): (71.7, 72.3, 72.8),
}


def published(r: Mapping, tower: str) -> float | None:
  """The results.md number (as a fraction in [0, 1]) for a row, or None."""
  name = r["dataset"]
  if "/" in name and name.split("/", 1)[1] not in ("default", ""):
    return None                            # demo / fixture / other configs: no paper number
  base = base_name(name)
  if r["protocol"] == "linear_probe" and r["fraction"] in FRACTIONS:
    metric_ok = (r["metric"] == "accuracy") if base == "cxr_covidx" else (r["metric"] == "auroc")
    if not metric_ok:
      return None
    key = (base, r["init"], "" if r["init"] != "pretrained" else tower)
    if key in PUBLISHED_LINEAR_PROBE:
      return PUBLISHED_LINEAR_PROBE[key][FRACTIONS.index(r["fraction"])] / 100.0
  if r["protocol"] == "segmentation" and r["metric"] == "dice" and r["fraction"] in FRACTIONS:
    v = PUBLISHED_SEGMENTATION.get((base, r["init"], "" if r["init"] != "pretrained" else tower))
    return None if v is None else v[FRACTIONS.index(r["fraction"])] / 100.0
  if r["protocol"] == "zero_shot_tags" and r["init"] == "pretrained":
    v = PUBLISHED_ZERO_SHOT.get((base, r["metric"]))
    return None if v is None else v / 100.0
  return None


def tower_of(config) -> str:
  return "vit" if config.model.image.name == "vit" else "cnn"
