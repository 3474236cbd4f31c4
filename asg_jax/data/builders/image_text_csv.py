"""tfds builder `image_text_csv`: your own chest X-ray image–report pairs.

manual_dir holds `pairs.csv` (UTF-8, header row) with the columns

  image_path  required: relative to manual_dir or absolute; JPEG, PNG (8/16-bit) or DICOM
              (MONOCHROME1 inverted; VOI window when present, else min-max to 8 bit)
  report      required: the report text (sections are used when it has FINDINGS: /
              IMPRESSION: headers, else the whole text, other labels such as History: or
              Day 4: included); an empty cell is skipped as missing_column
  split       optional: train | validation (also valid / validate / val / test ->
              validation); empty or no column: a deterministic 90/10 split by the SHA-1 of
              the row's patient (`subject_id` or `patient_id`, so all images of a patient
              land in one split), or of image_path when the row names no patient
  boxes       optional: JSON {region name: [x1, y1, x2, y2]} in ORIGINAL-image pixels, region
              names from vocab.json imagenome_regions_29 (region_source "annotation"); empty or
              no column: the atlas (region_source "atlas")
  study_id, dicom_id, subject_id (alias patient_id)   optional identifiers (default: the
              image file's stem for study_id and dicom_id)
  view_position (alias view)   optional: PA / AP / frontal rows are kept; rows naming another
              view (LATERAL, LL, ...) are filtered (counted in build_summary.json) unless the
              `all_views` config is built; an empty cell is kept
  the 14 CheXpert observation columns (Atelectasis, ..., Support Devices)   optional, all
              14 or none: 1 / 0 / -1 / empty; without them the parser's labels are stored

Same features and parser as `mimic_cxr` (docs/interfaces.md §1, docs/data.md).
"""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder
from asg_jax.data.reports import CHEXPERT, REGIONS

PAIRS_CSV = "pairs.csv"
SPLIT_MAP = {"train": "train", "validation": "validation", "valid": "validation",
             "validate": "validation", "val": "validation", "test": "validation"}
VALIDATION_PERCENT = 10
PATIENT_COLUMNS = ("subject_id", "patient_id")
VIEW_COLUMNS = ("view_position", "view")


def is_frontal(view: str) -> bool:
  """PA / AP (incl. "AP SUPINE", "PA ERECT"), FRONTAL, POSTEROANTERIOR / ANTEROPOSTERIOR."""
  v = view.strip().upper().replace("-", "")
  return (v in ("PA", "AP", "FRONTAL", "POSTEROANTERIOR", "ANTEROPOSTERIOR")
          or v.startswith(("PA ", "AP ")))


def first_value(row: dict, columns) -> str:
  """The first non-empty cell among `columns` ('' when none)."""
  for c in columns:
    value = (row.get(c) or "").strip()
    if value:
      return value
  return ""


def hash_split(key: str) -> str:
  """Deterministic 90/10 split of a patient id (or an image path, as written in the CSV) by
  its SHA-1."""
  digest = int(hashlib.sha1(key.encode("utf-8")).hexdigest(), 16)
  return "validation" if digest % 100 < VALIDATION_PERCENT else "train"


def parse_boxes(cell: str, file: str) -> dict[str, list[float]] | None:
  """The `boxes` cell -> {region: [x1, y1, x2, y2]}; None when empty; Skip(BAD_BOX) if bad."""
  if cell is None or not cell.strip():
    return None
  try:
    boxes = json.loads(cell)
  except ValueError as e:
    raise chest_builder.Skip(chest_builder.BAD_BOX, file, f"boxes is not JSON: {e}") from e
  if not isinstance(boxes, dict):
    raise chest_builder.Skip(chest_builder.BAD_BOX, file, "boxes must be a JSON object {region: [x1,y1,x2,y2]}")
  unknown = [r for r in boxes if r not in REGIONS]
  if unknown:
    raise chest_builder.Skip(chest_builder.BAD_BOX, file, f"unknown region name(s) {unknown} in boxes; "
                      "expected names of vocab.json imagenome_regions_29")
  return boxes


def row_split(row: dict, header: set, where: str) -> str:
  """The split ("train" / "validation") a pairs.csv row goes to; Skip(MISSING_COLUMN) for a
  row without an image_path or report value (short row or empty cell), Skip(BAD_VALUE) for
  an invalid split."""
  missing = [c for c in ("image_path", "report") if row.get(c) is None]
  if not missing and "split" in header and row.get("split") is None:
    missing = ["split"]
  if not missing:   # an empty cell is a missing value too
    missing = [c for c in ("image_path", "report") if not row[c].strip()]
  if missing:
    raise chest_builder.Skip(chest_builder.MISSING_COLUMN, where, f"no value for column(s) {missing}")
  value = (row.get("split") or "").strip().lower()
  if value and value not in SPLIT_MAP:
    raise chest_builder.Skip(chest_builder.BAD_VALUE, where, f"split {value!r} is not one of {sorted(SPLIT_MAP)}")
  patient = first_value(row, PATIENT_COLUMNS)
  return SPLIT_MAP[value] if value else hash_split(patient or row["image_path"].strip())


