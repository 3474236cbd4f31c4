"""The tfds builders `mimic_cxr` (on the synthetic demo) and `image_text_csv` (on real images)."""
import csv
import gzip
import hashlib
import json
import os
import shutil
import time

import numpy as np
import pydicom
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import asg_jax.data.builders  # noqa: F401  (registers the builders)
from asg_jax.data.demo import synthetic
from asg_jax.data.builders import chest_builder
from asg_jax.data.reports import CHEXPERT, REGIONS, parse_report

N = 14
NOTE = ("Day 4: bilateral consolidations intubated. History: 73 year old male with fever and "
        "coughing. PCR positive. Follow-up: extubated after 9 days of mechanical ventilation.")


def _manual(out):
  return tfds.download.DownloadConfig(manual_dir=str(out))


def _examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False)))


def _csv_gz(path):
  with gzip.open(path, "rt", newline="") as f:
    return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  manual = tmp_path_factory.mktemp("manual")
  synthetic.generate(str(manual), N, seed=5)
  data_dir = tmp_path_factory.mktemp("data")
  builder = tfds.builder("mimic_cxr/demo", data_dir=str(data_dir))
  builder.download_and_prepare(download_config=_manual(manual))
  examples = {s: _examples(builder, s) for s in ("train", "validation")}
  return str(manual), builder, examples


def test_counts_frontal_filter_and_split_mapping(demo):
  manual, builder, examples = demo
  meta = _csv_gz(os.path.join(manual, "mimic-cxr-2.0.0-metadata.csv.gz"))
  split_of = {r["dicom_id"]: r["split"] for r in _csv_gz(os.path.join(manual, "mimic-cxr-2.0.0-split.csv.gz"))}
  frontal = [r["dicom_id"] for r in meta if r["ViewPosition"] in ("PA", "AP")]
  lateral = [r["dicom_id"] for r in meta if r["ViewPosition"] not in ("PA", "AP")]
  assert lateral, "the demo should contain lateral views"
  want = {"train": {d for d in frontal if split_of[d] == "train"},
          "validation": {d for d in frontal if split_of[d] in ("validate", "test")}}
  for split in ("train", "validation"):
    assert {e["dicom_id"].decode() for e in examples[split]} == want[split]
  summary = chest_builder.read_summary(builder.data_dir_root, "mimic_cxr", "demo", "1.0.0")
  assert summary["num_skipped"] == 0
  filtered = sum(sum(s["filtered"].values()) for s in summary["splits"].values())
  assert filtered == len(lateral)
  assert summary["splits"]["train"]["examples"] == len(want["train"])
  assert builder.info.splits["train"].num_examples == len(want["train"])


def test_features_match_sources(demo):
  manual, _, examples = demo
  labels = {r["study_id"]: r for r in _csv_gz(os.path.join(manual, "mimic-cxr-2.0.0-chexpert.csv.gz"))}
  for ex in examples["train"] + examples["validation"]:
    subj, study, dicom = (ex[k].decode() for k in ("subject_id", "study_id", "dicom_id"))
    base = os.path.join(manual, "files", f"p{subj[:2]}", f"p{subj}")
    with Image.open(os.path.join(base, f"s{study}", f"{dicom}.jpg")) as im:
      w, h = im.size
    assert tuple(ex["original_size"]) == (h, w)
    img = ex["image"]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 1
    assert max(img.shape[:2]) == 128
    assert abs(img.shape[0] / img.shape[1] - h / w) < 0.02
    with open(os.path.join(base, f"s{study}.txt")) as f:
      parsed = parse_report(f.read())
    assert [s.decode() for s in ex["sentences"]] == parsed.sentences
    assert ex["caption"].decode() == " ".join(parsed.sentences)
    np.testing.assert_array_equal(ex["tags"], parsed.tags)
    assert ex["tags"].dtype == np.int8 and ex["tags"].shape == (40,)
    want = np.array([float(labels[study][c]) if labels[study][c] else np.nan for c in CHEXPERT],
                    np.float32)
    np.testing.assert_array_equal(ex["chexpert"], want)
    assert ex["region_source"].decode() == "imagenome"
    assert ex["view_position"].decode() in ("PA", "AP")


