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
from typing import Mapping, Sequence

import numpy as np

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
ROW_KEYS = ("dataset", "protocol", "metric", "fraction", "init", "value", "std", "chance",
            "published")


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


# ------------------------------------------------------------------------- the table

def _fmt(v, std=None) -> str:
  if v is None:
    return "–"
  s = f"{100 * v:.1f}"
  return s + (f" ± {100 * std:.1f}" if std is not None else "")


def format_table(rows: list[dict], per_class: bool = False) -> str:
  """Markdown: one line per (dataset, protocol, metric, fraction), a column per init, the
  chance level and the published numbers (pretrained / random), all in %."""
  inits = [i for i in ("pretrained", "random", "imagenet") if any(r["init"] == i for r in rows)]
  keys, cell, chance, pub = [], {}, {}, {}
  for r in rows:
    if ("[" in r["metric"]) != per_class:
      continue
    key = (r["dataset"], r["protocol"], r["metric"], r["fraction"])
    if key not in chance:
      keys.append(key)
    cell[key + (r["init"],)] = _fmt(r["value"], r["std"])
    chance[key] = r["chance"] if chance.get(key) is None else chance[key]
    if r["published"] is not None:
      pub[key + (r["init"],)] = _fmt(r["published"])
  head = ["dataset", "protocol", "metric", "labels"] + inits + ["chance"] + [
      f"published ({i})" for i in inits]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (2 * len(inits) + 1)]
  for key in keys:
    dataset, protocol, metric, fraction = key
    frac = "" if fraction is None else f"{100 * fraction:g} %"
    vals = [cell.get(key + (i,), "–") for i in inits]
    pubs = [pub.get(key + (i,), "–") for i in inits]
    lines.append("| " + " | ".join([dataset, protocol, metric, frac] + vals +
                                   [_fmt(chance[key])] + pubs) + " |")
  return "\n".join(lines)


def write_results(out_dir: str, results: dict) -> None:
  with open(os.path.join(out_dir, RESULTS_JSON), "w") as f:
    json.dump(results, f, indent=1)
  md = [f"# Transfer results: {results.get('config', '')}", "",
        f"Workdir `{results.get('workdir', '')}` (step {results.get('step')}, "
        f"{results.get('tower')} tower). Values in %, mean ± sample std over the probe seeds "
        f"where several; `published` = ../shared/reference/results.md (ASG's row for "
        f"pretrained) where the paper has this dataset and protocol.", "",
        format_table(results["rows"]), ""]
  if any("[" in r["metric"] for r in results["rows"]):
    md += ["## Per class", "", format_table(results["rows"], per_class=True), ""]
  with open(os.path.join(out_dir, RESULTS_MD), "w") as f:
    f.write("\n".join(md))
