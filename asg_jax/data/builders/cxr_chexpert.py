"""tfds builder `cxr_chexpert`: CheXpert v1.0 (small or full) for linear probing, and
CheXpert 5×200 for zero-shot / retrieval (MGCA's protocol; docs/data.md).

Named `cxr_chexpert` because tfds ships its own `chexpert` builder (other labels, no 5×200).

Config `default` (and `demo`), frontal images only (`Frontal/Lateral` = Frontal):
  test        the frontal rows of valid.csv
  5×200       from train.csv's frontal rows, per competition task (vocab.json order)
              the rows with that task 1.0 and each of the other 12 labelled observations
              0.0 or blank (No Finding unconstrained), `df.sample(n=200, random_state=0)`
              (positions `RandomState(0).permutation(n)[:200]`, rows in file order)
  validation  of the remaining frontal training rows, `validation_size` (5,000) sampled
              with `RandomState(0).permutation(n)[:5000]`
  train       the rest (5×200 images excluded)
labels: the 5 competition tasks; blank -> 0; -1 (uncertain) -> 1 for Atelectasis, Edema,
Pleural Effusion (U-ones) and -> 0 for Cardiomegaly, Consolidation (U-zeros).

Config `5x200` (and `demo_5x200`): split `test` only, the 5×200 images, `labels` one-hot.
image_id = the `Path` cell; patient_id = its `patientNNNNN` folder.
"""
from __future__ import annotations

import os
import re

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream
from asg_jax.data.reports import CHEXPERT

TRAIN_CSV, VALID_CSV = "train.csv", "valid.csv"
ROOT_NAMES = ("CheXpert-v1.0-small", "CheXpert-v1.0")
U_ONES = ("Atelectasis", "Edema", "Pleural Effusion")
U_ZEROS = ("Cardiomegaly", "Consolidation")
TASKS = downstream.CHEXPERT_5
OTHERS_12 = tuple(c for c in CHEXPERT if c != "No Finding")   # the 5x200 constraint's 13 = task + 12
_PATIENT = re.compile(r"(patient\d+)")


def parse_row(row: dict) -> dict[str, float]:
  """The 14 observation cells -> {name: 1 / 0 / -1 / NaN}; ValueError on another value."""
  return {c: chest_builder.parse_label(row.get(c)) for c in CHEXPERT}


def competition_labels(obs: dict[str, float]) -> np.ndarray:
  """float32 [5] in TASKS order: blank -> 0, -1 -> U-ones / U-zeros."""
  out = []
  for task in TASKS:
    v = obs[task]
    if np.isnan(v):
      v = 0.0
    elif v == -1.0:
      v = 1.0 if task in U_ONES else 0.0
    out.append(v)
  return np.asarray(out, np.float32)


def is_5x200_candidate(obs: dict[str, float], task: str) -> bool:
  """task == 1 and every other observation except No Finding is 0 or blank."""
  return obs[task] == 1.0 and all(obs[c] == 0.0 or np.isnan(obs[c]) for c in OTHERS_12 if c != task)


def select_5x200(rows: list[tuple[dict, dict | None]], per_task: int, seed: int = 0) -> dict[str, str]:
  """{Path: task} of the 5×200 set from (row, parsed observations or None) in file order."""
  chosen: dict[str, str] = {}
  for task in TASKS:
    cands = [row["Path"] for row, obs in rows if obs is not None and is_5x200_candidate(obs, task)]
    for i in downstream.sample_positions(len(cands), per_task, seed):
      chosen[cands[int(i)]] = task
  return chosen


def find_root(manual_dir: str) -> str:
  """The folder holding train.csv: manual_dir/CheXpert-v1.0-small, .../CheXpert-v1.0, or
  manual_dir itself."""
  for name in ROOT_NAMES:
    if os.path.isfile(os.path.join(manual_dir, name, TRAIN_CSV)):
      return os.path.join(manual_dir, name)
  if os.path.isfile(os.path.join(manual_dir, TRAIN_CSV)):
    return manual_dir
  raise downstream.missing_file("cxr_chexpert", os.path.join(manual_dir, ROOT_NAMES[0], TRAIN_CSV),
                                CxrChexpert.MANUAL_DOWNLOAD_INSTRUCTIONS)


def image_path(root: str, path_cell: str) -> str:
  """`CheXpert-v1.0-small/train/...jpg` (the Path cell) -> file below root's parent."""
  parts = path_cell.replace("\\", "/").split("/")
  if parts and parts[0] == os.path.basename(root.rstrip(os.sep)):
    return os.path.join(os.path.dirname(root.rstrip(os.sep)), *parts)
  if parts and parts[0] in ROOT_NAMES:   # manual_dir itself holds the csv
    return os.path.join(root, *parts[1:])
  return os.path.join(root, *parts)


