"""tfds builder `cxr_nih14`: NIH ChestX-ray14 (KAD's split, followed by ASG; docs/data.md).

  test        the images of test_list.txt (official), in its order
  validation  the train_val_list.txt images of 10 % of its PATIENTS: `train_test_split(
              sorted unique Patient IDs, test_size=0.1, random_state=0)`'s held-out part
              (the reference says "10 % of train_val"; split by patient here so that no
              patient is in both)
  train       the other train_val_list.txt images
Without the lists (a partial or re-packaged release): no train_val_list.txt -> the Data_Entry
images not in test_list.txt; no test_list.txt -> those not in train_val_list.txt; neither ->
test = the images of the held-out patients of `train_test_split(sorted unique Patient IDs,
test_size=0.2, random_state=0)` (a warning says which rule; `lists` in build_summary.json).
Data_Entry_2017_v2020.csv is read as released (`.csv.gz` too); listed images absent from the
folder are counted as missing_image (one summary line, not one per file).
labels: the 14 classes (vocab.json order) from `Finding Labels` ('|'-joined; `No Finding`
= all zero). image_id = `Image Index`; patient_id = `Patient ID`. Images are found under
any sub-folder of the manual_dir (official `images/`, Kaggle `images_001/images/`, ...).
"""
from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream

DATA_ENTRY = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_LIST, TEST_LIST = "train_val_list.txt", "test_list.txt"
TEST_FRACTION = 0.2   # of the patients, when neither list is in the manual_dir
CLASSES = downstream.NIH_14
logger = logging.getLogger(__name__)
NO_FINDING = "No Finding"


def parse_findings(cell: str) -> np.ndarray:
  """'Cardiomegaly|Effusion' -> float32 [14] (vocab order); ValueError on an unknown name."""
  names = [n.strip() for n in (cell or "").split("|") if n.strip()]
  if not names:
    raise ValueError("empty Finding Labels")
  labels = np.zeros(len(CLASSES), np.float32)
  for n in names:
    if n == NO_FINDING:
      if len(names) > 1:
        raise ValueError(f"'No Finding' together with findings in {cell!r}")
      continue
    if n not in CLASSES:
      raise ValueError(f"unknown finding {n!r} (expected {list(CLASSES)} or {NO_FINDING!r})")
    labels[CLASSES.index(n)] = 1.0
  return labels


def read_list(path: str) -> list[str]:
  with open(path, encoding="utf-8") as f:
    return list(dict.fromkeys(line.strip() for line in f if line.strip()))   # once each, in order


class CxrNih14(downstream.DownstreamBuilder):
  """NIH ChestX-ray14: 14 findings, official test list, patient-disjoint validation."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: official test list, 10 % of train_val patients."}
  BUILDER_CONFIGS = [
      downstream.DownstreamConfig(name="default", image_size=256, validation_fraction=0.1,
                                  description="train/validation/test, longest side 256"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
NIH ChestX-ray14 (NIH Clinical Center box folder, or the Kaggle "nih-chest-xrays/data"
copy), in the manual_dir:

  Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv, either .gz) Image Index, Finding Labels
                              ('|'-joined, or No Finding), Follow-up #, Patient ID, ...
  train_val_list.txt          one Image Index per line (optional: see the module docstring)
  test_list.txt               one Image Index per line (optional)
  images/00000001_000.png     the PNGs, in any sub-folder(s): images/ (official, from
                              images_001.tar.gz ... images_012.tar.gz) or Kaggle's
                              images_001/images/ ... images_012/images/
"""

  def class_names(self):
    return CLASSES

  def _split_generators(self, dl_manager):
    manual_dir = self.manual(dl_manager)
    entry_path = next((os.path.join(manual_dir, n + gz) for n in DATA_ENTRY for gz in ("", ".gz")
                       if os.path.isfile(os.path.join(manual_dir, n + gz))), None)
    if entry_path is None:
      raise downstream.missing_file(self.name, os.path.join(manual_dir, DATA_ENTRY[0]),
                                    self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    rows = {}
    for row in chest_builder.read_csv(entry_path, ("Image Index", "Finding Labels", "Patient ID")):
      name = (row.get("Image Index") or "").strip()
      if name:
        rows[name] = row
    lists = self._lists(manual_dir, rows)
    listed = set(lists["train_val"]) | set(lists["test"])
    unlisted = sum(1 for n in rows if n not in listed)
    if unlisted:
      self.skips.filtered("none", "not_in_lists", unlisted)
    images = downstream.index_files(manual_dir, (".png",))
    patient = {n: (rows[n].get("Patient ID") or "").strip() for n in lists["train_val"] if n in rows}
    held = downstream.patient_holdout(patient.values(), self.builder_config.validation_fraction,
                                      self.builder_config.seed)
    items = {"train": [n for n in lists["train_val"] if patient.get(n) not in held],
             "validation": [n for n in lists["train_val"] if n in patient and patient[n] in held],
             "test": lists["test"]}
    return self.splits({s: self._generate(s, names, rows, images) if names else None
                        for s, names in items.items()})

  def _lists(self, manual_dir: str, rows: dict) -> dict[str, list[str]]:
    """train_val / test image names: the official lists; without one of them, the Data_Entry
    images not in the other; without both, the images of the held-out patients of
    `train_test_split(sorted unique Patient IDs, test_size=0.2, random_state=seed)` are the
    test set (module docstring; counted in build_summary.json's `lists`)."""
    found = {}
    for split, name in (("train_val", TRAIN_VAL_LIST), ("test", TEST_LIST)):
      path = os.path.join(manual_dir, name)
      if os.path.isfile(path):
        found[split] = read_list(path)
    order = list(rows)
    if "train_val" in found and "test" in found:
      rule = "official lists"
    elif "test" in found:
      test = set(found["test"])
      found["train_val"], rule = [n for n in order if n not in test], f"no {TRAIN_VAL_LIST}"
    elif "train_val" in found:
      tv = set(found["train_val"])
      found["test"], rule = [n for n in order if n not in tv], f"no {TEST_LIST}"
    else:
      patient = {n: (rows[n].get("Patient ID") or "").strip() for n in order}
      held = downstream.patient_holdout(patient.values(), TEST_FRACTION, self.builder_config.seed)
      found = {"train_val": [n for n in order if patient[n] not in held],
               "test": [n for n in order if patient[n] in held]}
      rule = f"no lists: test = {TEST_FRACTION:.0%} of the patients"
    self.skips.extra["lists"] = {"rule": rule, **{k: len(v) for k, v in found.items()}}
    if rule != "official lists":
      logger.warning("cxr_nih14: %s (train_val %d, test %d images; docs/data.md)", rule,
                     len(found["train_val"]), len(found["test"]))
    return found

  def _generate(self, split: str, names: list[str], rows: dict, images: dict):
    for name in names:
      def make(name=name):
        row = rows.get(name)
        if row is None:
          raise chest_builder.Skip(downstream.MISSING_LABEL, name,
                            f"listed for {split} but absent from the Data_Entry CSV")
        try:
          labels = parse_findings(row.get("Finding Labels"))
        except ValueError as e:
          raise chest_builder.Skip(chest_builder.BAD_VALUE, name, str(e)) from e
        if name not in images:
          raise chest_builder.Skip(chest_builder.MISSING_IMAGE, name, "no such PNG below the manual_dir")
        return self.make_example(image_path=images[name], image_id=name,
                                 patient_id=(row.get("Patient ID") or "").strip(), labels=labels)
      yield from self.guarded(split, name, make)
