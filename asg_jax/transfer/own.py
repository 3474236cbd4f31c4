"""Transfer evaluation on the user's own labelled images, and building any downstream
dataset from its manual download (docs/transfer.md "Evaluate on your own labelled images").

    python -m asg_jax.evaluate --workdir W --config configs/transfer/own_labels.py \
        --config.own.path=PATH --out OUT

`prepare(config, out_dir)` (called by `transfer.run.run_transfer` before any evaluator is
built) does two things:

- `config.own.path` set (a labels CSV or a class-folder root): builds `labelled_images/<name>`
  into `config.own.data_dir` (default `<out>/tfds`; rebuilt when the labels file, the image
  list or an option changes) and points every evaluator whose `downstream` is "own" at it:
  `downstream`, `data_dir`, the probe's `task` (`config.own.task`, else the layout's: a
  `labels` column or label columns = multi-label, a `label` column or class folders =
  one-hot), zero-shot prompts written from the class names (`<out>/own_prompts.json`) and
  the tag decoder queried with the names;
- `config.manual_dir` set: builds every evaluator's downstream tfds dataset that is not built
  in `config.data_dir` (or whose label files changed) from that folder
  (`data/builders/build.prepare`; the folder is only read).
"""
from __future__ import annotations

import json
import os
import re

import ml_collections

from asg_jax import distributed
from asg_jax.errors import ConfigError
from asg_jax.transfer.config import OWN   # the `downstream` of evaluators on the user's dataset
PROMPTS_FILE = "own_prompts.json"
NORMAL_NAMES = {"no finding", "normal", "none", "negative", "healthy", "no disease"}
NORMAL_PROMPTS = ("no acute cardiopulmonary process", "no active disease in the chest",
                  "normal chest radiograph", "the lungs are clear")


def phrase(name: str) -> str:
  """A class name as words: "Pleural_Thickening" -> "pleural thickening"."""
  return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", name)).strip().lower()


def class_prompts(names) -> dict[str, dict[str, list[str]]]:
  """A prompt set (features.load_prompts' JSON: template + phrase lists) built from class
  names: "<finding>", "there is <finding>", "findings consistent with <finding>",
  "<finding> is present"; a normal class (No Finding, normal, ...) gets normal-study
  phrases."""
  classes = {}
  for n in names:
    p = phrase(n)
    if p in NORMAL_NAMES:
      classes[n] = {"text": list(NORMAL_PROMPTS)}
    else:
      classes[n] = {"text": [p, f"there is {p}", f"findings consistent with {p}",
                             f"{p} is present"]}
  return {"template": ["text"], "classes": classes}


def own_entries(config: ml_collections.ConfigDict) -> list[str]:
  return [n for n in sorted(config.evals) if str(config.evals[n].get("downstream", "")) == OWN]


def prepare(config: ml_collections.ConfigDict, out_dir: str) -> dict | None:
  """See the module docstring. Mutates `config` (an unlocked copy); returns the own build's
  `labelled_images.prepare` dict (None without own labels)."""
  if config.get("manual_dir"):
    build_downstream(config)
  entries = own_entries(config)
  own = config.get("own")
  if not entries:
    return None
  if own is None or not own.path:
    raise ConfigError(f"evaluators {entries} read your own labelled images: pass "
                      "--config.own.path=PATH (a labels CSV, or a folder with one sub-folder "
                      "per class)")
  from asg_jax.data.builders import labelled_images  # pylint: disable=import-outside-toplevel
  data_dir = own.data_dir or os.path.join(out_dir, "tfds")
  options = dict(name=own.name, image_size=own.image_size, uncertain=own.uncertain,
                 all_views=own.all_views, seed=own.split_seed,
                 validation_fraction=own.validation_fraction,
                 test_fraction=own.test_fraction, label_columns=tuple(own.label_columns))
  try:
    config_ = labelled_images.make_config(own.path, **options)
  except (FileNotFoundError, ValueError) as e:
    raise ConfigError(f"config.own.path: {e}") from e
  built = None
  with distributed.first_process_only("build your own labelled images") as mine:
    if mine:
      built = labelled_images.prepare(own.path, data_dir, rebuild=own.rebuild, **options)
  dataset = f"{labelled_images.NAME}/{config_.name}"
  layout_task = "multiclass" if config_.label_mode in ("label", "folders") else "multilabel"
  task = own.task if own.task != "auto" else layout_task
  if task not in ("multilabel", "multiclass"):
    raise ConfigError(f"config.own.task = {own.task!r}; expected auto, multilabel or multiclass")
  prompts = os.path.join(out_dir, PROMPTS_FILE)
  if not os.path.isfile(prompts) or _read(prompts) != class_prompts(config_.class_names):
    with open(prompts, "w") as f:
      json.dump(class_prompts(config_.class_names), f, indent=1)
  for name in entries:
    e = config.evals[name]
    e.downstream, e.data_dir = dataset, data_dir
    if e.type == "linear_probe":
      e.task = task
    if e.type == "zeroshot":
      e.prompts = prompts
  return built


def _read(path: str):
  with open(path) as f:
    return json.load(f)


def build_downstream(config: ml_collections.ConfigDict) -> None:
  """Build each evaluator's downstream dataset from `config.manual_dir` into
  `config.data_dir` (the tfds default when empty), unless up to date."""
  from asg_jax.data.builders import build  # pylint: disable=import-outside-toplevel
  if not os.path.isdir(config.manual_dir):
    raise ConfigError(f"config.manual_dir = {config.manual_dir!r} is not a folder")
  seen = set()
  for name in sorted(config.evals):
    ds = str(config.evals[name].get("downstream", ""))
    if not ds or ds == OWN or ds in seen:
      continue
    seen.add(ds)
    base, _, sub = ds.partition("/")
    data_dir = config.evals[name].get("data_dir") or config.data_dir or None
    with distributed.first_process_only(f"build {ds}") as mine:
      if mine:
        build.prepare(base, sub or None, data_dir or _tfds_default(), config.manual_dir)


def _tfds_default() -> str:
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return os.fspath(tfds.core.constants.DATA_DIR)
