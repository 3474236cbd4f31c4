"""The results table of the transfer evaluation: one row per (dataset, protocol, metric,
label fraction, init), the published numbers beside ours, and the files it is written to.

    {"dataset", "protocol", "metric", "fraction", "init", "value", "std", "chance",
     "published"}   (values as fractions in [0, 1]; `None` where not defined)

`format_table` renders rows as Markdown; `write_results` writes `<out>/results.json` and
`<out>/results.md`.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Mapping, Sequence

import numpy as np

from asg_jax.evaluators import metrics

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
ROW_KEYS = ("dataset", "protocol", "metric", "fraction", "init", "value", "std", "chance",
            "published", "n", "positives", "ci95")
BOOTSTRAP = 1000          # test-set resamples of the 95 % intervals (200 above BIG_TEST)
BIG_TEST = 5000
FEW_POSITIVES = 10        # per-class rows with fewer test positives are flagged


def base_name(dataset: str) -> str:
  """"cxr_chexpert/demo" -> "cxr_chexpert" + whether it is a demo/fixture set."""
  return dataset.split("/")[0]


def row(dataset: str, protocol: str, metric: str, value: float, *, fraction: float | None = None,
        std: float | None = None, chance: float | None = None, init: str = "",
        published: float | None = None) -> dict:
  """One results row; `n` (test examples), `positives` (a per-class row's test positives)
  and `ci95` ([lo, hi], bootstrap of the test set) are filled by `annotate`."""
  def num(x):
    return None if x is None or not np.isfinite(x) else float(x)
  return {"dataset": dataset, "protocol": protocol, "metric": metric,
          "fraction": None if fraction is None else float(fraction), "init": init,
          "value": num(value), "std": num(std), "chance": num(chance), "published": num(published),
          "n": None, "positives": None, "ci95": None}


# ------------------------------------------------------------------ test-set intervals

def _counts(n: int, num: int, seed: int):
  """[num, n] multinomial resampling counts (a bootstrap of n examples), in chunks."""
  rng = np.random.default_rng(seed)
  for start in range(0, num, 100):
    yield rng.multinomial(n, np.full(n, 1.0 / n), size=min(100, num - start)).astype(np.float64)


def bootstrap(runs, y: np.ndarray, *, accuracy: bool, num: int = 0, seed: int = 0) -> dict:
  """95 % percentile intervals over test-set resamples of the seed-mean metrics of `runs`
  (score arrays [N, C] of the seeds) against 0/1 labels y [N, C]: "auroc" (macro over the
  classes both labels of which the resample has), "auroc[<c>]" (class index c), "accuracy"
  (top-1). The same resamples for every metric (paired)."""
  y = np.asarray(y) > 0.5
  n, num_classes = y.shape
  num = num or (BOOTSTRAP if n <= BIG_TEST else 200)
  runs = [np.asarray(r, np.float64) for r in runs]
  macro, per, acc = [], [], []
  for counts in _counts(n, num, seed):
    aucs = np.stack([[metrics.weighted_auroc(r[:, c], y[:, c], counts) for c in range(num_classes)]
                     for r in runs])                                    # [S, C, b]
    with warnings.catch_warnings():   # a resample without one class' positives: NaN
      warnings.simplefilter("ignore", RuntimeWarning)
      per.append(np.nanmean(aucs, 0) if len(runs) > 1 else aucs[0])    # [C, b]
      macro.append(np.nanmean(np.nanmean(aucs, 1), 0))                 # [b]
    if accuracy:
      hits = np.stack([(r.argmax(-1) == y.argmax(-1)) for r in runs]).astype(np.float64)
      acc.append(np.mean(hits @ counts.T / n, 0))
  def ci(values):
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return None if len(v) < 20 else [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))]
  out = {"auroc": ci(np.concatenate(macro))}
  per = np.concatenate(per, axis=1)
  for c in range(num_classes):
    out[f"auroc[{c}]"] = ci(per[c])
  if accuracy:
    out["accuracy"] = ci(np.concatenate(acc))
  return out


def annotate(rows: Sequence[dict], runs, y: np.ndarray, names: Sequence[str], *,
             accuracy_metrics=("accuracy", "top1"), suffix: str = "") -> None:
  """Fill `n`, `positives` and `ci95` of the rows of ONE fraction / protocol made from the
  test scores `runs` (seeds, [N, C] each) and labels y [N, C] (in place)."""
  y = np.asarray(y)
  accuracy = any(r["metric"] in {m + suffix for m in accuracy_metrics} for r in rows)
  cis = bootstrap(runs, y, accuracy=accuracy)
  index = {f"auroc{suffix}[{name}]": c for c, name in enumerate(names)}
  for r in rows:
    r["n"] = int(y.shape[0])
    if r["metric"] in index:
      c = index[r["metric"]]
      r["positives"] = int(np.sum(y[:, c] > 0.5))
      r["ci95"] = cis[f"auroc[{c}]"]
    elif r["metric"] == "auroc" + suffix:
      r["ci95"] = cis["auroc"]
    elif r["metric"] in {m + suffix for m in accuracy_metrics}:
      r["ci95"] = cis.get("accuracy")


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


# ------------------------------------------------------------------------- the table

def _fmt(v, std=None, ci=None) -> str:
  if v is None:
    return "–"
  s = f"{100 * v:.1f}"
  s += f" ± {100 * std:.1f}" if std is not None else ""
  return s + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def format_table(rows: list[dict], per_class: bool = False) -> str:
  """Markdown: one line per (dataset, protocol, metric, fraction), a column per init, the
  chance level and the published numbers (pretrained / random), all in %."""
  inits = [i for i in ("pretrained", "random", "imagenet") if any(r["init"] == i for r in rows)]
  keys, cell, chance, pub, tests = [], {}, {}, {}, {}
  for r in rows:
    if ("[" in r["metric"]) != per_class:
      continue
    key = (r["dataset"], r["protocol"], r["metric"], r["fraction"])
    if key not in chance:
      keys.append(key)
    cell[key + (r["init"],)] = _fmt(r["value"], r["std"], r.get("ci95"))
    if r.get("n") is not None:
      tests[key] = (r["n"], r.get("positives"))
    chance[key] = r["chance"] if chance.get(key) is None else chance[key]
    if r["published"] is not None:
      pub[key + (r["init"],)] = _fmt(r["published"])
  extra = ["test n"] + (["positives"] if per_class else []) if tests else []
  head = ["dataset", "protocol", "metric", "labels"] + inits + ["chance"] + [
      f"published ({i})" for i in inits] + extra
  lines = ["| " + " | ".join(head) + " |",
           "|" + "---|" * 4 + "---:|" * (2 * len(inits) + 1 + len(extra))]
  for key in keys:
    dataset, protocol, metric, fraction = key
    frac = "" if fraction is None else f"{100 * fraction:g} %"
    vals = [cell.get(key + (i,), "–") for i in inits]
    pubs = [pub.get(key + (i,), "–") for i in inits]
    n, positives = tests.get(key, (None, None))
    more = [] if not extra else ["–" if n is None else f"{n:,}"]
    if extra and per_class:
      more.append("–" if positives is None else f"{positives:,}" + (
          f" ⚠ < {FEW_POSITIVES}" if positives < FEW_POSITIVES else ""))
    lines.append("| " + " | ".join([dataset, protocol, metric, frac] + vals +
                                   [_fmt(chance[key])] + pubs + more) + " |")
  return "\n".join(lines)


def write_results(out_dir: str, results: dict) -> None:
  with open(os.path.join(out_dir, RESULTS_JSON), "w") as f:
    json.dump(results, f, indent=1)
  md = [f"# Transfer results: {results.get('config', '')}", "",
        f"Workdir `{results.get('workdir', '')}` (step {results.get('step')}, "
        f"{results.get('tower')} tower). Values in %, mean ± sample std over the probe seeds "
        f"where several; `published` = ../shared/reference/results.md (ASG's row for "
        f"pretrained) where the paper has this dataset and protocol; [lo, hi] = 95 % "
        f"bootstrap interval over test-set resamples (CheXzero's; {BOOTSTRAP} resamples, 200 "
        f"above {BIG_TEST:,} test images) of the seed mean; `test n` = test images, "
        f"`positives` = a class's test positives, ⚠ where fewer than {FEW_POSITIVES} (such an "
        f"AUROC is anecdotal).", "",
        format_table(results["rows"]), ""]
  if any("[" in r["metric"] for r in results["rows"]):
    md += ["## Per class", "", format_table(results["rows"], per_class=True), ""]
  with open(os.path.join(out_dir, RESULTS_MD), "w") as f:
    f.write("\n".join(md))
