"""Demo stand-ins for the downstream datasets: a small classification set in the exact
CheXpert-v1.0-small layout and a small segmentation set in the exact SIIM-ACR layout, whose
labels and masks follow what is drawn (docs/data.md "Downstream datasets").

    python -m asg_jax.data.demo.downstream --out DIR [--num_images 160 --num_siim 80 --seed 0]

writes

    DIR/chexpert/CheXpert-v1.0-small/{train.csv, valid.csv, train/..., valid/...}   -> cxr_chexpert/demo
    DIR/siim/{train-rle.csv, dicom-images-train/<study>/<series>/<ImageId>.dcm}      -> cxr_siim/demo

with the real files' quirks: CheXpert's 1.0 / 0.0 / -1.0 / blank cells, laterals, the
`Path` column naming `CheXpert-v1.0-small/...`; SIIM's header `ImageId, EncodedPixels`
(leading space), "-1" for no pneumothorax, one row per pneumothorax (a bilateral one has
two rows), the relative column-major run-length code, DICOM (MONOCHROME2, 8 bit).

CheXpert labels: each training study has 0–2 of the 5 competition findings, present
(1.0) or uncertain (-1.0); a finding is drawn exactly when its stored label (after
U-ones for Atelectasis / Edema / Pleural Effusion, U-zeros for Cardiomegaly /
Consolidation) is 1 — uncertain U-ones findings at half contrast, uncertain U-zeros ones
not at all; absent findings are 0.0 or blank. valid.csv holds 0 / 1 only (as the real one).

Drawing: the pre-training demo's generator (asg_jax.data.demo.drawing) with this module's
own seeds, sizes and label frequencies — the same anatomy and the same look of each finding,
as a second hospital's films of the same diseases — so that what pre-training learnt can
transfer, as it is meant to from MIMIC to CheXpert.

The generator writes only into `DIR`: it creates it (or takes it when empty) and marks it
with `.asg_jax_downstream_demo.json`; it refuses a non-empty folder without that marker
and a folder generated with other parameters; it never deletes anything.
"""
from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np
from PIL import Image

from asg_jax.data.builders import downstream
from asg_jax.data.demo import drawing, report_text
from asg_jax.data.reports import CHEXPERT

MARKER = ".asg_jax_downstream_demo.json"
CHEXPERT_ROOT = "CheXpert-v1.0-small"
HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding",
          "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
          "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
          "Pleural Other", "Fracture", "Support Devices"]   # the real train.csv's column order
TASKS = downstream.CHEXPERT_5
U_ONES = ("Atelectasis", "Edema", "Pleural Effusion")
SIIM_SIZE = 128
# 3: the SIIM films from their own random stream (the same films whatever num_images is);
# 2: drawn by asg_jax.data.demo.drawing; 1: a separate, simpler drawing
DRAWING_VERSION = 3


class FolderRefused(RuntimeError):
  """The output folder holds files this generator did not write, or other parameters."""


def _claim(out_dir: str, params: dict) -> bool:
  """True when `out_dir` already holds a complete generation with `params` (nothing to do)."""
  out_dir = os.path.abspath(out_dir)
  marker = os.path.join(out_dir, MARKER)
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise FolderRefused(f"{out_dir} is a file; the demo generator writes only into a folder")
  if os.path.isfile(marker):
    with open(marker) as f:
      old = json.load(f)
    if old.get("params") != params:
      raise FolderRefused(
          f"{out_dir} holds a demo generated with {old.get('params')}, not {params}; it is never "
          f"overwritten or deleted: pass another (new or empty) --out folder")
    return bool(old.get("complete"))
  if os.path.isdir(out_dir) and os.listdir(out_dir):
    raise FolderRefused(
        f"refusing to write into {out_dir}: it is not empty and was not created by "
        f"asg_jax.data.demo.downstream (no {MARKER}); pass a new or empty folder")
  os.makedirs(out_dir, exist_ok=True)
  _write_marker(out_dir, params, complete=False)
  return False


def _write_marker(out_dir: str, params: dict, complete: bool) -> None:
  # "owner": a stored value, as in the markers written before (not this module's path)
  with open(os.path.join(out_dir, MARKER), "w") as f:
    json.dump({"owner": "asg_jax.data.downstream_demo", "params": params, "complete": complete}, f)


# ----------------------------------------------------------------------------- drawing
# The pre-training demo's own drawing (asg_jax.data.demo.drawing): the same anatomy and the
# same look of each finding, like a second hospital's films of the same diseases. Sizes,
# seeds and label frequencies are this module's.

FINDING_OF = {"Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly",
              "Consolidation": "consolidation", "Edema": "edema",
              "Pleural Effusion": "pleural effusion"}


