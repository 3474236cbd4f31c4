"""Demo stand-ins for the downstream datasets: a small classification set in the exact
CheXpert-v1.0-small layout and a small segmentation set in the exact SIIM-ACR layout, whose
labels and masks follow what is drawn (docs/data.md "Downstream datasets").

    python -m asg_jax.data.downstream_demo --out DIR [--num_images 160 --num_siim 80 --seed 0]

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

The generator writes only into `DIR`: it creates it (or takes it when empty) and marks it
with `.asg_jax_downstream_demo.json`; it refuses a non-empty folder without that marker
and a folder generated with other parameters; it never deletes anything. Drawing is this
module's own (NumPy), independent of asg_jax.data.synthetic.
"""
from __future__ import annotations

import argparse
import csv
import json
import os

import numpy as np
from PIL import Image

from asg_jax.data.builders import downstream
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
        f"asg_jax.data.downstream_demo (no {MARKER}); pass a new or empty folder")
  os.makedirs(out_dir, exist_ok=True)
  _write_marker(out_dir, params, complete=False)
  return False


def _write_marker(out_dir: str, params: dict, complete: bool) -> None:
  with open(os.path.join(out_dir, MARKER), "w") as f:
    json.dump({"owner": "asg_jax.data.downstream_demo", "params": params, "complete": complete}, f)


# ----------------------------------------------------------------------------- drawing

