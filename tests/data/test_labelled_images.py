"""`labelled_images` on real X-rays (../shared/realdata; skipped with a message where absent):
the NIH sample as a CSV with its 14 real labels and patient ids, as class folders with
planted faults, the covid-chestxray metadata as a user would write it (CT and lateral rows
filtered and counted); the one decoder (`asg_jax.data.images`) on every odd input."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from asg_jax.data import images
from asg_jax.data.builders import chest_builder, cxr_nih14, labelled_images as li
from tests.helpers import snapshot, write_dicom

SIZE = 32


@pytest.fixture(scope="module")
def nih(realdata_dir):
  """(image folder, the 200 Data_Entry rows) of the NIH sample."""
  root = realdata_dir / "nih-sample"
  with open(root / "Data_Entry_2017_v2020.sample.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  return root / "images", rows


def _write_csv(path, header, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)


def _built(out, data_dir):
  """{image_id: (split, labels, patient_id)} of a prepared build."""
  import tensorflow_datasets as tfds
  b = tfds.builder(out["dataset"], data_dir=data_dir)
  got = {}
  skip = {"image": tfds.decode.SkipDecoding()}
  for split in b.info.splits:
    for ex in tfds.as_numpy(b.as_dataset(split=split, decoders=skip)):
      got[ex["image_id"].decode()] = (split, ex["labels"], ex["patient_id"].decode())
  return b, got


def _no_patient_in_two_splits(got):
  where = {}
  for split, _, patient in got.values():
    where.setdefault(patient, set()).add(split)
  assert all(len(s) == 1 for s in where.values())


def test_nih_sample_as_csv_with_its_14_label_columns(nih, tmp_path):
  folder, rows = nih
  rows = rows[:40]
  classes = list(cxr_nih14.CLASSES)
  table = [[f"{folder}/{r['Image Index']}", r["Patient ID"], r["View Position"]]
           + [str(int(v)) for v in cxr_nih14.parse_findings(r["Finding Labels"])] for r in rows]
  src = tmp_path / "mine" / "labels.csv"
  _write_csv(src, ["image_path", "patient_id", "view_position"] + classes, table)
  before = snapshot(src.parent)
  data_dir = str(tmp_path / "tfds")
  out = li.prepare(str(src), data_dir, image_size=SIZE)
  assert out["dataset"] == "labelled_images/mine" and out["class_names"] == classes
  assert out["task"] == "multilabel"
  b, got = _built(out, data_dir)
  assert set(b.info.splits) == {"train", "validation", "test"}
  assert len(got) == 40 and out["summary"]["num_skipped"] == 0
  for r in rows:   # every built example's labels are the CSV's
    split, labels, patient = got[f"{folder}/{r['Image Index']}"]
    np.testing.assert_array_equal(labels, cxr_nih14.parse_findings(r["Finding Labels"]))
    assert patient == r["Patient ID"]
  _no_patient_in_two_splits(got)
  assert snapshot(src.parent) == before                # the user's folder is only read
  # unchanged -> reused; an edited labels file -> rebuilt
  assert not li.prepare(str(src), data_dir, image_size=SIZE)["built"]
  table[0][3 + classes.index("Mass")] = "1"
  _write_csv(src, ["image_path", "patient_id", "view_position"] + classes, table)
  again = li.prepare(str(src), data_dir, image_size=SIZE)
  assert again["built"] and "labels file changed" in again["reason"]
  assert _built(again, data_dir)[1][table[0][0]][1][classes.index("Mass")] == 1.0


def _png_with_alpha(src, dst):
  Image.fromarray(src).convert("RGBA").save(dst)


def test_class_folders_with_planted_faults(nih, tmp_path):
  folder, rows = nih
  pick = {"No Finding": [r for r in rows if r["Finding Labels"] == "No Finding"][:8],
          "Pneumonia": [r for r in rows if "Pneumonia" in r["Finding Labels"]][:8]}
  root = tmp_path / "xrays"
  for cls, rs in pick.items():
    os.makedirs(root / cls / "sub dir")
    for r in rs:
      shutil.copy(folder / r["Image Index"], root / cls / r["Image Index"])
  real = folder / pick["Pneumonia"][0]["Image Index"]
  grey = np.asarray(Image.open(real))
  pn = root / "Pneumonia"
  (pn / "truncated.png").write_bytes(real.read_bytes()[:20000])
  (pn / "empty.png").write_bytes(b"")
  (pn / "text.png").write_text("not an image\n")
  (pn / "notes.txt").write_text("a file without an image suffix")
  _png_with_alpha(grey, pn / "rgba.png")
  Image.fromarray(grey.astype(np.uint16) * 257).save(pn / "sixteen.png")
  shutil.copy(real, pn / "sub dir" / "épanchement gauche 1.png")
  write_dicom(str(root / "No Finding" / "film.dcm"), grey[::8, ::8])
  before = snapshot(root)
  data_dir = str(tmp_path / "tfds")
  out = li.prepare(str(root), data_dir, image_size=SIZE)
  assert out["dataset"] == "labelled_images/xrays" and out["task"] == "multiclass"
  assert out["class_names"] == ["No Finding", "Pneumonia"]
  _, got = _built(out, data_dir)
  s = out["summary"]
  assert s["skipped_total"] == {"corrupt_image": 3}
  assert s["corrupt_image_kinds"] == {"truncated": 1, "empty_file": 1, "not_an_image": 1}
  assert s["filtered_total"] == {"not_an_image_file": 1}
  kept = {"Pneumonia/rgba.png", "Pneumonia/sixteen.png",
          "Pneumonia/sub dir/épanchement gauche 1.png", "No Finding/film.dcm"}
  assert kept <= set(got) and len(got) == 16 + len(kept)
  for image_id, (_, labels, _) in got.items():
    np.testing.assert_array_equal(labels, [0, 1] if image_id.startswith("Pneumonia/") else [1, 0])
  assert snapshot(root) == before
  line = chest_builder.summary_line("x", s)
  assert "skipped 3 (corrupt_image 3; corrupt: empty_file 1, not_an_image 1, truncated 1)" in line


def test_covid_metadata_as_a_user_writes_it(realdata_dir, tmp_path):
  """image_path, label (one-hot `finding`), patient_id, view, modality: CT and lateral rows
  filtered and counted, absent images skipped, every present frontal X-ray kept."""
  root = realdata_dir / "covid-chestxray"
  with open(root / "metadata.csv", newline="", encoding="utf-8") as f:
    meta = list(csv.DictReader(f))
  present = set(os.listdir(root / "images"))
  src = tmp_path / "covid" / "labels.csv"
  _write_csv(src, ["image_path", "label", "patient_id", "view", "modality"],
             [[str(root / m["folder"] / m["filename"]), m["finding"], m["patientid"], m["view"],
               m["modality"]] for m in meta])
  out = li.prepare(str(src), str(tmp_path / "tfds"), image_size=SIZE)
  s = out["summary"]
  ct = sum(m["modality"] == "CT" for m in meta)
  lateral = sum(m["modality"] != "CT" and m["view"] == "L" for m in meta)
  frontal, seen = [], set()
  for m in meta:   # the metadata names 4 files twice: the first row is kept
    if m["modality"] != "CT" and m["view"] != "L" and (m["folder"], m["filename"]) not in seen:
      seen.add((m["folder"], m["filename"]))
      frontal.append(m)
  twice = len(meta) - ct - lateral - len(frontal)
  assert s["filtered_total"] == {"modality_CT": ct, "view_L": lateral, "duplicate_image_path": twice}
  on_disk = [m for m in frontal if m["folder"] == "images" and m["filename"] in present]
  assert s["skipped_total"] == {"missing_image": len(frontal) - len(on_disk)}
  _, got = _built(out, str(tmp_path / "tfds"))
  assert len(got) == len(on_disk) > 90
  names = out["class_names"]
  for m in on_disk:
    _, labels, patient = got[str(root / "images" / m["filename"])]
    assert names[int(np.argmax(labels))] == m["finding"] and labels.sum() == 1
  _no_patient_in_two_splits(got)


def test_csv_errors_and_values(tmp_path):
  src = tmp_path / "bad.csv"
  _write_csv(src, ["path", "Effusion"], [["a.png", "1"]])
  with pytest.raises(ValueError, match="no image_path column"):
    li.make_config(str(src))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    li.make_config(str(tmp_path / "nope.csv"))
  assert li.cell_label("1.0", "zeros") == 1.0 and li.cell_label("", "zeros") == 0.0
  assert li.cell_label("-1", "ones") == 1.0 and li.cell_label("-1", "ignore") is None
  with pytest.raises(ValueError, match="not 1, 0"):
    li.cell_label("2", "zeros")
  split = li.seeded_split([f"p{i % 7}" for i in range(30)], 0, 0.1, 0.2)
  assert sorted(set(split.values())) == ["test", "train", "validation"]


def test_one_decoder_for_odd_files_and_arrays(realdata_dir, tmp_path):
  real = realdata_dir / "images"
  mono1, _ = images.read_grey(str(real / "Fake_MONOHR1.dcm"))
  assert mono1.dtype == np.uint8 and mono1.ndim == 2
  grey = np.asarray(Image.open(real / "00000001_000.png").convert("L"))
  Image.fromarray(grey).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
  assert np.abs(images.load(str(tmp_path / "cmyk.jpg")).astype(int) - grey).mean() < 20
  Image.fromarray(grey).convert("LA").save(tmp_path / "la.png")
  np.testing.assert_array_equal(images.load(str(tmp_path / "la.png")), grey)
  wide = Image.fromarray(grey[:, :300])
  exif = wide.getexif()
  exif[0x0112] = 6                                  # stored sideways: rotate 90° clockwise
  wide.save(tmp_path / "rot.jpg", exif=exif, quality=95)
  pixels, size = images.read_grey(str(tmp_path / "rot.jpg"))
  assert pixels.shape == (300, grey.shape[0]) and size == (300, grey.shape[0])
  np.testing.assert_array_equal(images.load(np.repeat(grey[..., None], 4, -1)), grey)
  np.testing.assert_array_equal(images.load(grey.astype(np.uint16) * 257), grey)
  big = np.zeros((6100, 6100), np.uint16)
  big[:, 3050:] = 4000
  Image.fromarray(big).save(tmp_path / "big.png")
  pixels, size = images.read_grey(str(tmp_path / "big.png"), target_size=256)
  assert size == (6100, 6100) and 256 <= max(pixels.shape) < 512 and pixels.max() == 255
  with pytest.raises(FileNotFoundError, match="nope.png"):
    images.load(str(tmp_path / "nope.png"))
  (tmp_path / "t.png").write_text("text")
  with pytest.raises(ValueError, match="not_an_image"):
    images.load(str(tmp_path / "t.png"))
  assert json.dumps(images.KINDS)


def test_nih14_partial_release_gz_without_lists(nih, tmp_path, caplog):
  """cxr_nih14 from the released Data_Entry_2017_v2020.csv.gz, no split lists, 30 of the 200
  PNGs present: the documented 20 %-of-patients test rule, absent images counted in ONE
  summary line (not one line per file)."""
  import gzip
  import logging
  import tensorflow_datasets as tfds
  from asg_jax.data.builders import downstream
  folder, rows = nih
  manual = tmp_path / "nih"
  os.makedirs(manual / "images")
  src = folder.parent / "Data_Entry_2017_v2020.sample.csv"
  with gzip.open(manual / "Data_Entry_2017_v2020.csv.gz", "wb") as f:
    f.write(src.read_bytes())
  for r in rows[:30]:
    shutil.copy(folder / r["Image Index"], manual / "images" / r["Image Index"])
  b = cxr_nih14.CxrNih14(config=downstream.DownstreamConfig(name="part", image_size=SIZE),
                         data_dir=str(tmp_path / "tfds"))
  with caplog.at_level(logging.DEBUG, logger="asg_jax"):
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  with open(os.path.join(b.data_dir, chest_builder.SUMMARY_FILE)) as f:
    s = json.load(f)
  assert s["lists"]["rule"].startswith("no lists") and s["lists"]["train_val"] + s["lists"]["test"] == 200
  assert s["skipped_total"] == {"missing_image": 170}
  assert sum(v["examples"] for v in s["splits"].values()) == 30
  warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
  assert len([m for m in warnings if "missing_image" in m]) == 1
  assert any("built 30 examples" in m and "skipped 170 (missing_image 170)" in m for m in warnings)