def rows_per_split(manual_dir: str) -> dict[str, int]:
  """How many rows of `<manual_dir>/pairs.csv` go to each split ("none": rows skipped for a
  missing value or a bad split), read from the CSV alone (no image or report is parsed):
  what a rerun names when pairs.csv changed under a trained workdir (asg_jax/lineage.py)."""
  path = os.path.join(manual_dir, PAIRS_CSV)
  rows = chest_builder.read_csv(path, ("image_path", "report"))
  header = set(rows[0]) if rows else set()
  counts = {"train": 0, "validation": 0}
  for number, row in enumerate(rows, start=2):
    try:
      split = row_split(row, header, f"{path} line {number}")
    except chest_builder.Skip:
      split = "none"
    counts[split] = counts.get(split, 0) + 1
  return counts


class ImageTextCsv(chest_builder.ChestBuilder):
  """Your own image–report pairs listed in pairs.csv (see the module docstring)."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "1.1.0": "Split by patient; non-frontal views filtered (all_views keeps "
                            "them); too_short_report skip reason.",
                   "1.2.0": "A report with section titles (History:, ...) but neither "
                            "FINDINGS nor IMPRESSION keeps its whole text (was skipped as "
                            "empty_report); an empty report cell is missing_column."}
  BUILDER_CONFIGS = [
      chest_builder.ChestConfig(name="default", image_size=256, anatomy=True,
                         description="longest side 256, regions (annotation or atlas)"),
      chest_builder.ChestConfig(name="no_anatomy", image_size=256, anatomy=False,
                         description="longest side 256, no regions stored (R = 0)"),
      chest_builder.ChestConfig(name="all_views", image_size=256, anatomy=True, frontal_only=False,
                         description="longest side 256, regions, lateral views kept"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
Put `pairs.csv` into the manual_dir: columns image_path (relative to manual_dir or absolute;
JPEG / PNG / DICOM) and report; optional split (train / validation), boxes (JSON
{region: [x1, y1, x2, y2]} in original pixels), study_id, dicom_id, subject_id (or
patient_id), view_position (or view) and the 14 CheXpert observation columns. See
docs/data.md, "Train on your own image-report pairs".
"""

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    path = os.path.join(manual_dir, PAIRS_CSV)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"image_text_csv: required file {path} not found: expected a CSV with columns "
          f"image_path, report (optional split, boxes, ids, CheXpert labels)")
    rows = chest_builder.read_csv(path, ("image_path", "report"))
    header = set(rows[0]) if rows else set()
    has_labels = all(c in header for c in CHEXPERT)
    has_view = any(c in header for c in VIEW_COLUMNS)
    items: dict[str, list] = {"train": [], "validation": []}
    for number, row in enumerate(rows, start=2):   # line 1 is the header
      where = f"{path} line {number}"
      try:
        split = row_split(row, header, where)
      except chest_builder.Skip as skip:
        self.skips.skip("none", skip)
        continue
      view = first_value(row, VIEW_COLUMNS) if has_view else ""
      if view and self.builder_config.frontal_only and not is_frontal(view):
        self.skips.filtered(split, f"view_{view.upper()}")
        continue
      items[split].append((number, where, row))
    splits = {split: self._generate_examples(manual_dir, split, rows_, has_labels)
              for split, rows_ in items.items() if rows_}   # tfds needs >= 1 example per split
    if not splits:
      raise ValueError(f"image_text_csv: {path} has no usable row")
    return splits

  def _generate_examples(self, manual_dir: str, split: str, rows: list, has_labels: bool):
    config = self.builder_config
    for number, where, row in rows:
      def make(row=row, where=where):
        image_path = os.path.join(manual_dir, row["image_path"].strip())
        stem = os.path.splitext(os.path.basename(image_path))[0]
        chexpert = None
        if has_labels:
          try:
            chexpert = np.asarray([chest_builder.parse_label(row[c]) for c in CHEXPERT], np.float32)
          except (TypeError, ValueError) as e:
            raise chest_builder.Skip(chest_builder.BAD_VALUE, where, f"CheXpert labels: {e}") from e
        boxes = parse_boxes(row.get("boxes"), where) if config.anatomy else None
        ids = {"study_id": (row.get("study_id") or "").strip() or stem,
               "dicom_id": (row.get("dicom_id") or "").strip() or stem,
               "subject_id": first_value(row, PATIENT_COLUMNS)}
        return chest_builder.assemble_example(
            file=where, report=row["report"], image_path=image_path,
            image_size=config.image_size, ids=ids,
            view_position=first_value(row, VIEW_COLUMNS), boxes=boxes,
            region_source="annotation", anatomy=config.anatomy, chexpert=chexpert,
            report_fallback="whole_text")
      yield from self.guarded(split, f"{number:09d}", make)