def draw_chexpert(rng, h: int, w: int, labels: dict[str, float]) -> np.ndarray:
  """A frontal film [h, w] uint8 with the findings whose STORED label (U-ones / U-zeros)
  is 1: present (1.0) at full contrast, uncertain U-ones (-1.0) at half contrast (as the
  pre-training demo draws an uncertain finding), uncertain U-zeros ones not at all."""
  findings = []
  for task in TASKS:
    v = labels.get(task, float("nan"))
    if v == 1.0 or (v == -1.0 and task in U_ONES):
      findings.append(report_text.sample_finding(
          rng, FINDING_OF[task], "present" if v == 1.0 else "uncertain"))
  image, _ = drawing._draw_frontal(rng, h, w, findings)  # pylint: disable=protected-access
  return image


def draw_pneumothorax(rng, h: int, w: int, sides: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
  """A frontal film with one pneumothorax per side in `sides` -> (image [h, w] uint8,
  [mask [h, w] uint8 {0, 1} per pneumothorax])."""
  findings = [dict(report_text.sample_finding(rng, "pneumothorax", "present"), side=s)
              for s in sides]
  masks: list[np.ndarray] = []
  image, _ = drawing._draw_frontal(rng, h, w, findings, masks=masks)  # pylint: disable=protected-access
  return image, masks


def _size(rng) -> tuple[int, int]:
  """A portrait film's (h, w), as CheXpert's (the builder stores the longest side 128)."""
  h = int(rng.integers(150, 181))
  return h, int(round(h * rng.uniform(0.8, 0.95)))


# -------------------------------------------------------------------------- generation

def _chexpert_labels(rng, valid: bool) -> dict[str, float]:
  """{observation: value} for the 14 columns (NaN = blank)."""
  out = {c: float("nan") for c in CHEXPERT}
  k = rng.choice([0, 1, 1, 2], p=[0.3, 0.3, 0.2, 0.2])
  for task in rng.choice(TASKS, size=k, replace=False):
    out[str(task)] = 1.0 if valid or rng.random() < 0.75 else -1.0
  for task in TASKS:   # some explicit negatives, some blanks
    if np.isnan(out[task]) and rng.random() < 0.3:
      out[task] = 0.0
  if k == 0:
    out["No Finding"] = 1.0
  if valid:
    out = {c: (0.0 if np.isnan(v) else v) for c, v in out.items()}
  return out


def _cell(v: float) -> str:
  return "" if np.isnan(v) else f"{v:.1f}"


def _chexpert(root: str, rng, num_images: int) -> dict:
  base = os.path.join(root, CHEXPERT_ROOT)
  truth = {}
  for split, n in (("train", num_images), ("valid", max(4, num_images // 6))):
    rows, patient = [], 1 if split == "train" else 64541
    made = 0
    while made < n:
      for study in range(1, int(rng.integers(1, 3)) + 1):
        labels = _chexpert_labels(rng, split == "valid")
        rel = f"{CHEXPERT_ROOT}/{split}/patient{patient:05d}/study{study}/view1_frontal.jpg"
        h, w = _size(rng)
        _save_jpeg(os.path.join(root, rel), draw_chexpert(rng, h, w, labels))
        sex, age = str(rng.choice(["Male", "Female"])), str(int(rng.integers(20, 90)))
        ap = str(rng.choice(["AP", "PA"]))
        rows.append([rel, sex, age, "Frontal", ap] + [_cell(labels[c]) for c in HEADER[5:]])
        truth[rel] = labels
        made += 1
        if rng.random() < 0.25:   # a lateral view of the same study (filtered by the builder)
          lat = rel.replace("view1_frontal", "view2_lateral")
          _save_jpeg(os.path.join(root, lat), drawing._draw_lateral(rng, h, w))  # pylint: disable=protected-access
          rows.append([lat, sex, age, "Lateral", ""] + [_cell(labels[c]) for c in HEADER[5:]])
      patient += 1
    with open(os.path.join(base, f"{split}.csv"), "w", newline="") as f:
      writer = csv.writer(f, lineterminator="\n")
      writer.writerow(HEADER)
      writer.writerows(rows)
  return truth


def _save_jpeg(path: str, arr: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if os.path.exists(path):
    raise FolderRefused(f"{path} exists: the demo generator does not overwrite files")
  Image.fromarray(arr, mode="L").save(path, format="JPEG", quality=92)


def _save_dicom(path: str, arr: np.ndarray, patient_id: str, image_id: str) -> None:
  from pydicom.dataset import Dataset, FileMetaDataset  # pylint: disable=import-outside-toplevel
  from pydicom.uid import ExplicitVRLittleEndian  # pylint: disable=import-outside-toplevel
  os.makedirs(os.path.dirname(path), exist_ok=True)
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"   # secondary capture, as SIIM
  meta.MediaStorageSOPInstanceUID = image_id
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, image_id
  ds.PatientID, ds.Modality, ds.BodyPartExamined = patient_id, "CR", "CHEST"
  ds.Rows, ds.Columns = arr.shape
  ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
  ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
  ds.PixelData = np.ascontiguousarray(arr, np.uint8).tobytes()
  ds.save_as(path, enforce_file_format=True)


def _siim(root: str, rng, num_images: int) -> dict:
  truth, rows = {}, []
  for i in range(num_images):
    image_id = f"1.2.276.0.7230010.3.1.4.8323329.{1000 + i}.1517875{int(rng.integers(100, 999))}.{int(rng.integers(1e5, 1e6))}"
    study = f"1.2.276.0.7230010.3.1.2.8323329.{1000 + i}.1517875{int(rng.integers(100, 999))}.{int(rng.integers(1e5, 1e6))}"
    series = f"1.2.276.0.7230010.3.1.3.8323329.{1000 + i}.1517875{int(rng.integers(100, 999))}.{int(rng.integers(1e5, 1e6))}"
    sides = []
    if rng.random() < 0.45:
      sides = [str(rng.choice(["right", "left"]))] if rng.random() < 0.8 else ["right", "left"]
    arr, masks = draw_pneumothorax(rng, SIIM_SIZE, SIIM_SIZE, sides)
    _save_dicom(os.path.join(root, "dicom-images-train", study, series, f"{image_id}.dcm"), arr,
                patient_id=f"{int(rng.integers(1 << 30)):08x}-demo", image_id=image_id)
    for m in masks:   # one row per pneumothorax
      rows.append((image_id, downstream.rle_encode(m)))
    if not masks:
      rows.append((image_id, "-1"))
    union = np.zeros((SIIM_SIZE, SIIM_SIZE), np.uint8)
    for m in masks:
      union |= m
    truth[image_id] = union
  with open(os.path.join(root, "train-rle.csv"), "w", newline="") as f:
    f.write("ImageId, EncodedPixels\n")
    for image_id, code in rows:
      f.write(f"{image_id},{code}\n")
  return truth


def folder_name(num_images: int, num_siim: int, seed: int) -> str:
  """The default folder of one generation, e.g. "n2400_siim400_seed0_v3": a workdir keeps
  each generation it was evaluated on (other parameters never meet a refused folder)."""
  return f"n{int(num_images)}_siim{int(num_siim)}_seed{int(seed)}_v{DRAWING_VERSION}"


def generate(out_dir: str, num_images: int = 160, num_siim: int = 80, seed: int = 0) -> dict:
  """Write the two stand-ins into `out_dir` (see the module docstring).

  Returns {"chexpert": {Path: {observation: value}}, "siim": {ImageId: mask [H, W]}} (the
  drawn truth; empty dicts when `out_dir` already held this generation).
  Raises FolderRefused for a folder it must not write into.
  """
  params = {"num_images": int(num_images), "num_siim": int(num_siim), "seed": int(seed),
            "drawing": DRAWING_VERSION}
  if _claim(out_dir, params):
    return {"chexpert": {}, "siim": {}}
  truth = {"chexpert": _chexpert(os.path.join(out_dir, "chexpert"), np.random.default_rng(seed),
                                 num_images),
           "siim": _siim(os.path.join(out_dir, "siim"), np.random.default_rng([seed, 1]),
                         num_siim)}
  _write_marker(out_dir, params, complete=True)
  return truth


def prepare(data_dir: str, out_dir: str, num_images: int = 160, num_siim: int = 80,
            seed: int = 0) -> dict:
  """Generate (unless done) and build `cxr_chexpert/demo`, `cxr_chexpert/demo_5x200`,
  `cxr_siim/demo` into data_dir. Returns {name: prepared builder}."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import asg_jax.data.builders  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  generate(out_dir, num_images, num_siim, seed)
  out = {}
  for name, sub in (("cxr_chexpert/demo", "chexpert"), ("cxr_chexpert/demo_5x200", "chexpert"),
                    ("cxr_siim/demo", "siim")):
    b = tfds.builder(name, data_dir=data_dir)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.path.join(out_dir, sub)))
    out[name] = b
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True)
  p.add_argument("--num_images", type=int, default=160)
  p.add_argument("--num_siim", type=int, default=80)
  p.add_argument("--seed", type=int, default=0)
  a = p.parse_args(argv)
  generate(a.out, a.num_images, a.num_siim, a.seed)
  print(f"wrote {a.out}/chexpert (cxr_chexpert/demo) and {a.out}/siim (cxr_siim/demo)")


if __name__ == "__main__":
  main()
