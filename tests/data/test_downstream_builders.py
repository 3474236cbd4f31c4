"""The downstream tfds builders (cxr_chexpert, cxr_nih14, cxr_rsna, cxr_siim, cxr_covidx).

Each fixture is built in tmp_path in the exact real layout, from the first rows of the
real label files (../shared/realdata/layouts/) plus a few hand-made rows, with small images
at the paths the rows name (real NIH PNG / SIIM DICOM / COVID JPEG files where there are
some) and planted faults. Expected values are worked out by hand in the comments.
"""
import csv
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import asg_jax.data.builders  # noqa: F401  (registers the builders)
from asg_jax.data.builders import chest_builder, downstream
from asg_jax.data.builders.cxr_chexpert import CxrChexpert
from asg_jax.data.builders.cxr_covidx import CxrCovidx
from asg_jax.data.builders.cxr_nih14 import CxrNih14
from asg_jax.data.builders.cxr_rsna import CxrRsna
from asg_jax.data.builders.cxr_siim import CxrSiim
from tests.helpers import write_dicom

REPO = pathlib.Path(__file__).resolve().parents[2]

Config = downstream.DownstreamConfig


# ------------------------------------------------------------------------------ helpers

def _jpeg(path, h=40, w=32, value=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  rng = np.random.default_rng(abs(hash(path)) % 2 ** 32)
  arr = rng.integers(0, 255, (h, w), dtype=np.uint8) if value is None else np.full((h, w), value, np.uint8)
  Image.fromarray(arr).save(path, format="PNG" if path.endswith(".png") else "JPEG")


def _truncate(path):
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 3])


def _build(cls, config, manual, data_dir):
  builder = cls(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return builder


def _examples(builder):
  out = {}
  for split in builder.info.splits:
    out[split] = {e["image_id"].decode(): e for e in
                  tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))}
  return out


def _summary(builder):
  return chest_builder.read_summary(builder.data_dir_root, builder.name, builder.builder_config.name,
                             str(builder.version))


def _skipped(summary):
  return {(s["reason"], os.path.basename(s["file"])) for s in summary["skipped_files"]}


def _layout(realdata_dir, name):
  return realdata_dir / "layouts" / name


def _check_features(builder, examples, size, seg=False):
  c = len(builder.info.metadata["class_names"])
  for split in examples.values():
    for e in split.values():
      assert e["image"].dtype == np.uint8 and e["image"].ndim == 3 and e["image"].shape[2] == 1
      assert max(e["image"].shape[:2]) == size
      assert e["labels"].dtype == np.float32 and e["labels"].shape == (c,)
      if seg:
        assert e["mask"].shape == e["image"].shape and set(np.unique(e["mask"])) <= {0, 1}


# ------------------------------------------------------------------------ shared helpers

def test_rle_is_relative_and_column_major():
  # H=3, W=3. "1 2 3 1": run 1 = pixels 1, 2 (column-major: (y=1, x=0), (y=2, x=0));
  # run 2 starts 3 after the END of run 1 -> pixel 6 = (y=0, x=2).
  want = np.array([[0, 0, 1], [1, 0, 0], [1, 0, 0]], np.uint8)
  got = downstream.rle_decode("1 2 3 1", 3, 3)
  np.testing.assert_array_equal(got, want)
  assert not np.array_equal(got, want.T)
  assert downstream.rle_encode(want) == "1 2 3 1"
  assert downstream.rle_decode("-1", 2, 5).shape == (2, 5) and downstream.rle_decode("-1", 2, 5).sum() == 0
  for bad in ("1 2 3", "a 2", "0 100"):
    with pytest.raises(ValueError):
      downstream.rle_decode(bad, 3, 3)
  rng = np.random.default_rng(0)
  m = (rng.random((7, 5)) > 0.6).astype(np.uint8)
  np.testing.assert_array_equal(downstream.rle_decode(downstream.rle_encode(m), 7, 5), m)


def test_rle_real_siim_row(realdata_dir):
  rows = list(csv.reader(open(_layout(realdata_dir, "siim_train-rle.head.csv"))))
  code = rows[2][1]   # 1.2.276...13666: "557374 2 1015 8 1009 14 ..."
  m = downstream.rle_decode(" ".join(code.split()[:6]), 1024, 1024)
  # 557374 = 544 * 1024 + 318: column 544, rows 318-319; next run starts at
  # 557376 + 1015 = 558391 = 545 * 1024 + 311: column 545, rows 311-318; then
  # 558399 + 1009 = 559408 = 546 * 1024 + 304: column 546, rows 304-317.
  assert m.sum() == 2 + 8 + 14
  assert m[318:320, 544].all() and m[311:319, 545].all() and m[304:318, 546].all()
  assert m[317, 544] == 0 and m[310, 545] == 0 and m[319, 545] == 0
  assert m[544, 318] == 0   # the transposed position


