"""The synthetic demo generator: real MIMIC-CXR layout, parser agreement, drawn findings."""
import csv
import gzip
import hashlib
import json
import os
import re
import time

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from asg_jax.data.demo import drawing, report_text, synthetic
from asg_jax.data.reports import REGIONS, TAGS, parse_report

# The real MIMIC-CXR-JPG 2.0.0 headers (PhysioNet release; data.md lists the same columns).
REAL_METADATA_HEADER = [
    "dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]
REAL_SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
REAL_LABEL_HEADER = [
    "subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
    "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
    "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"]
N = 30


def read_gz_csv(path):
  with gzip.open(path, "rt", newline="") as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo"))
  t0 = time.time()
  counts = synthetic.generate(out, N, seed=3)
  counts["wall"] = time.time() - t0
  return out, counts


def test_layout_matches_mimic_cxr_jpg(demo):
  out, counts = demo
  header, meta = read_gz_csv(os.path.join(out, "mimic-cxr-2.0.0-metadata.csv.gz"))
  assert header == REAL_METADATA_HEADER
  split_header, splits = read_gz_csv(os.path.join(out, "mimic-cxr-2.0.0-split.csv.gz"))
  assert split_header == REAL_SPLIT_HEADER
  for name in ("chexpert", "negbio"):
    label_header, labels = read_gz_csv(os.path.join(out, f"mimic-cxr-2.0.0-{name}.csv.gz"))
    assert label_header == REAL_LABEL_HEADER
    assert len(labels) == N
    assert {v for row in labels for v in row[2:]} <= {"1.0", "0.0", "-1.0", ""}
  assert len(meta) == counts["images"] == len(splits)
  assert {s[3] for s in splits} <= {"train", "validate", "test"}
  views = [m[4] for m in meta]
  assert {"PA", "AP"} & set(views) and set(views) <= {"PA", "AP", "LATERAL", "LL"}
  assert sum(v in ("LATERAL", "LL") for v in views) == counts["lateral"] > 0
  for dicom, subject, study, _, view, rows, cols, *_ in meta:
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}", dicom)
    assert re.fullmatch(r"1[0-9]{7}", subject) and re.fullmatch(r"5[0-9]{7}", study)
    image = os.path.join(out, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}", f"{dicom}.jpg")
    report = os.path.join(out, "files", f"p{subject[:2]}", f"p{subject}", f"s{study}.txt")
    assert os.path.isfile(report)
    with Image.open(image) as im:
      assert im.format == "JPEG" and im.mode == "L"
      assert im.size == (int(cols), int(rows))
      assert 200 <= max(im.size) <= 320
    graph = os.path.join(out, "silver_dataset", "scene_graph", f"{dicom}_SceneGraph.json")
    assert os.path.isfile(graph) == (view in ("PA", "AP"))
  sizes = {tuple(m[5:7]) for m in meta}
  assert len(sizes) > N // 2   # varied sizes and aspect ratios


def test_scene_graphs_have_true_boxes_and_224_copy(demo):
  out, _ = demo
  for t in synthetic.read_truth(out)[:8]:
    for dicom, view in t["dicom_ids"].items():
      if view not in ("PA", "AP"):
        continue
      with open(os.path.join(out, "silver_dataset", "scene_graph", f"{dicom}_SceneGraph.json")) as f:
        g = json.load(f)
      subj, study = t["subject_id"], t["study_id"]
      with Image.open(os.path.join(out, "files", f"p{subj[:2]}", f"p{subj}", f"s{study}",
                                   f"{dicom}.jpg")) as im:
        w, h = im.size
      names = [o["bbox_name"] for o in g["objects"]]
      assert set(REGIONS) <= set(names)
      for o in g["objects"]:
        assert 0 <= o["original_x1"] < o["original_x2"] <= w
        assert 0 <= o["original_y1"] < o["original_y2"] <= h
        assert abs(o["x1"] - o["original_x1"] * 224 / w) <= 1
        assert abs(o["y2"] - o["original_y2"] * 224 / h) <= 1
      boxes = {o["bbox_name"]: o for o in g["objects"]}
      rl, ll = boxes["right lung"], boxes["left lung"]
      assert rl["original_x2"] < ll["original_x2"]   # the patient's right on the image left
      assert rl["original_y1"] < boxes["right lower lung zone"]["original_y1"]


def test_parser_reads_the_intended_tags_and_regions(demo):
  out, _ = demo
  truth = synthetic.read_truth(out)
  normal = 0
  for t in truth:
    subj, study = t["subject_id"], t["study_id"]
    with open(os.path.join(out, "files", f"p{subj[:2]}", f"p{subj}", f"s{study}.txt")) as f:
      report = f.read()
    assert "FINDINGS:" in report or "IMPRESSION:" in report
    parsed = parse_report(report)
    expected = {}
    for s in t["sentences"]:
      for tag, existence in s["tags"].items():
        value = 0 if existence == "absent" else 1
        expected[tag] = max(expected.get(tag, value), value)
    for f in t["findings"]:
      assert expected[f["tag"]] == 1
    got = {tag: int(v) for tag, v in zip(TAGS, parsed.tags) if v != -1}
    assert got == expected, (report, got, expected)
    assert len(parsed.sentences) == len(t["sentences"]), report
    for i, s in enumerate(t["sentences"]):
      linked = {r for r, idx in parsed.regions.items() if i in idx}
      assert set(s["regions"]) <= linked, (s, linked)
    normal += not t["findings"]
  assert 0.05 * N <= normal <= 0.45 * N