def test_boxes_are_the_true_boxes_scaled(demo):
  manual, _, examples = demo
  n = 0
  for ex in examples["train"] + examples["validation"]:
    dicom = ex["dicom_id"].decode()
    with open(os.path.join(manual, "silver_dataset", "scene_graph", f"{dicom}_SceneGraph.json")) as f:
      objects = {o["bbox_name"]: o for o in json.load(f)["objects"]}
    h, w = ex["original_size"]
    sh, sw = ex["image"].shape[:2]
    assert ex["region_boxes"].shape == (len(ex["region_ids"]), 4)
    for box, rid in zip(ex["region_boxes"], ex["region_ids"]):
      o = objects[REGIONS[rid]]
      ref = np.array([o["original_x1"] * sw / w, o["original_y1"] * sh / h,
                      o["original_x2"] * sw / w, o["original_y2"] * sh / h])
      ref = np.clip(ref, 0, [sw, sh, sw, sh])
      np.testing.assert_allclose(box, ref, atol=1e-3)
      n += 1
  assert n > N


def test_region_sentences_name_the_region(demo):
  manual, _, examples = demo
  truth = {t["study_id"]: t for t in synthetic.read_truth(manual)}
  pairs = 0
  for ex in examples["train"] + examples["validation"]:
    t = truth[ex["study_id"].decode()]
    rsi = ex["region_sentence_index"]
    assert rsi.dtype == np.int32 and rsi.shape[0] == len(ex["region_ids"]) and rsi.shape[1] >= 1
    linked = set()
    for rid, row in zip(ex["region_ids"], rsi):
      idx = row[row >= 0]
      assert len(idx) >= 1 and (np.diff(idx) > 0).all() and idx.max() < len(ex["sentences"])
      assert (row[len(idx):] == -1).all()
      for i in idx:
        linked.add((REGIONS[rid], int(i)))
    # every region the generator's sentence names is linked to that sentence
    for i, s in enumerate(t["sentences"]):
      for r in s["regions"]:
        assert (r, i) in linked, (r, s["text"])
        pairs += 1
    # and every link is one the generator intended
    intended = {(r, i) for i, s in enumerate(t["sentences"]) for r in s["regions"]}
    assert linked == intended
  assert pairs > N


def _copy(manual, dst):
  shutil.copytree(manual, dst)
  return str(dst)


def _frontal_items(manual):
  meta = _csv_gz(os.path.join(manual, "mimic-cxr-2.0.0-metadata.csv.gz"))
  return [r for r in meta if r["ViewPosition"] in ("PA", "AP")]


def _paths(root, r):
  s = r["subject_id"]
  base = os.path.join(root, "files", f"p{s[:2]}", f"p{s}")
  return (os.path.join(base, f"s{r['study_id']}", f"{r['dicom_id']}.jpg"),
          os.path.join(base, f"s{r['study_id']}.txt"))