def test_sklearn_split_rule():
  # sklearn train_test_split(range(10), test_size=0.3, random_state=0): permutation
  # RandomState(0).permutation(10) = [2 8 4 9 1 6 7 3 0 5]; test = first ceil(3.0) = 3.
  train, test = downstream.train_test_split_positions(10, 0.3, 0)
  assert list(test) == [2, 8, 4] and list(train) == [9, 1, 6, 7, 3, 0, 5]
  ids = [f"p{i}" for i in range(10)]
  s = downstream.split_70_15_15(ids, 0)
  # rest = [p2, p8, p4]; RandomState(0).permutation(3) = [2 1 0], ceil(1.5) = 2 ->
  # validation = rest[2], rest[1] = p4, p8; test = rest[0] = p2.
  assert s == {"train": ["p9", "p1", "p6", "p7", "p3", "p0", "p5"], "validation": ["p4", "p8"],
               "test": ["p2"]}


def test_fraction_ids_rule():
  ids = [f"img{i:04d}" for i in range(1000)]
  assert downstream.fraction_count(1000, 0.01) == 10
  assert downstream.fraction_count(1000, 0.1) == 100
  assert downstream.fraction_count(5, 0.01) == 1 and downstream.fraction_count(250, 0.01) == 3
  assert downstream.fraction_count(7, 1.0) == 7
  one = downstream.select_fraction(ids, 0.01)
  ten = downstream.select_fraction(list(reversed(ids)), 0.1)
  assert len(one) == 10 and len(ten) == 100 and set(one) <= set(ten)
  assert downstream.select_fraction(ids, 1.0) == sorted(ids)
  # stable: a fixed, hash-defined selection (not Python's salted hash)
  assert one == downstream.select_fraction(ids[::-1], 0.01, seed=42)
  assert one != downstream.select_fraction(ids, 0.01, seed=1)
  # an id absent from a build moves the selection by at most that id
  fewer = downstream.select_fraction([i for i in ids if i != one[0]], 0.01)
  assert len(set(one) ^ set(fewer)) <= 2
  with pytest.raises(ValueError):
    downstream.fraction_count(10, 0.0)


# ---------------------------------------------------------------------------- CheXpert

EXTRA_CHEXPERT = [
    # hand-made 5x200 candidates: 2 per task (one-hot of the task, others 0 / blank); the
    # last one has Consolidation -1 (not a candidate); one with an unparseable cell.
    ("patient90001/study1", {"Atelectasis": "1.0", "Edema": "0.0"}),
    ("patient90002/study1", {"Atelectasis": "1.0", "No Finding": "1.0"}),
    ("patient90003/study1", {"Cardiomegaly": "1.0"}),
    ("patient90004/study1", {"Cardiomegaly": "1.0", "Support Devices": "0.0"}),
    ("patient90005/study1", {"Consolidation": "1.0"}),
    ("patient90006/study1", {"Pleural Effusion": "1.0"}),
    ("patient90007/study1", {"Pleural Effusion": "1.0", "Consolidation": "-1.0"}),
    ("patient90008/study1", {"Edema": "maybe"}),
]


@pytest.fixture(scope="module")
def chexpert(realdata_dir, tmp_path_factory):
  manual = tmp_path_factory.mktemp("chexpert_manual")
  root = manual / "CheXpert-v1.0-small"
  root.mkdir()
  with open(_layout(realdata_dir, "chexpert_train.head.csv")) as f:
    lines = f.read().splitlines()
  header = lines[0].split(",")
  for rel, cells in EXTRA_CHEXPERT:
    row = {h: "" for h in header}
    row.update(Path=f"CheXpert-v1.0-small/train/{rel}/view1_frontal.jpg", Sex="Male", Age="50",
               **{"Frontal/Lateral": "Frontal", "AP/PA": "PA"}, **cells)
    lines.append(",".join(row[h] for h in header))
  (root / "train.csv").write_text("\n".join(lines) + "\n")
  valid = [lines[0],
           "CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg,Male,73,Frontal,AP,,1.0,1.0,1.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0",
           "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg,Male,70,Frontal,PA,,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0",
           "CheXpert-v1.0-small/valid/patient64542/study1/view2_lateral.jpg,Male,70,Lateral,,,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0"]
  (root / "valid.csv").write_text("\n".join(valid) + "\n")
  for line in lines[1:] + valid[1:]:
    _jpeg(str(manual / line.split(",")[0]))
  # planted faults: a truncated image, a missing image
  _truncate(str(manual / "CheXpert-v1.0-small/train/patient00007/study2/view1_frontal.jpg"))
  os.remove(manual / "CheXpert-v1.0-small/train/patient00010/study1/view1_frontal.jpg")
  cfg = Config(name="fixture", image_size=32, validation_size=3, per_task=1)
  builder = _build(CxrChexpert, cfg, manual, tmp_path_factory.mktemp("chexpert_data"))
  five = _build(CxrChexpert, Config(name="fixture_5x200", image_size=32, subset="5x200", per_task=1),
                manual, tmp_path_factory.mktemp("chexpert5_data"))
  return manual, builder, _examples(builder), five, _examples(five)