def test_uncertain_and_negated_findings_occur():
  kinds = {"present": 0, "uncertain": 0, "absent": 0}
  for i in range(200):
    rng = np.random.default_rng([7, i])
    findings = report_text._sample_findings(rng)   # pylint: disable=protected-access
    _, sentences = report_text._report(rng, findings, "PA")   # pylint: disable=protected-access
    for s in sentences:
      for existence in s["tags"].values():
        kinds[existence] += 1
  assert kinds["uncertain"] > 10 and kinds["absent"] > 100 and kinds["present"] > 100


def _diff(f, seed=11, h=300, w=260):
  """(image with finding - image without, with the same anatomy), both draws' boxes."""
  a, boxes_a = drawing._draw_frontal(np.random.default_rng(seed), h, w, [f])   # pylint: disable=protected-access
  b, boxes_b = drawing._draw_frontal(np.random.default_rng(seed), h, w, [])   # pylint: disable=protected-access
  d = ndimage.gaussian_filter(a.astype(np.float32) - b.astype(np.float32), 1.0)
  return d, boxes_a, boxes_b


def _inside(mask, box, pad=2):
  ys, xs = np.nonzero(mask)
  x1, y1, x2, y2 = box
  ok = (xs >= x1 - pad) & (xs <= x2 + pad) & (ys >= y1 - pad) & (ys <= y2 + pad)
  return ok.mean(), len(xs)


@pytest.mark.parametrize("finding,region,sign", [
    ({"tag": "nodule", "existence": "present", "side": "right", "zone": "upper", "mm": 10},
     "right upper lung zone", 1),
    ({"tag": "opacity", "existence": "present", "side": "left", "zone": "mid"}, "left mid lung zone", 1),
    ({"tag": "consolidation", "existence": "present", "side": "right", "zone": "lower"},
     "right lower lung zone", 1),
    ({"tag": "pleural effusion", "existence": "present", "side": "left", "variant": "base",
      "size": "moderate"}, "left lower lung zone", 1),
    ({"tag": "pleural effusion", "existence": "present", "side": "right", "variant": "cp",
      "size": "small"}, "right costophrenic angle", 1),
    ({"tag": "atelectasis", "existence": "present", "side": "left", "zone": "lower"},
     "left lower lung zone", 1),
    ({"tag": "pneumothorax", "existence": "present", "side": "right", "size": "moderate"},
     "right apical zone", -1),
    ({"tag": "tube", "existence": "present", "side": None}, "trachea", 1),
])
def test_findings_are_drawn_inside_their_region(finding, region, sign):
  d, boxes, _ = _diff(finding)
  mask = sign * d > 12
  frac, n = _inside(mask, boxes[region])
  assert n > 15, f"{finding['tag']}: almost nothing drawn ({n} px)"
  assert frac > 0.9, f"{finding['tag']}: only {frac:.2f} of the changed pixels inside {region}"


def test_line_tip_and_cardiomegaly_and_edema():
  for variant, region in (("svc", "svc"), ("caj", "cavoatrial junction")):
    d, boxes, _ = _diff({"tag": "line", "existence": "present", "side": None, "variant": variant,
                         "route": "ij"})
    ys, xs = np.nonzero(d > 12)
    tip = np.argmax(ys)   # the lowest point of the catheter
    x1, y1, x2, y2 = boxes[region]
    assert x1 - 2 <= xs[tip] <= x2 + 2 and y1 - 2 <= ys[tip] <= y2 + 2
  big, _ = drawing._draw_frontal(np.random.default_rng(5), 300, 300, [   # pylint: disable=protected-access
      {"tag": "cardiomegaly", "existence": "present", "side": None, "degree": "moderate"}])
  _, boxes_big = drawing._draw_frontal(np.random.default_rng(5), 300, 300, [   # pylint: disable=protected-access
      {"tag": "cardiomegaly", "existence": "present", "side": None, "degree": "moderate"}])
  _, boxes_normal = drawing._draw_frontal(np.random.default_rng(5), 300, 300, [])   # pylint: disable=protected-access
  width = lambda b: b[2] - b[0]   # noqa: E731
  assert width(boxes_big["cardiac silhouette"]) > 1.25 * width(boxes_normal["cardiac silhouette"])
  d, boxes, _ = _diff({"tag": "edema", "existence": "present", "side": None})
  for side in ("right", "left"):
    x1, y1, x2, y2 = (int(v) for v in boxes[f"{side} lung"])
    assert d[y1:y2, x1:x2].mean() > 5
  assert d[:, :20].mean() < 1 and d[:20].mean() < 1


def test_deterministic_and_seed_dependent(tmp_path):
  def digest(d):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(d)):
      for name in sorted(files):
        h.update(name.encode())
        with open(os.path.join(root, name), "rb") as f:
          h.update(f.read())
    return h.hexdigest()
  synthetic.generate(str(tmp_path / "a"), 4, seed=1)
  synthetic.main(["--out", str(tmp_path / "b"), "--num_studies", "4", "--seed", "1"])
  synthetic.generate(str(tmp_path / "c"), 4, seed=2)
  assert digest(tmp_path / "a") == digest(tmp_path / "b")
  assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_generation_speed(demo):
  _, counts = demo
  # ~600 studies must take well under a minute on 2 cores; allow for a busy machine.
  assert counts["wall"] / N < 0.25, f"{counts['wall'] / N:.3f} s per study"


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="num_studies"):
    synthetic.generate(str(tmp_path), 0)
