"""tfds builder `cxr_rsna`: RSNA Pneumonia Detection (stage 2), classification + masks.

One example per patientId of stage_2_train_labels.csv (a patient has one image and one
row per box, or a single row with empty box cells and Target 0). MGCA's split over the
patientIds in sorted order (pandas `groupby`): `train, rest = train_test_split(ids,
test_size=0.3, random_state=0)`, `test, validation = train_test_split(rest, test_size=0.5,
random_state=0)`. labels `["Pneumonia"]` = Target; `boxes` = (x, y, x + width, y + height)
in stored pixels; `mask` = the union of the boxes. image_id = patient_id = patientId.
"""
from __future__ import annotations

import math
import os

import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream

LABELS_CSV = "stage_2_train_labels.csv"
IMAGE_DIR = "stage_2_train_images"
COLUMNS = ("patientId", "x", "y", "width", "height", "Target")


def patient_boxes(patient: str, rows: list[dict]) -> tuple[float, list[tuple[float, ...]]]:
  """(Target, [(x1, y1, x2, y2)]) of one patient's rows; Skip when they do not parse."""
  targets = set()
  boxes = []
  for row in rows:
    t = (row.get("Target") or "").strip()
    if t not in ("0", "1"):
      raise chest_builder.Skip(chest_builder.BAD_VALUE, patient, f"Target {t!r} is not 0 or 1")
    targets.add(t)
    if t == "1":
      try:
        x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
      except (TypeError, ValueError) as e:
        raise chest_builder.Skip(chest_builder.BAD_BOX, patient, f"box {[row.get(k) for k in COLUMNS[1:5]]} "
                          "is not 4 numbers") from e
      if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise chest_builder.Skip(chest_builder.BAD_BOX, patient, f"box {(x, y, w, h)} needs width, height > 0")
      boxes.append((x, y, x + w, y + h))
  if len(targets) > 1:
    raise chest_builder.Skip(chest_builder.BAD_VALUE, patient, "rows disagree on Target")
  return (1.0 if "1" in targets else 0.0), boxes


class CxrRsna(downstream.DownstreamBuilder):
  """RSNA Pneumonia (stage 2 train): Target, boxes and box masks; MGCA 70/15/15 split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: MGCA 70/15/15 split, box masks."}
  SEGMENTATION = True
  BOXES = True
  BUILDER_CONFIGS = [
      downstream.DownstreamConfig(name="default", image_size=256,
                                  description="train/validation/test, longest side 256"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
RSNA Pneumonia Detection Challenge (Kaggle "rsna-pneumonia-detection-challenge", stage 2),
in the manual_dir:

  {LABELS_CSV}           patientId, x, y, width, height, Target (one row per box;
                                       empty box cells and Target 0 for no pneumonia)
  {IMAGE_DIR}/<patientId>.dcm      the DICOMs
"""

  def class_names(self):
    return ("Pneumonia",)

  def _split_generators(self, dl_manager):
    manual_dir = self.manual(dl_manager)
    path = os.path.join(manual_dir, LABELS_CSV)
    if not os.path.isfile(path):
      raise downstream.missing_file(self.name, path, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    if not os.path.isdir(os.path.join(manual_dir, IMAGE_DIR)):
      raise downstream.missing_file(self.name, os.path.join(manual_dir, IMAGE_DIR) + os.sep,
                                    self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    by_patient: dict[str, list[dict]] = {}
    for number, row in enumerate(chest_builder.read_csv(path, COLUMNS), start=2):
      pid = (row.get("patientId") or "").strip()
      if not pid:
        self.skips.skip("none", chest_builder.Skip(chest_builder.MISSING_COLUMN, f"{path} line {number}",
                                            "no patientId"))
        continue
      by_patient.setdefault(pid, []).append(row)
    split = downstream.split_70_15_15(sorted(by_patient), self.builder_config.seed)
    return self.splits({s: self._generate(manual_dir, s, ids, by_patient) if ids else None
                        for s, ids in split.items()})

  def _generate(self, manual_dir: str, split: str, ids: list[str], by_patient: dict):
    for pid in ids:
      def make(pid=pid):
        target, boxes = patient_boxes(pid, by_patient[pid])
        return self.make_example(
            image_path=os.path.join(manual_dir, IMAGE_DIR, f"{pid}.dcm"), image_id=pid,
            patient_id=pid, labels=[target], boxes=boxes,
            mask_fn=lambda size: downstream.box_mask(boxes, *size))
      yield from self.guarded(split, pid, make)