P = "CheXpert-v1.0-small/train/"


def test_chexpert_splits_labels_and_faults(chexpert):
  manual, builder, ex, _, _ = chexpert
  _check_features(builder, ex, 32)
  assert builder.info.metadata["class_names"] == ["Atelectasis", "Cardiomegaly", "Consolidation",
                                                  "Edema", "Pleural Effusion"]
  # 31 frontal head rows + 8 hand rows = 39 frontal training rows (8 laterals filtered);
  # 5x200 with 1 per task: Atelectasis {90001, 90002} -> RandomState(0).permutation(2)[0];
  # Cardiomegaly {90003, 90004}; Consolidation {90005}; Edema {patient00003 (real row:
  # Edema 1.0, Pneumothorax 0.0)}; Pleural Effusion {90006} (90007 has Consolidation -1).
  perm2 = int(np.random.RandomState(0).permutation(2)[0])
  five = {P + f"patient9000{1 + perm2}/study1/view1_frontal.jpg",
          P + f"patient9000{3 + perm2}/study1/view1_frontal.jpg",
          P + "patient90005/study1/view1_frontal.jpg", P + "patient00003/study1/view1_frontal.jpg",
          P + "patient90006/study1/view1_frontal.jpg"}
  summary = _summary(builder)
  assert summary["splits"]["train"]["filtered"] == {"view_Lateral": 8}
  assert summary["splits"]["test"]["filtered"] == {"view_Lateral": 1}
  assert _skipped(summary) == {("corrupt_image", "view1_frontal.jpg"), ("missing_image", "view1_frontal.jpg"),
                               ("bad_value", "view1_frontal.jpg")}
  bad = {s["file"].split("train/")[-1] for s in summary["skipped_files"]}
  assert any("patient00007/study2" in b for b in bad) and any("patient00010/study1" in b for b in bad)
  assert any("patient90008" in b for b in bad)
  # pool = 39 - 5 = 34 rows; validation = 3 sampled positions, the 3 faults are skipped where
  # they land: train + validation = 34 - 3
  assert len(ex["validation"]) + len(ex["train"]) == 34 - 3
  assert len(ex["validation"]) <= 3 and summary["splits"]["validation"]["examples"] == len(ex["validation"])
  assert not (set(ex["train"]) | set(ex["validation"])) & five
  assert not set(ex["train"]) & set(ex["validation"])
  assert set(ex["test"]) == {"CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg",
                             "CheXpert-v1.0-small/valid/patient64542/study1/view1_frontal.jpg"}
  everything = {**ex["train"], **ex["validation"]}
  # uncertain mapping: patient00002/study2 has Atelectasis, Cardiomegaly, Consolidation,
  # Edema, Pleural Effusion all -1 -> U-ones (Atel, Edema, PE) = 1, U-zeros = 0
  np.testing.assert_array_equal(everything[P + "patient00002/study2/view1_frontal.jpg"]["labels"], [1, 0, 0, 1, 1])
  # patient00002/study1: Consolidation -1 -> 0, the rest blank -> 0
  np.testing.assert_array_equal(everything[P + "patient00002/study1/view1_frontal.jpg"]["labels"], [0, 0, 0, 0, 0])
  # patient00011/study4: Atelectasis -1 -> 1, Pleural Effusion -1 -> 1
  np.testing.assert_array_equal(everything[P + "patient00011/study4/view1_frontal.jpg"]["labels"], [1, 0, 0, 0, 1])
  # patient00007/study1: Atelectasis 1, Cardiomegaly 1, PE 0.0
  np.testing.assert_array_equal(everything[P + "patient00007/study1/view1_frontal.jpg"]["labels"], [1, 1, 0, 0, 0])
  # patient00011/study12: Atel 1, Cardio 1, Edema 1, PE 1
  np.testing.assert_array_equal(everything[P + "patient00011/study12/view1_frontal.jpg"]["labels"], [1, 1, 0, 1, 1])
  # valid row 1: No Finding blank, Enlarged Cardiomediastinum 1, Cardiomegaly 1, Lung
  # Opacity 1, Lung Lesion 0, Edema 1, Consolidation 0, ..., Atelectasis 0, Pleural Effusion 0
  np.testing.assert_array_equal(ex["test"]["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg"]["labels"],
                                [0, 1, 0, 1, 0])
  e = everything[P + "patient00005/study2/view2_frontal.jpg"]
  assert e["patient_id"].decode() == "patient00005"
  assert tuple(e["original_size"]) == (40, 32) and e["image"].shape == (32, 26, 1)
  # the fraction rule on the built train split
  ids = asg_jax.data.builders.fraction_ids(builder, "train", 0.1)
  assert ids == downstream.select_fraction(list(ex["train"]), 0.1) and len(ids) == round(0.1 * len(ex["train"]))
  assert set(asg_jax.data.builders.fraction_ids(builder, "train", 0.01)) <= set(ids)


