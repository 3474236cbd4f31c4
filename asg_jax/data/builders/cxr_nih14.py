"""tfds builder `cxr_nih14`: NIH ChestX-ray14 (KAD's split, followed by ASG; docs/data.md).

  test        the images of test_list.txt (official), in its order
  validation  the train_val_list.txt images of 10 % of its PATIENTS: `train_test_split(
              sorted unique Patient IDs, test_size=0.1, random_state=0)`'s held-out part
              (the reference says "10 % of train_val"; split by patient here so that no
              patient is in both)
  train       the other train_val_list.txt images
labels: the 14 classes (vocab.json order) from `Finding Labels` ('|'-joined; `No Finding`
= all zero). image_id = `Image Index`; patient_id = `Patient ID`. Images are found under
any sub-folder of the manual_dir (official `images/`, Kaggle `images_001/images/`, ...).
"""
from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream

DATA_ENTRY = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
TRAIN_VAL_LIST, TEST_LIST = "train_val_list.txt", "test_list.txt"
CLASSES = downstream.NIH_14
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

  Data_Entry_2017_v2020.csv   (or Data_Entry_2017.csv) Image Index, Finding Labels
                              ('|'-joined, or No Finding), Follow-up #, Patient ID, ...
  train_val_list.txt          one Image Index per line
  test_list.txt               one Image Index per line
  images/00000001_000.png     the PNGs, in any sub-folder(s): images/ (official, from
                              images_001.tar.gz ... images_012.tar.gz) or Kaggle's
                              images_001/images/ ... images_012/images/
"""

  def class_names(self):
    return CLASSES

  def _split_generators(self, dl_manager):
    manual_dir = self.manual(dl_manager)
    entry_path = next((os.path.join(manual_dir, n) for n in DATA_ENTRY
                       if os.path.isfile(os.path.join(manual_dir, n))), None)
    if entry_path is None:
      raise downstream.missing_file(self.name, os.path.join(manual_dir, DATA_ENTRY[0]),
                                    self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    lists = {}
    for split, name in (("train_val", TRAIN_VAL_LIST), ("test", TEST_LIST)):
      path = os.path.join(manual_dir, name)
      if not os.path.isfile(path):
        raise downstream.missing_file(self.name, path, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
      lists[split] = read_list(path)
    rows = {}
    for row in chest_builder.read_csv(entry_path, ("Image Index", "Finding Labels", "Patient ID")):
      name = (row.get("Image Index") or "").strip()
      if name:
        rows[name] = row
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