class CxrChexpert(downstream.DownstreamBuilder):
  """CheXpert v1.0 frontal images: 5 competition tasks, MGCA splits; 5×200 (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: MGCA splits, U-ones/U-zeros, 5x200."}
  BUILDER_CONFIGS = [
      downstream.DownstreamConfig(name="default", image_size=256, validation_size=5000,
                                  description="train/validation/test, longest side 256"),
      downstream.DownstreamConfig(name="5x200", image_size=256, subset="5x200", per_task=200,
                                  description="CheXpert 5x200 (test only), longest side 256"),
      downstream.DownstreamConfig(name="demo", image_size=128, validation_size=20, per_task=8,
                                  description="the demo stand-in (asg_jax.data.demo.downstream)"),
      downstream.DownstreamConfig(name="demo_5x200", image_size=128, subset="5x200", per_task=8,
                                  description="5x200 rule on the demo stand-in (8 per task)"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
CheXpert v1.0 (Stanford AIMI; CheXpert-v1.0-small.zip or the full CheXpert-v1.0), extracted
into the manual_dir as distributed:

  CheXpert-v1.0-small/train.csv     Path, Sex, Age, Frontal/Lateral, AP/PA, then the 14
                                    observations (1.0 / 0.0 / -1.0 / blank)
  CheXpert-v1.0-small/valid.csv     same columns (the official validation set = our test)
  CheXpert-v1.0-small/train/patientNNNNN/studyN/viewN_frontal.jpg
  CheXpert-v1.0-small/valid/patientNNNNN/studyN/viewN_frontal.jpg

(`CheXpert-v1.0/` instead of `CheXpert-v1.0-small/` for the full-resolution release; the
Path column must name the images relative to the manual_dir.)
"""

  def class_names(self):
    return TASKS

  def _split_generators(self, dl_manager):
    root = find_root(self.manual(dl_manager))
    config = self.builder_config
    train_rows = self._frontal_rows(os.path.join(root, TRAIN_CSV), "train")
    chosen = select_5x200(train_rows, config.per_task, config.seed)
    if config.subset == "5x200":
      items = [(row, obs, chosen[row["Path"]]) for row, obs in train_rows if row["Path"] in chosen]
      return self.splits({"test": self._generate(root, "test", items) if items else None})
    valid_path = os.path.join(root, VALID_CSV)
    if not os.path.isfile(valid_path):
      raise downstream.missing_file(self.name, valid_path, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    pool = [(row, obs, None) for row, obs in train_rows if row["Path"] not in chosen]
    val_pos = set(int(i) for i in downstream.sample_positions(len(pool), config.validation_size,
                                                             config.seed))
    items = {"train": [it for i, it in enumerate(pool) if i not in val_pos],
             "validation": [it for i, it in enumerate(pool) if i in val_pos],
             "test": [(row, obs, None) for row, obs in self._frontal_rows(valid_path, "test")]}
    return self.splits({s: self._generate(root, s, its) if its else None for s, its in items.items()})

  def _frontal_rows(self, path: str, split: str) -> list[tuple[dict, dict | None]]:
    """(row, parsed observations or None when a cell is invalid) of the frontal rows."""
    out = []
    for row in chest_builder.read_csv(path, ("Path", "Frontal/Lateral") + tuple(CHEXPERT)):
      if not (row.get("Path") or "").strip():
        self.skips.skip(split, chest_builder.Skip(chest_builder.MISSING_COLUMN, path, "row without a Path"))
        continue
      view = (row.get("Frontal/Lateral") or "").strip()
      if view != "Frontal":
        self.skips.filtered(split, f"view_{view or 'missing'}")
        continue
      row["Path"] = row["Path"].strip()
      try:
        obs = parse_row(row)
      except (TypeError, ValueError):
        obs = None   # skipped (bad_value) when its example is made
      out.append((row, obs))
    return out

  def _generate(self, root: str, split: str, items: list):
    for row, obs, task in items:
      def make(row=row, obs=obs, task=task):
        if obs is None:
          try:
            parse_row(row)
          except (TypeError, ValueError) as e:
            raise chest_builder.Skip(chest_builder.BAD_VALUE, row["Path"], str(e)) from e
        if task is not None:
          labels = np.asarray([t == task for t in TASKS], np.float32)
        else:
          labels = competition_labels(obs)
        m = _PATIENT.search(row["Path"])
        return self.make_example(image_path=image_path(root, row["Path"]), image_id=row["Path"],
                                 patient_id=m.group(1) if m else "", labels=labels)
      yield from self.guarded(split, row["Path"], make)
