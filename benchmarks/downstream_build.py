"""Build speed of the downstream tfds builders (examples/s) on fixtures in the real layouts
with real-sized images, and the full-build time that implies.

    .venv/bin/python benchmarks/downstream_build.py [--n 60] [--image_size 256]

Per dataset it writes `--n` images in the dataset's layout into a temporary folder (sizes
as distributed: CheXpert-small ~320x390 JPEG; NIH 1024x1024 8-bit PNG, made from the real
NIH PNG of ../shared/realdata/images upscaled; RSNA and SIIM the real SIIM DICOM, 1024x1024
JPEG-baseline; COVIDx half 1024 PNG, half the real 2.3 MB COVID JPEG), builds it with
`download_and_prepare` (decode -> resize -> PNG -> tfrecord, one process) and reports
examples/s. Full-build estimates = the dataset's size / that rate (one core-ish; the
builders run in one Python process).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import tensorflow_datasets as tfds  # noqa: E402

import asg_jax.data.builders  # noqa: E402,F401
from asg_jax.data.demo import downstream as downstream_demo  # noqa: E402
from asg_jax.data.builders import downstream  # noqa: E402

REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "realdata" / "images"
SIIM_DCM = REAL / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
FULL_SIZE = {"cxr_chexpert": 191_027, "cxr_nih14": 112_120, "cxr_rsna": 26_684,
             "cxr_siim": 10_675, "cxr_covidx": 30_000}   # frontal / distinct images (docs/data.md)


def _chexpert(root: pathlib.Path, n: int, rng) -> None:
  base = root / "CheXpert-v1.0-small"
  for split, m in (("train", n), ("valid", 4)):
    rows = [",".join(downstream_demo.HEADER)]
    for i in range(m):
      rel = f"CheXpert-v1.0-small/{split}/patient{i + 1:05d}/study1/view1_frontal.jpg"
      labels = {c: float(rng.choice([1.0, 0.0, -1.0, np.nan])) for c in downstream_demo.HEADER[5:]}
      img = downstream_demo.draw_chexpert(rng, 390, 320, {k: v for k, v in labels.items()
                                                          if k in downstream.CHEXPERT_5})
      os.makedirs(root / os.path.dirname(rel), exist_ok=True)
      Image.fromarray(img).save(root / rel, quality=95)
      rows.append(",".join([rel, "Male", "50", "Frontal", "AP"] + ["" if np.isnan(labels[c]) else str(labels[c])
                                                                   for c in downstream_demo.HEADER[5:]]))
    os.makedirs(base, exist_ok=True)
    (base / f"{split}.csv").write_text("\n".join(rows) + "\n")


def _nih(root: pathlib.Path, n: int, rng) -> None:
  big = Image.open(REAL / "00000001_000.png").convert("L").resize((1024, 1024), Image.BILINEAR)
  (root / "images").mkdir(parents=True)
  rows = ["Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"]
  names = []
  for i in range(n):
    name = f"{i // 3 + 1:08d}_{i % 3:03d}.png"
    big.save(root / "images" / name)
    rows.append(f"{name},{rng.choice(['No Finding', 'Effusion|Mass', 'Hernia'])},{i % 3},{i // 3 + 1},50,M,PA,1024,1024,0.14,0.14")
    names.append(name)
  (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(rows) + "\n")
  (root / "train_val_list.txt").write_text("\n".join(names[:-5]) + "\n")
  (root / "test_list.txt").write_text("\n".join(names[-5:]) + "\n")


def _rsna(root: pathlib.Path, n: int, rng) -> None:
  (root / "stage_2_train_images").mkdir(parents=True)
  rows = ["patientId,x,y,width,height,Target"]
  for i in range(n):
    pid = f"{i:08x}-0000-0000-0000-000000000000"
    shutil.copy(SIIM_DCM, root / "stage_2_train_images" / f"{pid}.dcm")
    if i % 3 == 0:
      rows += [f"{pid},264.0,152.0,213.0,379.0,1", f"{pid},562.0,152.0,256.0,453.0,1"]
    else:
      rows.append(f"{pid},,,,,0")
  (root / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")


def _siim(root: pathlib.Path, n: int, rng) -> None:
  rows = ["ImageId, EncodedPixels"]
  for i in range(n):
    image_id = f"1.2.276.0.7230010.3.1.4.8323329.{i}.1517875201.850819"
    folder = root / "dicom-images-train" / f"s{i}" / f"r{i}"
    folder.mkdir(parents=True)
    shutil.copy(SIIM_DCM, folder / f"{image_id}.dcm")
    m = np.zeros((1024, 1024), np.uint8)
    m[200:400, 150:300] = 1
    rows.append(f"{image_id},{downstream.rle_encode(m) if i % 4 == 0 else '-1'}")
  (root / "train-rle.csv").write_text("\n".join(rows) + "\n")


def _covidx(root: pathlib.Path, n: int, rng) -> None:
  big = Image.open(REAL / "00000001_000.png").convert("L").resize((1024, 1024), Image.BILINEAR)
  lines = {"train": [], "test": []}
  for i in range(n):
    split = "test" if i % 6 == 0 else "train"
    (root / split).mkdir(parents=True, exist_ok=True)
    name = f"img{i}.png" if i % 2 else f"img{i}.jpg"
    if i % 2:
      big.save(root / split / name)
    else:
      shutil.copy(REAL / "covid-19-pneumonia-58-prior.jpg", root / split / name)
    lines[split].append(f"p{i // 2} {name} {rng.choice(['COVID-19', 'normal', 'pneumonia'])} src")
  for split, ls in lines.items():
    (root / f"{split}_COVIDx9A.txt").write_text("\n".join(ls) + "\n")


MAKERS = {"cxr_chexpert": _chexpert, "cxr_nih14": _nih, "cxr_rsna": _rsna, "cxr_siim": _siim,
          "cxr_covidx": _covidx}


def main(argv=None) -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--n", type=int, default=60)
  p.add_argument("--image_size", type=int, default=256)
  p.add_argument("--only", default="")
  a = p.parse_args(argv)
  rng = np.random.default_rng(0)
  # warm-up: tfds imports TensorFlow lazily at the first image encode (~5 s, not build time)
  tfds.features.Image(shape=(None, None, 1)).encode_example(np.zeros((8, 8, 1), np.uint8))
  print("| builder | fixture images | build s | examples/s | full set (images) | est. full build |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, make in MAKERS.items():
    if a.only and name not in a.only.split(","):
      continue
    with tempfile.TemporaryDirectory() as tmp:
      manual, data = pathlib.Path(tmp) / "manual", pathlib.Path(tmp) / "data"
      manual.mkdir()
      make(manual, a.n, rng)
      config = "default"
      kwargs = {"validation_size": 5} if name == "cxr_chexpert" else {}
      builder = tfds.builder(f"{name}/{config}", data_dir=str(data), image_size=a.image_size)
      if kwargs:
        import dataclasses  # pylint: disable=import-outside-toplevel
        builder = type(builder)(config=dataclasses.replace(builder.builder_config, name="bench",
                                                           **kwargs), data_dir=str(data))
      t0 = time.perf_counter()
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
      dt = time.perf_counter() - t0
      built = sum(s.num_examples for s in builder.info.splits.values())
      rate = built / dt
      full = FULL_SIZE[name]
      print(f"| `{name}` | {built} | {dt:.1f} | {rate:.0f} | {full:,} | {full / rate / 60:.0f} min |",
            flush=True)


if __name__ == "__main__":
  main()