class _Film:
  """A frontal chest film in normalised coordinates (x to the image right = patient left)."""

  def __init__(self, rng, h: int, w: int):
    self.h, self.w, self.rng = h, w, rng
    self.y = ((np.arange(h) + 0.5) / h)[:, None]
    self.x = ((np.arange(w) + 0.5) / w)[None, :]
    dx, dy = rng.uniform(-0.02, 0.02, 2)
    s = rng.uniform(0.94, 1.04)
    self.lungs = {   # (cx, cy, rx, ry): image-left = right lung
        "right": (0.31 + dx, 0.48 + dy, 0.15 * s, 0.30 * s),
        "left": (0.69 + dx, 0.48 + dy, 0.15 * s, 0.30 * s)}
    self.heart = [0.54 + dx, 0.66 + dy, 0.13 * s, 0.12 * s]
    self.img = np.zeros((h, w), np.float64)

  def ellipse(self, cx, cy, rx, ry):
    return ((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2 <= 1.0

  def lung(self, side):
    return self.ellipse(*self.lungs[side])

  def base(self, cardiomegaly: bool):
    rng = self.rng
    body = self.ellipse(0.5, 0.55, 0.48, 0.62)
    self.img[:] = 0.08 + 0.5 * body
    texture = rng.normal(0, 1, (self.h // 4 + 1, self.w // 4 + 1))
    texture = np.kron(texture, np.ones((4, 4)))[:self.h, :self.w]
    for side in ("right", "left"):
      m = self.lung(side)
      self.img[m] = 0.22 + 0.03 * texture[m]          # aerated lung: dark, with markings
    if cardiomegaly:
      self.heart[2] *= 1.5
      self.heart[0] += 0.03
    self.img[self.ellipse(*self.heart)] = 0.7
    self.img[(np.abs(self.x - 0.5) < 0.035) & (self.y > 0.05)] = np.maximum(
        self.img[(np.abs(self.x - 0.5) < 0.035) & (self.y > 0.05)], 0.75)   # spine

  def effusion(self, side, strength):
    cx, cy, rx, ry = self.lungs[side]
    level = cy + ry * self.rng.uniform(0.25, 0.55)
    m = self.lung(side) & (self.y > level)
    self.img[m] = self.img[m] + strength * (0.68 - self.img[m])

  def atelectasis(self, side, strength):
    cx, cy, rx, ry = self.lungs[side]
    yb = cy + ry * self.rng.uniform(0.3, 0.5)
    m = self.lung(side) & (np.abs(self.y - yb) < 0.025) & (np.abs(self.x - cx) < rx * 0.7)
    self.img[m] += strength * 0.4

  def consolidation(self, side, strength):
    cx, cy, rx, ry = self.lungs[side]
    bx, by = cx + self.rng.uniform(-0.4, 0.4) * rx, cy + self.rng.uniform(-0.4, 0.3) * ry
    m = self.lung(side) & self.ellipse(bx, by, rx * 0.45, ry * 0.25)
    self.img[m] += strength * 0.4

  def edema(self, strength):
    for side in ("right", "left"):
      cx, cy, rx, ry = self.lungs[side]
      hx = cx + (0.6 if side == "right" else -0.6) * rx
      d = ((self.x - hx) / (rx * 0.8)) ** 2 + ((self.y - cy) / (ry * 0.6)) ** 2
      haze = np.exp(-d) * self.lung(side)
      self.img += strength * 0.3 * haze

  def pneumothorax(self, side) -> np.ndarray:
    """Apical lung collapse: no markings, darker, a bright visceral pleural line. -> mask."""
    cx, cy, rx, ry = self.lungs[side]
    depth = self.rng.uniform(0.3, 0.6)
    lung = self.lung(side)
    inner = self.ellipse(cx + (0.15 if side == "right" else -0.15) * rx, cy + 0.25 * ry,
                         rx * 0.85, ry * (1.0 - 0.4 * depth))
    m = lung & ~inner & (self.y < cy + 0.2 * ry)
    self.img[m] = 0.1
    self.img[lung & ~m & np.roll(m, 1, axis=0)] = 0.5   # the pleural line below the gas
    return m.astype(np.uint8)

  def finish(self) -> np.ndarray:
    img = self.img + self.rng.normal(0, 0.015, self.img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


DRAW = {"Atelectasis": "atelectasis", "Consolidation": "consolidation",
        "Pleural Effusion": "effusion"}


def draw_chexpert(rng, h: int, w: int, labels: dict[str, float]) -> np.ndarray:
  """A frontal film with the findings whose STORED label (U-ones / U-zeros) is 1."""
  film = _Film(rng, h, w)
  drawn = {t: v for t, v in labels.items() if v == 1.0 or (v == -1.0 and t in U_ONES)}
  film.base(cardiomegaly="Cardiomegaly" in drawn)
  for task, v in drawn.items():
    strength = 1.0 if v == 1.0 else 0.5
    if task == "Edema":
      film.edema(strength)
    elif task in DRAW:
      getattr(film, DRAW[task])(rng.choice(["right", "left"]), strength)
  return film.finish()


def _lateral(rng, h: int, w: int) -> np.ndarray:
  film = _Film(rng, h, w)
  film.img[:] = 0.1 + 0.5 * film.ellipse(0.5, 0.55, 0.35, 0.6)
  film.img[film.ellipse(0.45, 0.45, 0.2, 0.3)] = 0.25
  return film.finish()


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
        h, w = int(rng.integers(120, 141)), int(rng.integers(100, 121))
        _save_jpeg(os.path.join(root, rel), draw_chexpert(rng, h, w, labels))
        sex, age = str(rng.choice(["Male", "Female"])), str(int(rng.integers(20, 90)))
        ap = str(rng.choice(["AP", "PA"]))
        rows.append([rel, sex, age, "Frontal", ap] + [_cell(labels[c]) for c in HEADER[5:]])
        truth[rel] = labels
        made += 1
        if rng.random() < 0.25:   # a lateral view of the same study (filtered by the builder)
          lat = rel.replace("view1_frontal", "view2_lateral")
          _save_jpeg(os.path.join(root, lat), _lateral(rng, h, w))
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
    film = _Film(rng, SIIM_SIZE, SIIM_SIZE)
    film.base(cardiomegaly=False)
    sides = []
    if rng.random() < 0.45:
      sides = [str(rng.choice(["right", "left"]))] if rng.random() < 0.8 else ["right", "left"]
    masks = [film.pneumothorax(s) for s in sides]
    arr = film.finish()
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


def generate(out_dir: str, num_images: int = 160, num_siim: int = 80, seed: int = 0) -> dict:
  """Write the two stand-ins into `out_dir` (see the module docstring).

  Returns {"chexpert": {Path: {observation: value}}, "siim": {ImageId: mask [H, W]}} (the
  drawn truth; empty dicts when `out_dir` already held this generation).
  Raises FolderRefused for a folder it must not write into.
  """
  params = {"num_images": int(num_images), "num_siim": int(num_siim), "seed": int(seed)}
  if _claim(out_dir, params):
    return {"chexpert": {}, "siim": {}}
  rng = np.random.default_rng(seed)
  truth = {"chexpert": _chexpert(os.path.join(out_dir, "chexpert"), rng, num_images),
           "siim": _siim(os.path.join(out_dir, "siim"), rng, num_siim)}
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