def test_chexpert_5x200(chexpert):
  _, _, _, five, ex = chexpert
  assert list(ex) == ["test"]
  perm2 = int(np.random.RandomState(0).permutation(2)[0])
  want = {P + f"patient9000{1 + perm2}/study1/view1_frontal.jpg": 0,
          P + f"patient9000{3 + perm2}/study1/view1_frontal.jpg": 1,
          P + "patient90005/study1/view1_frontal.jpg": 2,
          P + "patient00003/study1/view1_frontal.jpg": 3,
          P + "patient90006/study1/view1_frontal.jpg": 4}
  assert set(ex["test"]) == set(want)
  for path, task in want.items():
    np.testing.assert_array_equal(ex["test"][path]["labels"], np.eye(5)[task])


def test_chexpert_missing_label_file(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"(?s)CheXpert-v1.0-small/train.csv.*valid.csv"):
    _build(CxrChexpert, Config(name="x", image_size=32), tmp_path, tmp_path / "data")


# --------------------------------------------------------------------------------- NIH

@pytest.fixture(scope="module")
def nih(realdata_dir, tmp_path_factory):
  manual = tmp_path_factory.mktemp("nih_manual")
  with open(_layout(realdata_dir, "nih_Data_Entry_2017_v2020.head.csv")) as f:
    lines = f.read().splitlines()
  lines.append("00000999_000.png,Pneumonia|Shadow,0,999,60,M,PA,2500,2048,0.168,0.168")  # unknown label
  (manual / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
  names = [line.split(",")[0] for line in lines[1:]]
  # test = the images of patients 3 and 11 (+ one without a label row)
  test = [n for n in names if n[:8] in ("00000003", "00000011")] + ["00000998_000.png"]
  train_val = [n for n in names if n not in test]
  (manual / "train_val_list.txt").write_text("\n".join(train_val) + "\n")
  (manual / "test_list.txt").write_text("\n".join(test) + "\n")
  for i, n in enumerate(names):
    folder = "images" if i % 2 else os.path.join("images_001", "images")   # both layouts
    if n == "00000001_000.png":
      os.makedirs(manual / folder, exist_ok=True)
      shutil.copy(realdata_dir / "images" / n, manual / folder / n)   # the real image
    else:
      _jpeg(str(manual / folder / n), 36, 40)
  _truncate(str(next(manual.rglob("00000001_001.png"))))
  os.remove(next(manual.rglob("00000005_000.png")))
  builder = _build(CxrNih14, Config(name="fixture", image_size=32, validation_fraction=0.1),
                   manual, tmp_path_factory.mktemp("nih_data"))
  return manual, builder, _examples(builder), train_val, test


def test_nih_labels_splits_and_faults(nih):
  manual, builder, ex, train_val, test = nih
  _check_features(builder, ex, 32)
  classes = builder.info.metadata["class_names"]
  # train_val patients (sorted as numbers) 1, 2, 4, 5, 6, 7, 8, 9, 10, 12, 13, 999 (12) ->
  # ceil(0.1 * 12) = 2 held out: RandomState(0).permutation(12)[:2] = [6, 11] -> "8", "999"
  # (999's only row has an unknown label: skipped)
  assert {e["patient_id"].decode() for e in ex["validation"].values()} == {"8"}
  assert set(ex["validation"]) == {"00000008_000.png", "00000008_001.png", "00000008_002.png"}
  train_patients = {e["patient_id"].decode() for e in ex["train"].values()}
  assert train_patients == {"1", "2", "4", "5", "6", "7", "9", "10", "12", "13"}
  summary = _summary(builder)
  assert _skipped(summary) == {("corrupt_image", "00000001_001.png"), ("missing_image", "00000005_000.png"),
                               ("bad_value", "00000999_000.png"), ("missing_label", "00000998_000.png")}
  # 23 train_val names (39 head rows - 17 of patients 3 and 11 + the hand row) - 4 of the
  # held-out patients - 2 faults (the truncated 00000001_001, the missing 00000005_000)
  assert len(train_val) == 23 and len(ex["train"]) == 17
  assert set(ex["test"]) == set(test) - {"00000998_000.png"}
  assert len(ex["test"]) == 8 + 9
  def lab(name):
    e = {**ex["train"], **ex["validation"], **ex["test"]}[name]
    return {classes[i] for i in np.nonzero(e["labels"])[0]}
  assert lab("00000001_000.png") == {"Cardiomegaly"}
  assert lab("00000001_002.png") == {"Cardiomegaly", "Effusion"}
  assert lab("00000003_003.png") == {"Hernia", "Infiltration"}
  assert lab("00000004_000.png") == {"Mass", "Nodule"}
  assert lab("00000008_000.png") == {"Cardiomegaly"}
  assert lab("00000002_000.png") == set()   # No Finding
  assert lab("00000005_007.png") == {"Effusion", "Infiltration"}
  real = ex["train"]["00000001_000.png"]
  assert tuple(real["original_size"]) == (512, 512) and real["image"].shape == (32, 32, 1)   # the real PNG


def test_nih_missing_label_file(tmp_path):
  (tmp_path / "train_val_list.txt").write_text("")
  with pytest.raises(FileNotFoundError, match="(?s)Data_Entry_2017_v2020.csv.*test_list.txt"):
    _build(CxrNih14, Config(name="x", image_size=32), tmp_path, tmp_path / "data")


# -------------------------------------------------------------------------------- RSNA

@pytest.fixture(scope="module")
def rsna(realdata_dir, tmp_path_factory):
  manual = tmp_path_factory.mktemp("rsna_manual")
  with open(_layout(realdata_dir, "rsna_stage_2_train_labels.head.csv")) as f:
    lines = [l for l in f.read().splitlines() if l.strip()]
  lines += ["fault-target,,,,,2",          # unparseable Target
            "fault-box,10.0,,20.0,30.0,1"]  # a positive row without y
  (manual / "stage_2_train_labels.csv").write_text("\n".join(lines) + "\n")
  real = realdata_dir / "images" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
  pids = sorted({l.split(",")[0] for l in lines[1:]})
  (manual / "stage_2_train_images").mkdir()
  for pid in pids:
    shutil.copy(real, manual / "stage_2_train_images" / f"{pid}.dcm")   # a real 1024^2 DICOM
  _truncate(str(manual / "stage_2_train_images" / "00313ee0-9eaa-42f4-b0ab-c148ed3241cd.dcm"))
  os.remove(manual / "stage_2_train_images" / "00322d4d-1c29-4943-afc9-b6754be640eb.dcm")
  builder = _build(CxrRsna, Config(name="fixture", image_size=64), manual, tmp_path_factory.mktemp("rsna_data"))
  return builder, _examples(builder), pids


def test_rsna_patients_boxes_masks_splits(rsna):
  builder, ex, pids = rsna
  _check_features(builder, ex, 64, seg=True)
  # 39 head rows = 30 patients (21 with one row, 9 with two boxes) + 2 fault patients
  assert len(pids) == 32
  # 32 sorted ids: train = 32 - ceil(9.6) = 22, rest 10 -> validation ceil(5.0) = 5, test 5
  split = downstream.split_70_15_15(pids, 0)
  assert [len(split[s]) for s in ("train", "validation", "test")] == [22, 5, 5]
  summary = _summary(builder)
  assert _skipped(summary) == {("corrupt_image", "00313ee0-9eaa-42f4-b0ab-c148ed3241cd.dcm"),
                               ("missing_image", "00322d4d-1c29-4943-afc9-b6754be640eb.dcm"),
                               ("bad_value", "fault-target"), ("bad_box", "fault-box")}
  for s in ("train", "validation", "test"):
    faults = {"00313ee0-9eaa-42f4-b0ab-c148ed3241cd", "00322d4d-1c29-4943-afc9-b6754be640eb",
              "fault-target", "fault-box"}
    assert set(ex[s]) == set(split[s]) - faults
  all_ex = {k: v for s in ex.values() for k, v in s.items()}
  # 00436515...: two rows, boxes (264, 152, 213, 379) and (562, 152, 256, 453)
  e = all_ex["00436515-870c-4b36-a041-de91049b9ab4"]
  assert e["labels"].tolist() == [1.0] and e["patient_id"].decode() == "00436515-870c-4b36-a041-de91049b9ab4"
  s = 64 / 1024
  np.testing.assert_allclose(e["boxes"], np.array([[264, 152, 477, 531], [562, 152, 818, 605]]) * s, rtol=1e-6)
  m = e["mask"][..., 0]
  # stored pixel (row 20, col 22) samples the original near (328, 360): inside box 1;
  # (row 20, col 32) -> x = 520: between the boxes; (row 5, col 22) -> y = 88: above them
  assert m[20, 22] == 1 and m[20, 32] == 0 and m[5, 22] == 0 and m[20, 40] == 1
  assert abs(m.sum() - (213 * 379 + 256 * 453) * s * s) < 0.05 * m.sum()
  neg = all_ex["0004cfab-14fd-4e49-80ba-63a80b6bddd6"]
  assert neg["labels"].tolist() == [0.0] and neg["mask"].sum() == 0 and neg["boxes"].shape == (0, 4)
  single = all_ex["0100515c-5204-4f31-98e0-f35e4b00004a"]   # one row: 703, 416, 84, 77
  assert single["boxes"].shape == (1, 4)


def test_rsna_missing_label_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="(?s)stage_2_train_labels.csv.*patientId, x, y"):
    _build(CxrRsna, Config(name="x", image_size=32), tmp_path, tmp_path / "data")