def test_bad_inputs_are_skipped_and_counted(demo, tmp_path):
  manual, _, examples = demo
  root = _copy(manual, tmp_path / "bad")
  truth = {t["study_id"]: t for t in synthetic.read_truth(root)}
  items = _frontal_items(root)
  with_regions = [r for r in items if any(s["regions"] for s in truth[r["study_id"]]["sentences"])]
  corrupt, missing, empty, outside, short = with_regions[:5]
  with open(_paths(root, corrupt)[0], "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
  os.remove(_paths(root, missing)[0])
  with open(_paths(root, empty)[1], "w") as f:
    f.write("FINAL REPORT\n FINDINGS:\n\n IMPRESSION:\n\n ___.\n")
  graph_path = os.path.join(root, "silver_dataset", "scene_graph", f"{outside['dicom_id']}_SceneGraph.json")
  with open(graph_path) as f:
    graph = json.load(f)
  for o in graph["objects"]:   # every box far right of the image
    o["original_x1"], o["original_x2"] = 5000, 5100
  with open(graph_path, "w") as f:
    json.dump(graph, f)
  # plain .csv instead of .csv.gz (both accepted); one metadata row loses its study_id
  for name in ("metadata", "split", "chexpert"):
    gz = os.path.join(root, f"mimic-cxr-2.0.0-{name}.csv.gz")
    with gzip.open(gz, "rt") as f:
      text = f.read()
    if name == "metadata":
      text = text.replace(f"{short['dicom_id']},{short['subject_id']},{short['study_id']},",
                          f"{short['dicom_id']},{short['subject_id']},,")
    with open(gz[:-3], "w") as f:
      f.write(text)
    os.remove(gz)
  os.remove(os.path.join(root, "silver_dataset", "scene_graph", f"{with_regions[5]['dicom_id']}_SceneGraph.json"))
  data_dir = tmp_path / "data"
  builder = tfds.builder("mimic_cxr/demo", data_dir=str(data_dir))
  builder.download_and_prepare(download_config=_manual(root))
  summary = chest_builder.read_summary(str(data_dir), "mimic_cxr", "demo", "1.0.0")
  assert summary["skipped_total"] == {"corrupt_image": 1, "missing_image": 1, "empty_report": 1,
                                      "box_outside_image": 1, "missing_column": 1}
  files = {s["reason"]: s["file"] for s in summary["skipped_files"]}
  assert files["corrupt_image"] == _paths(root, corrupt)[0]
  assert files["box_outside_image"] == _paths(root, outside)[1]
  got = {e["dicom_id"].decode(): e for s in ("train", "validation") for e in _examples(builder, s)}
  bad = {r["dicom_id"] for r in (corrupt, missing, empty, outside, short)}
  assert set(got) == {r["dicom_id"] for r in items} - bad
  assert sum(builder.info.splits[s].num_examples for s in ("train", "validation")) == len(got)
  # the image without a scene graph falls back to the atlas
  ex = got[with_regions[5]["dicom_id"]]
  assert ex["region_source"].decode() == "atlas"
  sh, sw = ex["image"].shape[:2]
  atlas = chest_builder.load_atlas()
  for box, rid in zip(ex["region_boxes"], ex["region_ids"]):
    a = atlas[REGIONS[rid]]
    np.testing.assert_allclose(box, [a[0] * sw, a[1] * sh, a[2] * sw, a[3] * sh], atol=1e-3)
  # the untouched examples are stored exactly as in the clean build
  clean = {e["dicom_id"].decode(): e for s in ("train", "validation") for e in examples[s]}
  d = next(iter(set(got) - {with_regions[5]["dicom_id"]}))
  np.testing.assert_array_equal(got[d]["image"], clean[d]["image"])
  np.testing.assert_array_equal(got[d]["region_boxes"], clean[d]["region_boxes"])


def test_missing_split_csv_is_a_clear_error(demo, tmp_path):
  manual, _, _ = demo
  root = _copy(manual, tmp_path / "nosplit")
  os.remove(os.path.join(root, "mimic-cxr-2.0.0-split.csv.gz"))
  builder = tfds.builder("mimic_cxr/demo", data_dir=str(tmp_path / "data"))
  with pytest.raises(FileNotFoundError, match=r"mimic-cxr-2\.0\.0-split\.csv.*split in train/validate/test"):
    builder.download_and_prepare(download_config=_manual(root))
  assert not os.path.exists(builder.data_dir)


def test_no_anatomy_and_image_size(demo, tmp_path):
  manual, _, _ = demo
  builder = tfds.builder("mimic_cxr/no_anatomy", data_dir=str(tmp_path), image_size=64)
  assert builder.builder_config.name == "no_anatomy_64"
  builder.download_and_prepare(download_config=_manual(manual))
  fresh = tfds.builder("mimic_cxr/demo_96", data_dir=str(tmp_path / "empty"))
  assert fresh.builder_config.image_size == 96 and fresh.builder_config.anatomy
  by_name = tfds.builder("mimic_cxr/no_anatomy_64", data_dir=str(tmp_path))   # reads the build
  for ex in _examples(by_name, "validation"):
    assert max(ex["image"].shape[:2]) == 64
    assert ex["region_boxes"].shape == (0, 4) and ex["region_ids"].shape == (0,)
    assert ex["region_sentence_index"].shape == (0, 1)
    assert ex["region_source"].decode() == "none"


def test_prepare_demo_is_idempotent(tmp_path):
  data_dir, manual = str(tmp_path / "data"), str(tmp_path / "manual")
  first = synthetic.prepare_demo(data_dir, manual, num_studies=5, seed=2)
  assert first["generated"] and first["built"]
  t0 = time.time()
  second = synthetic.prepare_demo(data_dir, manual, num_studies=5, seed=2)
  assert not second["generated"] and not second["built"]
  assert time.time() - t0 < 5
  third = synthetic.prepare_demo(data_dir, manual, num_studies=6, seed=2)
  assert third["generated"] and third["built"]
  b = tfds.builder("mimic_cxr/demo", data_dir=data_dir)
  assert sum(b.info.splits[s].num_examples for s in ("train", "validation")) == 6


# -------------------------------------------------------------------------- image_text_csv

def _block_mean(a, k):
  h, w = a.shape
  return a[:h - h % k, :w - w % k].reshape(h // k, k, w // k, k).astype(np.float64).mean((1, 3))


@pytest.fixture(scope="module")
def pairs(realdata_dir, tmp_path_factory):
  images = realdata_dir / "images"
  with open(realdata_dir / "iu-xray-reports" / "annotation.json") as f:
    reports = [e["report"] for e in json.load(f)["train"][:12]]
  root = tmp_path_factory.mktemp("pairs")
  shutil.copy(images / "00000001_000.png", root / "a.png")   # a relative path
  shutil.copy(images / "00000001_000.png", root / "note.png")
  fake_m2 = "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
  rows = [
      {"image_path": "a.png", "report": reports[0], "split": "train",
       "boxes": json.dumps({r: [100, 120, 300, 400] for r in REGIONS})},
      {"image_path": str(images / "00027426_000.png"), "report": reports[1], "split": "validation"},
      {"image_path": str(images / "16747_3_1.jpg"), "report": reports[2], "split": "train"},
      {"image_path": str(images / "covid-19-pneumonia-58-prior.jpg"), "report": reports[3], "split": ""},
      {"image_path": str(images / fake_m2), "report": reports[4], "split": "train"},
      {"image_path": str(images / "Fake_MONOHR1.dcm"), "report": reports[5], "split": "train"},
      {"image_path": str(images / "missing.png"), "report": reports[6], "split": "train"},
      {"image_path": str(images / "00027426_000.png"), "report": "  ", "split": "train"},
      {"image_path": str(images / "00027426_000.png"), "report": reports[7], "split": "train",
       "boxes": json.dumps({r: [600, 600, 700, 700] for r in REGIONS})},
      {"image_path": str(images / "00027426_000.png"), "report": "Normal chest.", "split": "train"},
      {"image_path": str(images / "16747_3_1.jpg"), "report": reports[8], "split": "train",
       "view_position": "LATERAL"},
      {"image_path": str(images / "16747_3_1.jpg"), "report": reports[9], "split": "validation",
       "view_position": "AP SUPINE"},
      {"image_path": "note.png", "report": NOTE, "split": "train"},   # History:, no FINDINGS
  ]
  fields = ["image_path", "report", "split", "boxes", "view_position"]
  with open(root / "pairs.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows([{k: r.get(k, "") for k in fields} for r in rows])
    f.write(f"{images / 'Fake_MONOHR1.dcm'}\n")   # a row with missing columns
  builder = tfds.builder("image_text_csv", data_dir=str(tmp_path_factory.mktemp("csvdata")))
  builder.download_and_prepare(download_config=_manual(root))
  got = {s: _examples(builder, s) for s in ("train", "validation")}
  return images, rows, builder, got, fake_m2


def test_image_text_csv_real_images(pairs):
  images, rows, builder, got, fake_m2 = pairs
  summary = chest_builder.read_summary(builder.data_dir_root, "image_text_csv", "default",
                                str(builder.version))
  # the "  " report cell is empty (missing_column, like the short row); the two-word "Normal
  # chest." is too short; the LATERAL row is filtered, the "AP SUPINE" one kept
  assert summary["skipped_total"] == {"missing_image": 1, "too_short_report": 1,
                                      "box_outside_image": 1, "missing_column": 2}
  empty = [s for s in summary["skipped_files"] if s["file"].endswith("line 9")]
  assert [s["reason"] for s in empty] == ["missing_column"] and "report" in empty[0]["detail"]
  assert summary["splits"]["train"]["filtered"] == {"view_LATERAL": 1}
  assert [e["view_position"].decode() for e in got["validation"]].count("AP SUPINE") == 1
  by_id = {e["dicom_id"].decode(): e for s in got.values() for e in s}
  assert {e["dicom_id"].decode() for e in got["validation"]} >= {"00027426_000"}
  want_split = ("validation" if int(hashlib.sha1(rows[3]["image_path"].encode()).hexdigest(), 16) % 100 < 10
                else "train")
  assert "covid-19-pneumonia-58-prior" in {e["dicom_id"].decode() for e in got[want_split]}
  # PNG 512 -> 256: a 2x2 block mean is the reference
  png = by_id["00027426_000"]
  ref = _block_mean(np.asarray(Image.open(images / "00027426_000.png").convert("L")), 2)
  assert png["image"].shape == (256, 256, 1)
  assert np.abs(png["image"][..., 0] - ref).mean() < 2.0
  jpg = by_id["16747_3_1"]
  assert tuple(jpg["original_size"]) == (885, 1036) and jpg["image"].shape == (219, 256, 1)
  big = by_id["covid-19-pneumonia-58-prior"]
  assert tuple(big["original_size"]) == (2373, 2373) and big["image"].shape == (256, 256, 1)
  # DICOMs: MONOCHROME2 kept, MONOCHROME1 inverted relative to its raw pixels
  m2, m1 = by_id[fake_m2[:-4]], by_id["Fake_MONOHR1"]
  raw1 = pydicom.dcmread(images / "Fake_MONOHR1.dcm").pixel_array
  raw2 = pydicom.dcmread(images / fake_m2).pixel_array
  ref1, ref2 = _block_mean(raw1, 4), _block_mean(raw2, 4)
  s1, s2 = m1["image"][..., 0].astype(np.float64), m2["image"][..., 0].astype(np.float64)
  assert np.corrcoef(s1.ravel(), ref1.ravel())[0, 1] < -0.95
  assert np.corrcoef(s2.ravel(), ref2.ravel())[0, 1] > 0.95
  lo, hi = raw1.min(), raw1.max()
  assert np.abs(s1 - (255 - (ref1 - lo) * 255 / (hi - lo))).mean() < 2.0
  # the annotation boxes, scaled 512 -> 256; regions = the parser's regions of the report
  ann = by_id["a"]
  assert ann["region_source"].decode() == "annotation"
  parsed = parse_report(rows[0]["report"])
  assert [REGIONS[i] for i in ann["region_ids"]] == list(parsed.regions)
  for box in ann["region_boxes"]:
    np.testing.assert_allclose(box, [50, 60, 150, 200])
  # a clinical note whose only title is History: keeps its whole text (not empty_report)
  assert [s.decode() for s in by_id["note"]["sentences"]] == parse_report(
      NOTE, sections=False).sentences
  for e in by_id.values():
    if e["dicom_id"].decode() != "a":
      assert e["region_source"].decode() == "atlas"
    assert e["caption"].decode() == " ".join(s.decode() for s in e["sentences"])


def test_image_text_csv_splits_by_patient_and_all_views_keeps_laterals(realdata_dir, tmp_path):
  from asg_jax.data.builders import image_text_csv
  image = realdata_dir / "images" / "00000001_000.png"
  report = "The heart is enlarged. No pleural effusion or pneumothorax."
  # 12 patients x 3 images each, no split column: all images of a patient share a split
  patients = [f"patient{i:02d}" for i in range(12)]
  with open(tmp_path / "pairs.csv", "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image_path", "report", "patient_id", "view", "dicom_id"])
    for p in patients:
      for k, view in enumerate(("PA", "AP", "LL")):
        writer.writerow([str(image), report, p, view, f"{p}_{k}"])
  want = {p: image_text_csv.hash_split(p) for p in patients}
  assert set(want.values()) == {"train", "validation"}      # both splits occur for these ids
  for config, views in (("default", {"PA", "AP"}), ("all_views", {"PA", "AP", "LL"})):
    builder = tfds.builder(f"image_text_csv/{config}_64", data_dir=str(tmp_path / "d"))
    builder.download_and_prepare(download_config=_manual(tmp_path))
    for split in ("train", "validation"):
      got = _examples(builder, split)
      assert sorted(e["dicom_id"].decode() for e in got) == sorted(
          f"{p}_{k}" for p in patients if want[p] == split
          for k, v in enumerate(("PA", "AP", "LL")) if v in views)
      assert {e["subject_id"].decode() for e in got} == {p for p in patients if want[p] == split}


def test_read_image_16bit_png(tmp_path):
  ramp = (np.arange(64 * 32, dtype=np.uint16).reshape(64, 32) * 20 + 1000)
  Image.fromarray(ramp).save(tmp_path / "ramp16.png")
  pixels, size = chest_builder.read_image(str(tmp_path / "ramp16.png"))
  assert size == (64, 32) and pixels.dtype == np.uint8
  assert pixels.min() == 0 and pixels.max() == 255
  ref = np.round((ramp - ramp.min()) * 255.0 / (ramp.max() - ramp.min()))
  np.testing.assert_allclose(pixels, ref, atol=1)


def test_image_text_csv_missing_pairs_csv(tmp_path):
  builder = tfds.builder("image_text_csv", data_dir=str(tmp_path / "d"))
  with pytest.raises(FileNotFoundError, match=r"pairs\.csv.*image_path, report"):
    builder.download_and_prepare(download_config=_manual(tmp_path))
