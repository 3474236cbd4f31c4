"""The two layouts of the `labelled_images` builder, read without opening an image: the
labels CSV (columns, class names, cell values) and class folders; the seeded split by
patient (docs/transfer.md "Evaluate on your own labelled images"; labelled_images.py)."""
from __future__ import annotations

import csv
import math
import os
from typing import Iterable, Sequence

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff", ".bmp")
SPLITS = {"train": "train", "validation": "validation", "valid": "validation",
          "val": "validation", "validate": "validation", "dev": "validation", "test": "test"}
OPTIONAL = {"split": ("split",), "patient": ("patient_id", "subject_id"),
            "view": ("view_position", "view"), "modality": ("modality",),
            "study": ("study_id",)}
XRAY_MODALITIES = {"x-ray", "xray", "x ray", "xr", "cr", "dx", "dr", "rg", "radiograph",
                   "radiography", "cxr"}
NO_FINDING = {"no finding", "no_finding"}
UNCERTAIN = ("zeros", "ones", "ignore")
POSITIVE, NEGATIVE = {"1", "1.0", "true", "yes"}, {"0", "0.0", "false", "no", ""}



def read_rows(path: str) -> tuple[list[str], list[dict]]:
  """(header, rows) of the labels CSV; names stripped, a BOM dropped, empty column names
  ignored; not UTF-8 -> read as Latin-1 (each byte one character)."""
  delimiter = "\t" if path.lower().endswith(".tsv") else ","
  for encoding in ("utf-8-sig", "latin-1"):
    try:
      with open(path, encoding=encoding, newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [h.strip() for h in next(reader, [])]
        rows = [dict(zip(header, (c.strip() for c in cells))) for cells in reader
                if any(c.strip() for c in cells)]
      break
    except UnicodeDecodeError:
      continue
  if not header:
    raise ValueError(f"{path}: empty file, expected a header row with image_path and labels")
  for r in rows:
    r.pop("", None)
  return [h for h in header if h], rows


def _column(header: Sequence[str], names: Iterable[str]) -> str | None:
  lower = {h.lower(): h for h in header}
  return next((lower[n] for n in names if n in lower), None)


def csv_layout(path: str, label_columns: Sequence[str] = ()) -> dict:
  """{"columns": {role: header name}, "mode", "class_names"} of a labels CSV; ValueError
  naming the file and the header when it cannot be used."""
  header, rows = read_rows(path)
  image = _column(header, ("image_path",))
  if image is None:
    raise ValueError(f"{path}: no image_path column (header {header}); expected image_path "
                     "plus label columns, a `labels` ('|'-separated) or a `label` column")
  columns = {"image": image}
  for role, names in OPTIONAL.items():
    c = _column(header, names)
    if c is not None:
      columns[role] = c
  labels, label = _column(header, ("labels",)), _column(header, ("label",))
  if label_columns:
    missing = [c for c in label_columns if c not in header]
    if missing:
      raise ValueError(f"{path}: label_columns {missing} are not columns (header {header})")
    return {"columns": columns, "mode": "columns", "class_names": tuple(label_columns)}
  if labels or label:
    col = labels or label
    columns["labels"] = col
    names = set()
    for r in rows:
      cell = r.get(col) or ""
      parts = [p.strip() for p in cell.split("|")] if labels else [cell.strip()]
      names |= {p for p in parts if p and (label or p.lower() not in NO_FINDING)}
    if not names:
      raise ValueError(f"{path}: column {col!r} names no class")
    return {"columns": columns, "mode": "labels" if labels else "label",
            "class_names": tuple(sorted(names))}
  used = set(columns.values())
  classes = tuple(h for h in header if h not in used)
  if not classes:
    raise ValueError(f"{path}: no label column (header {header}): every column besides "
                     f"image_path and {sorted(n for v in OPTIONAL.values() for n in v)} is a class")
  return {"columns": columns, "mode": "columns", "class_names": classes}


def folder_classes(root: str) -> tuple[str, ...]:
  names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
  if len(names) < 2:
    raise ValueError(f"{root}: class folders need at least 2 sub-folders (one per class), "
                     f"found {names}")
  return tuple(names)


def folder_files(root: str, classes: Sequence[str]) -> list[tuple[str, str, str]]:
  """[(image_id "<class>/<rel>", class, absolute path)] of every non-hidden file, sorted."""
  out = []
  for c in classes:
    base = os.path.join(root, c)
    for dirpath, dirnames, filenames in os.walk(base):
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
      for name in sorted(filenames):
        if not name.startswith("."):
          full = os.path.join(dirpath, name)
          out.append((f"{c}/" + os.path.relpath(full, base).replace(os.sep, "/"), c, full))
  return out


def cell_label(value: str, uncertain: str) -> float | None:
  """A class cell -> 1.0 / 0.0, None for an uncertain one under `ignore`; ValueError else."""
  v = (value or "").strip().lower()
  if v in POSITIVE:
    return 1.0
  if v in NEGATIVE:
    return 0.0
  if v in ("-1", "-1.0", "u", "uncertain"):
    return None if uncertain == "ignore" else float(uncertain == "ones")
  raise ValueError(f"label {value!r} is not 1, 0, -1 or blank")


def seeded_split(patients: Sequence[str], seed: int, validation: float, test: float
                 ) -> dict[str, str]:
  """{patient: split}: sorted unique patients permuted by RandomState(seed); the first
  ceil(test·P) -> test, the next ceil(validation·P) -> validation, the rest -> train."""
  unique = sorted(set(patients))
  perm = np.random.RandomState(seed).permutation(len(unique))
  n_test = int(math.ceil(test * len(unique))) if len(unique) >= 3 else 0
  n_val = int(math.ceil(validation * len(unique))) if len(unique) >= 3 else 0
  out = {}
  for rank, i in enumerate(perm):
    out[unique[i]] = ("test" if rank < n_test else "validation" if rank < n_test + n_val
                      else "train")
  return out