# -------------------------------------------------------------------------------- SIIM

HAND_ID = "1.2.276.0.7230010.3.1.4.8323329.99999.1517875000.000001"
BAD_RLE_ID = "1.2.276.0.7230010.3.1.4.8323329.99999.1517875000.000002"
NO_DICOM_ID = "1.2.276.0.7230010.3.1.4.8323329.99999.1517875000.000003"
# a 16 x 12 (H x W) image with two rows: "18 3" = pixels 18-20 -> column 1 (18 // 16),
# rows 2-4; "100 2 14 2" = pixels 100-101 -> column 6, rows 4-5, then 102 + 14 = 116 -> column
# 7, rows 4-5.
HAND_MASK = np.zeros((16, 12), np.uint8)
HAND_MASK[2:5, 1] = 1
HAND_MASK[4:6, 6:8] = 1


@pytest.fixture(scope="module")
def siim(realdata_dir, tmp_path_factory):
  manual = tmp_path_factory.mktemp("siim_manual")
  with open(_layout(realdata_dir, "siim_train-rle.head.csv")) as f:
    lines = [l for l in f.read().splitlines() if l.strip()]
  assert lines[0] == "ImageId, EncodedPixels"
  out = [lines[0]]
  for line in lines[1:]:
    image_id, code = line.split(",", 1)
    if code.strip() != "-1":   # the head file cuts long codes: keep whole pairs only
      tokens = code.split()[:-1]
      code = " ".join(tokens[:len(tokens) // 2 * 2])
    out.append(f"{image_id},{code}")
  out += [f"{HAND_ID},18 3", f"{HAND_ID},100 2 14 2", f"{BAD_RLE_ID},12 x", f"{NO_DICOM_ID},-1"]
  (manual / "train-rle.csv").write_text("\n".join(out) + "\n")
  real = realdata_dir / "images" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
  ids = list(dict.fromkeys(l.split(",")[0] for l in out[1:]))
  for i, image_id in enumerate(ids):
    folder = manual / "dicom-images-train" / f"1.2.276.0.7230010.3.1.4.8323329.{i}.1" / f"1.2.276.0.7230010.3.1.4.8323329.{i}.2"
    path = folder / f"{image_id}.dcm"
    if image_id == HAND_ID:
      write_dicom(str(path), (np.arange(16 * 12) % 251).reshape(16, 12).astype(np.uint8), patient_id="hand-patient")
    elif image_id != NO_DICOM_ID:
      folder.mkdir(parents=True)
      shutil.copy(real, path)
  _truncate(str(next((manual / "dicom-images-train").rglob(f"{ids[4]}.dcm"))))
  builder = _build(CxrSiim, Config(name="fixture", image_size=16), manual, tmp_path_factory.mktemp("siim_data"))
  return builder, _examples(builder), ids, out


def test_siim_masks_labels_splits_and_faults(siim):
  builder, ex, ids, rows = siim
  _check_features(builder, ex, 16, seg=True)
  all_ex = {k: v for s in ex.values() for k, v in s.items()}
  # 11 head ids + 3 hand ids (one with 2 rows) = 14 ids; split over the ids in file order:
  # 14 - ceil(4.2) = 9 train; rest 5 -> validation ceil(2.5) = 3, test 2
  split = downstream.split_70_15_15(ids, 0)
  assert [len(split[s]) for s in ("train", "validation", "test")] == [9, 3, 2]
  faults = {ids[4], BAD_RLE_ID, NO_DICOM_ID}
  for s in split:
    assert set(ex.get(s, {})) == set(split[s]) - faults
  assert _skipped(_summary(builder)) == {("corrupt_image", f"{ids[4]}.dcm"), ("bad_mask", BAD_RLE_ID),
                                          ("missing_image", NO_DICOM_ID)}
  hand = all_ex[HAND_ID]
  assert hand["image"].shape == (16, 12, 1) and tuple(hand["original_size"]) == (16, 12)
  np.testing.assert_array_equal(hand["mask"][..., 0], HAND_MASK)   # the union of both rows
  assert hand["labels"].tolist() == [1.0] and hand["patient_id"].decode() == "hand-patient"
  # the real rows: -1 -> label 0, empty mask; a code -> label 1, its decoded mask resized
  first = all_ex["1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819"]
  assert first["labels"].tolist() == [0.0] and first["mask"].sum() == 0
  assert first["patient_id"].decode() == "16d7f894-55d7-4d95-8957-d18987f0e981"
  for line in rows[1:12]:
    image_id, code = line.split(",", 1)
    if image_id in all_ex:
      assert all_ex[image_id]["labels"].tolist() == [float(code.strip() != "-1")]
      want = downstream.resize_mask(downstream.rle_decode(code, 1024, 1024), (16, 16))
      np.testing.assert_array_equal(all_ex[image_id]["mask"], want)
  assert sorted(downstream.balanced_ids(builder, "train")) == downstream.balanced_ids(builder, "train")


def test_siim_missing_label_file(tmp_path):
  with pytest.raises(FileNotFoundError, match="(?s)train-rle.csv.*ImageId, EncodedPixels"):
    _build(CxrSiim, Config(name="x", image_size=32), tmp_path, tmp_path / "data")


# ------------------------------------------------------------------------------ COVIDx

@pytest.fixture(scope="module")
def covidx(realdata_dir, tmp_path_factory):
  manual = tmp_path_factory.mktemp("covidx_manual")
  test_lines = [l for l in _layout(realdata_dir, "covidx_test_COVIDx9A.head.txt").read_text().splitlines() if l.strip()]
  test_lines += ["16747 16747_3_1.jpg pneumonia rsna"]
  train_lines = ["p1 p1_a.png normal rsna", "p1 p1_b.jpg normal rsna", "p2 p2_a.jpeg pneumonia rsna",
                 "p3 covid-19-pneumonia-58-prior.jpg COVID-19 cohen", "p4 p4_a.png COVID-19 sirm",
                 "p5 p5_a.png normal rsna", "p6 p6_a.png pneumonia rsna", "p7 p7_a.png covid sirm",
                 "p8 p8_a.png", "p9 p9 missing.png normal rsna"]
  (manual / "test_COVIDx9A.txt").write_text("\n".join(test_lines) + "\n")
  (manual / "train_COVIDx9A.txt").write_text("\n".join(train_lines) + "\n")
  for folder, lines in (("test", test_lines), ("train", train_lines)):
    for line in lines:
      parts = line.split()
      if len(parts) < 4 or "missing" in line:
        continue
      name = " ".join(parts[1:-2])
      src = realdata_dir / "images" / name
      os.makedirs(manual / folder, exist_ok=True)
      if src.is_file():
        shutil.copy(src, manual / folder / name)
      else:
        _jpeg(str(manual / folder / name), 30, 40)
  builder = _build(CxrCovidx, Config(name="fixture", image_size=32, validation_fraction=0.2,
                                     classes=("COVID-19", "normal", "pneumonia")),
                   manual, tmp_path_factory.mktemp("covidx_data"))
  return builder, _examples(builder), test_lines


def test_covidx_lists_and_splits(covidx):
  builder, ex, test_lines = covidx
  _check_features(builder, ex, 32)
  assert builder.info.metadata["class_names"] == ["COVID-19", "normal", "pneumonia"]
  # test = the 20 head lines (PNG, COVID-19) + one real JPEG
  assert len(ex["test"]) == 21
  t = ex["test"]["MIDRC-RICORD-1C-419639-003251-46647-0.png"]
  assert t["labels"].tolist() == [1, 0, 0] and t["patient_id"].decode() == "419639-003251"
  assert ex["test"]["16747_3_1.jpg"]["labels"].tolist() == [0, 0, 1]
  # parsed train lines' patients p1..p7, p9 (8; p8's short line is skipped) -> ceil(1.6) = 2
  # held out: RandomState(0).permutation(8)[:2] = [6, 2] -> p7 (bad label, skipped), p3
  assert set(ex["validation"]) == {"covid-19-pneumonia-58-prior.jpg"}
  assert set(ex["train"]) == {"p1_a.png", "p1_b.jpg", "p2_a.jpeg", "p4_a.png", "p5_a.png", "p6_a.png"}
  assert ex["train"]["p2_a.jpeg"]["labels"].tolist() == [0, 0, 1]
  assert ex["train"]["p1_b.jpg"]["labels"].tolist() == [0, 1, 0]
  assert tuple(ex["validation"]["covid-19-pneumonia-58-prior.jpg"]["original_size"]) != (30, 40)
  assert _skipped(_summary(builder)) == {("bad_value", "p7_a.png"), ("missing_column", "train_COVIDx9A.txt line 9"),
                                          ("missing_image", "p9 missing.png")}


def test_covidx_missing_list(tmp_path):
  with pytest.raises(FileNotFoundError, match="(?s)train_COVIDx9A.txt.*patient_id filename label source"):
    _build(CxrCovidx, Config(name="x", image_size=32, classes=("a",)), tmp_path, tmp_path / "data")


# ------------------------------------------------------- transfer recipes on the fixtures

@pytest.mark.slow
def test_every_transfer_recipe_runs_on_its_builder_fixture(chexpert, nih, rsna, covidx,
                                                           tiny_pretrained, tmp_path, monkeypatch):
  """`configs/transfer/<dataset>.py:runlocal` through `run.run_transfer` (what
  `python -m asg_jax.evaluate` runs) on each builder's fixture build, pre-trained and random
  init: every declared evaluator yields its rows, results.json / results.md are written."""
  from asg_jax.transfer import config as transfer_config, run, table
  from asg_jax.data.pipeline import downstream_input
  fixtures = {"cxr_chexpert": chexpert[1], "cxr_chexpert/5x200": chexpert[3],
              "cxr_nih14": nih[1], "cxr_rsna": rsna[0], "cxr_covidx": covidx[0]}
  monkeypatch.setattr(downstream_input, "builder", lambda dataset, data_dir: fixtures[dataset])
  recipes = {"chexpert": {"linear_probe", "zero_shot_prompt", "zero_shot_tags", "retrieval"},
             "nih14": {"linear_probe", "zero_shot_tags"},
             "rsna": {"linear_probe", "zero_shot_prompt", "zero_shot_tags"},
             "covidx": {"linear_probe"}}
  for name, protocols in recipes.items():
    config = transfer_config.load(str(REPO / "configs" / "transfer" / f"{name}.py:runlocal"))
    out = tmp_path / name
    results = run.run_transfer("", config, out_dir=str(out), pretrained=tiny_pretrained)
    assert json.loads((out / table.RESULTS_JSON).read_text())["rows"] == results["rows"]
    assert (out / table.RESULTS_MD).read_text().count("\n|") > 2
    got = {(r["protocol"], r["init"]) for r in results["rows"]}
    assert got == {(p, i) for p in protocols for i in ("pretrained", "random")}, name
    for r in results["rows"]:
      assert r["value"] is None or 0.0 <= r["value"] <= 1.0, r
    probe = {(r["metric"], r["fraction"]) for r in results["rows"] if r["protocol"] == "linear_probe"}
    assert {("auroc", f) for f in (0.01, 0.1, 1.0)} <= probe, name
    if name == "covidx":   # single-label: top-1 accuracy, the papers' COVIDx metric
      assert {("accuracy", f) for f in (0.01, 0.1, 1.0)} <= probe
