"""tfds builder `cxr_covidx`: COVIDx (COVID-Net) image lists, PNG and JPEG mixed.

Lists: one `train*.txt` and one `test*.txt` in the manual_dir (COVIDx9A:
train_COVIDx9A.txt / test_COVIDx9A.txt; older: train.txt / test.txt; when several match,
the last in sorted order is used and logged). Each line `patient_id filename label source`
(whitespace-separated; a filename with spaces is everything between the first field and
the last two). Images: `train/<filename>`, `test/<filename>`.

  test        the test list, in its order
  validation  the train-list images of `validation_fraction` of its PATIENTS:
              `train_test_split(sorted unique patient ids, test_size=f, random_state=0)`'s
              held-out part; f = 0.2 (`default`, data.md) or 0.1 (`val10`, ASG's README).
              The reference's 80/20 does not say by what; split by patient here.
  train       the other train-list images
labels: one-hot over the config's classes (COVIDx9A: COVID-19, normal, pneumonia; config
`binary` for the later negative/positive lists). image_id = the list's filename.
"""
from __future__ import annotations

import glob
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream

logger = logging.getLogger(__name__)
THREE = ("COVID-19", "normal", "pneumonia")
BINARY = ("negative", "positive")


def parse_line(line: str) -> tuple[str, str, str, str]:
  """'patient filename label source' -> the 4 fields; ValueError when fewer."""
  parts = line.split()
  if len(parts) < 4:
    raise ValueError(f"expected 'patient_id filename label source', got {line!r}")
  return parts[0], " ".join(parts[1:-2]), parts[-2], parts[-1]


def find_list(manual_dir: str, prefix: str) -> str | None:
  found = sorted(p for p in glob.glob(os.path.join(manual_dir, f"{prefix}*.txt")) if os.path.isfile(p))
  if len(found) > 1:
    logger.warning("cxr_covidx: several %s lists %s; using %s", prefix, found, found[-1])
  return found[-1] if found else None


class CxrCovidx(downstream.DownstreamBuilder):
  """COVIDx lists: 3-class (or binary) one-hot labels, patient-disjoint validation."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      downstream.DownstreamConfig(name="default", image_size=256, validation_fraction=0.2,
                                  classes=THREE, description="COVIDx9A 3 classes, 20 % validation"),
      downstream.DownstreamConfig(name="val10", image_size=256, validation_fraction=0.1,
                                  classes=THREE, description="COVIDx9A 3 classes, 10 % validation (ASG)"),
      downstream.DownstreamConfig(name="binary", image_size=256, validation_fraction=0.2,
                                  classes=BINARY, description="negative / positive lists, 20 % validation"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
COVIDx (COVID-Net; e.g. Kaggle "andyczhao/covidx-cxr2", COVIDx9A), in the manual_dir:

  train_COVIDx9A.txt   (or train.txt) lines "patient_id filename label source"
  test_COVIDx9A.txt    (or test.txt)
  train/<filename>     the training images (PNG and JPEG)
  test/<filename>      the test images
"""

  def class_names(self):
    return tuple(self.builder_config.classes)

  def _split_generators(self, dl_manager):
    manual_dir = self.manual(dl_manager)
    items: dict[str, list] = {}
    for split, prefix in (("train", "train"), ("test", "test")):
      path = find_list(manual_dir, prefix)
      if path is None:
        raise downstream.missing_file(self.name, os.path.join(manual_dir, f"{prefix}_COVIDx9A.txt"),
                                      self.MANUAL_DOWNLOAD_INSTRUCTIONS)
      with open(path, encoding="utf-8") as f:
        lines = [(n, line.strip()) for n, line in enumerate(f, start=1) if line.strip()]
      for n, line in lines:
        try:
          items.setdefault(split, []).append((parse_line(line), prefix))
        except ValueError as e:
          self.skips.skip(split, chest_builder.Skip(chest_builder.MISSING_COLUMN, f"{path} line {n}", str(e)))
    train = items.get("train", [])
    held = downstream.patient_holdout([f[0] for f, _ in train],
                                      self.builder_config.validation_fraction, self.builder_config.seed)
    splits = {"train": [it for it in train if it[0][0] not in held],
              "validation": [it for it in train if it[0][0] in held],
              "test": items.get("test", [])}
    return self.splits({s: self._generate(manual_dir, s, its) if its else None
                        for s, its in splits.items()})

  def _generate(self, manual_dir: str, split: str, items: list):
    classes = self.class_names()
    seen = set()
    for (patient, filename, label, _), folder in items:
      if filename in seen:   # a list naming an image twice: one example
        continue
      seen.add(filename)
      def make(patient=patient, filename=filename, label=label, folder=folder):
        if label not in classes:
          raise chest_builder.Skip(chest_builder.BAD_VALUE, filename, f"label {label!r} not in {list(classes)}")
        labels = np.asarray([c == label for c in classes], np.float32)
        return self.make_example(image_path=os.path.join(manual_dir, folder, filename),
                                 image_id=filename, patient_id=patient, labels=labels)
      yield from self.guarded(split, filename, make)
