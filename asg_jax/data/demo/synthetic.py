"""The embedded demo: a miniature MIMIC-CXR-JPG + reports + Chest ImaGenome, generated.

`generate(out_dir, num_studies, seed)` writes, in the real on-disk layout (data.md):

  files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg    chest-like grayscale radiographs, 200–320 px,
                                            varied aspect; frontal (PA/AP) and, for some
                                            studies, a second LATERAL / LL view
  files/pXX/pSUBJECT/sSTUDY.txt             MIMIC-style reports (FINAL REPORT, EXAMINATION,
                                            INDICATION, ..., FINDINGS:, IMPRESSION:)
  mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz   the CSVs with the real headers
  silver_dataset/scene_graph/DICOM_ID_SceneGraph.json       per frontal image: the TRUE boxes
                                            of the 29 regions (+2 extra objects), original
                                            pixels (`original_x1..`) and a 224-scaled copy
  demo_truth.jsonl                          (not part of MIMIC) the generator's findings

Each study has 0–3 findings (~20% normal) among ten visually distinct ASG tags, drawn as
patterns INSIDE the anatomical region its report sentence names: pleural effusion
(bright fluid with a meniscus in the lower zone / costophrenic angle), opacity (soft
blob in a zone), consolidation (dense irregular blob with air bronchograms), pneumothorax
(dark rim without lung markings and a pleural line at an apex), cardiomegaly (enlarged
heart), nodule (small round bright spot), tube (endotracheal tube down the trachea), line
(jugular / PICC catheter ending in the SVC or at the cavoatrial junction), edema
(bilateral perihilar haze with septal lines) and atelectasis (plate-like band at a base).
Uncertain findings ("possible ...") are drawn faintly; negated ones ("no pleural
effusion") are not drawn. Deterministic for a seed.

`prepare_demo(data_dir, manual_dir, num_studies, seed)` generates (if needed) and builds
`mimic_cxr/demo`. The generator writes only into a folder it created (or found empty) and
marked as its own (`owned_dir`); it refuses any other folder and never deletes one. CLI:
`python -m asg_jax.data.demo.synthetic --out DIR --num_studies N --seed S`.

This module writes the layout; the report text is `report_text`, the drawing `drawing`.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import os
import time

import numpy as np
from PIL import Image

from asg_jax.data.demo import owned_dir
from asg_jax.data.demo.drawing import _draw_frontal, _draw_lateral
from asg_jax.data.demo.report_text import CHEXPERT_OF, FINDINGS, _report, _sample_findings
from asg_jax.data.reports import CHEXPERT, REGIONS

logger = logging.getLogger(__name__)

METADATA_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                   "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
                   "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                   "PatientOrientationCodeSequence_CodeMeaning"]
SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
LABEL_HEADER = ["subject_id", "study_id"] + list(CHEXPERT)
EXTRA_OBJECTS = ("right cardiophrenic angle", "left cardiophrenic angle")
# the owner named in the marker of every folder the generator wrote (owned_dir): a stored
# value, never changed, so that the folders generated earlier stay its own
OWNER = "asg_jax.data.synthetic"
OWN_DATA_HINT = ("To train on your own image-report pairs use configs/own_data.py (builder "
                 "image_text_csv, data.demo_num_studies=0); to generate the demo leave "
                 "config.data.manual_dir empty (it then goes into <workdir>/data/demo_manual) "
                 "or name a new folder.")
GENERATOR_VERSION = 1


# ------------------------------------------------------------------------------ writing

def _hex_id(rng) -> str:
  return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2 ** 32, 5))


def _size(rng) -> tuple[int, int]:
  longest = int(rng.integers(200, 321))
  aspect = rng.uniform(0.8, 1.25)   # h / w
  if aspect >= 1:
    return longest, max(64, int(round(longest / aspect)))
  return max(64, int(round(longest * aspect))), longest


def _write_csv_gz(path: str, header: list[str], rows: list[list]) -> None:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  with gzip.GzipFile(path, "wb", mtime=0) as f:
    f.write(buf.getvalue().encode("utf-8"))


def _scene_graph(dicom_id, subject, study, view, boxes, h, w, sentences) -> dict:
  objects = []
  sx, sy = 224.0 / w, 224.0 / h
  for name in list(REGIONS) + list(EXTRA_OBJECTS):
    x1, y1, x2, y2 = boxes[name]
    ox1, oy1, ox2, oy2 = (int(round(v)) for v in (x1, y1, x2, y2))
    objects.append({
        "object_id": f"{dicom_id}_{name}", "bbox_name": name, "name": name.capitalize(),
        "synsets": [], "x1": int(round(x1 * sx)), "y1": int(round(y1 * sy)),
        "x2": int(round(x2 * sx)), "y2": int(round(y2 * sy)),
        "width": int(round((x2 - x1) * sx)), "height": int(round((y2 - y1) * sy)),
        "original_x1": ox1, "original_y1": oy1, "original_x2": ox2, "original_y2": oy2,
        "original_width": ox2 - ox1, "original_height": oy2 - oy1})
  attributes = []
  for name in REGIONS:
    phrases = [s["text"] for s in sentences if name in s["regions"]]
    if phrases:
      attributes.append({"bbox_name": name, "name": name.capitalize(), name: True,
                         "phrases": phrases, "object_id": f"{dicom_id}_{name}"})
  return {"image_id": dicom_id, "viewpoint": view, "patient_id": int(subject),
          "study_id": int(study), "objects": objects, "attributes": attributes,
          "relationships": []}


def generate(out_dir: str, num_studies: int, seed: int = 0) -> dict:
  """Write the miniature MIMIC-CXR-JPG + reports + CSVs + Chest ImaGenome dataset.

  Args:
    out_dir: destination: a new or empty folder, or one this generator wrote before (it is
      marked, `owned_dir.MARKER_FILE`); the files of an earlier generation there are removed
      first — only those. Any other non-empty folder raises `owned_dir.NotOwnedError`.
    num_studies: number of studies (each with one frontal image; ~30% also a lateral).
    seed: the generator seed (same seed, same bytes).
  Returns:
    a summary dict: counts of studies / images / frontal / lateral per split and of each
    drawn finding, and the paths written.
  """
  if num_studies < 1:
    raise ValueError(f"num_studies must be >= 1, got {num_studies}")
  t0 = time.time()
  folder = owned_dir.OwnedDir.claim(out_dir, OWNER, hint=OWN_DATA_HINT)
  folder.start(_params(num_studies, seed))
  rec = folder.record
  rng = np.random.default_rng(seed)
  graph_dir = os.path.join(out_dir, "silver_dataset", "scene_graph")
  os.makedirs(graph_dir, exist_ok=True)
  meta, split_rows, labels, truth = [], [], [], []
  counts = {"studies": 0, "images": 0, "frontal": 0, "lateral": 0, "normal": 0,
            "splits": {"train": 0, "validate": 0, "test": 0}, "findings": {t: 0 for t in FINDINGS}}
  subject_base = int(rng.integers(10_000_000, 10_900_000))
  study_ids: list[int] = []
  while len(study_ids) < num_studies:
    sid = int(rng.integers(50_000_000, 60_000_000))
    if sid not in study_ids:
      study_ids.append(sid)
  subject, n_left, split = subject_base, 0, "train"
  from asg_jax import console  # pylint: disable=import-outside-toplevel
  for i in console.progress(range(num_studies), total=num_studies, desc="Generating demo studies",
                            unit="study"):
    if n_left == 0:
      subject += int(rng.integers(1, 50))
      n_left = int(rng.integers(1, 4))
      split = str(rng.choice(["train", "validate", "test"], p=[0.8, 0.1, 0.1]))
    n_left -= 1
    srng = np.random.default_rng([seed, i])
    subj, study = str(subject), str(int(study_ids[i]))
    view = "PA" if srng.random() < 0.6 else "AP"
    findings = _sample_findings(srng)
    report, sentences = _report(srng, findings, view)
    study_dir = os.path.join(out_dir, "files", f"p{subj[:2]}", f"p{subj}")
    os.makedirs(os.path.join(study_dir, f"s{study}"), exist_ok=True)
    with open(rec(os.path.join(study_dir, f"s{study}.txt")), "w") as f:
      f.write(report)
    date = f"21{int(srng.integers(10, 99)):02d}{int(srng.integers(1, 13)):02d}{int(srng.integers(1, 29)):02d}"
    time_ = f"{int(srng.integers(0, 24)):02d}{int(srng.integers(0, 60)):02d}{int(srng.integers(0, 60)):02d}.000"
    images = [(view, _hex_id(srng))]
    if srng.random() < 0.3:
      images.append((str(srng.choice(["LATERAL", "LL"])), _hex_id(srng)))
    for vp, dicom in images:
      h, w = _size(srng)
      if vp in ("PA", "AP"):
        pixels, boxes = _draw_frontal(srng, h, w, findings)
        with open(rec(os.path.join(graph_dir, f"{dicom}_SceneGraph.json")), "w") as f:
          json.dump(_scene_graph(dicom, subj, study, vp, boxes, h, w, sentences), f)
        counts["frontal"] += 1
      else:
        pixels = _draw_lateral(srng, h, w)
        counts["lateral"] += 1
      Image.fromarray(pixels, mode="L").save(
          rec(os.path.join(study_dir, f"s{study}", f"{dicom}.jpg")), quality=92)
      proc = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
      view_name = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral",
                   "LL": "left lateral"}[vp]
      meta.append([dicom, subj, study, proc, vp, h, w, date, time_, proc, view_name,
                   "Erect" if view == "PA" else "Recumbent"])
      split_rows.append([dicom, study, subj, split])
      counts["images"] += 1
    label = {c: "" for c in CHEXPERT}
    for f in findings:
      obs = CHEXPERT_OF[f["tag"]]
      value = "1.0" if f["existence"] == "present" else "-1.0"
      if label[obs] != "1.0":
        label[obs] = value
    for s in sentences:
      for tag, ex in s["tags"].items():
        if ex == "absent" and label[CHEXPERT_OF[tag]] == "":
          label[CHEXPERT_OF[tag]] = "0.0"
    if not findings:
      label["No Finding"] = "1.0"
      counts["normal"] += 1
    labels.append([subj, study] + [label[c] for c in CHEXPERT])
    for f in findings:
      counts["findings"][f["tag"]] += 1
    counts["studies"] += 1
    counts["splits"][split] += 1
    truth.append({"subject_id": subj, "study_id": study, "split": split,
                  "dicom_ids": {d: vp for vp, d in images}, "findings": findings,
                  "sentences": [{**s, "tags": s["tags"]} for s in sentences]})
  splits_used = {t["split"] for t in truth}
  if "train" in splits_used and splits_used == {"train"} and truth[0]["subject_id"] != truth[-1]["subject_id"]:
    last = truth[-1]["subject_id"]   # tiny demos: make sure there is a validation split
    for row in split_rows:
      if row[2] == last:
        row[3] = "test"
    for t in truth:
      if t["subject_id"] == last:
        counts["splits"]["train"] -= 1
        counts["splits"]["test"] += 1
        t["split"] = "test"
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-metadata.csv.gz")), METADATA_HEADER, meta)
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-split.csv.gz")), SPLIT_HEADER, split_rows)
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-chexpert.csv.gz")), LABEL_HEADER, labels)
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-negbio.csv.gz")), LABEL_HEADER, labels)
  with open(rec(os.path.join(out_dir, "demo_truth.jsonl")), "w") as f:
    for t in truth:
      f.write(json.dumps(t) + "\n")
  folder.finish()
  counts["seconds"] = round(time.time() - t0, 2)
  counts["out_dir"] = out_dir
  logger.info("generated %d demo studies (%d images) in %s in %.1f s", counts["studies"],
              counts["images"], out_dir, counts["seconds"])
  return counts


def read_truth(out_dir: str) -> list[dict]:
  """The generator's per-study findings and intended sentences (demo_truth.jsonl)."""
  with open(os.path.join(out_dir, "demo_truth.jsonl")) as f:
    return [json.loads(line) for line in f]


def _params(num_studies: int, seed: int) -> dict:
  return {"num_studies": int(num_studies), "seed": int(seed), "version": GENERATOR_VERSION}


def ensure_demo(manual_dir: str, num_studies: int, seed: int = 0) -> bool:
  """Generate the demo into `manual_dir` unless that folder already holds this exact
  generation. Returns whether it generated.

  `manual_dir` must be new, empty, or a folder this generator made (marked): the generator
  never writes into, nor removes, a folder it did not create (`owned_dir.NotOwnedError`,
  raised before anything is written). Other parameters in an owned folder replace the files
  of the earlier generation only.
  """
  folder = owned_dir.OwnedDir.claim(manual_dir, OWNER, hint=OWN_DATA_HINT)
  if folder.params == _params(num_studies, seed):
    return False
  print(f"Generating the demo data ({num_studies} studies) in {manual_dir}", flush=True)
  generate(manual_dir, num_studies, seed)
  return True


def prepare_demo(data_dir: str, manual_dir: str, num_studies: int, seed: int = 0,
                 config: str = "demo", rebuild: str = "auto") -> dict:
  """Generate the demo into `manual_dir` (unless already there) and build mimic_cxr/<config>
  into `data_dir` (unless already built from these exact files: `build.prepare`).

  Returns {"generated": bool, "built": bool, "data_dir", "manual_dir"}.
  """
  from asg_jax.data.builders import build  # pylint: disable=import-outside-toplevel
  generated = ensure_demo(manual_dir, num_studies, seed)
  result = build.prepare("mimic_cxr", config, data_dir, manual_dir, rebuild=rebuild)
  return {"generated": generated, "built": result["built"], "data_dir": data_dir,
          "manual_dir": manual_dir}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Generate the synthetic MIMIC-CXR-layout demo data.")
  parser.add_argument("--out", required=True, help="output folder (the builder's manual_dir)")
  parser.add_argument("--num_studies", type=int, default=600)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  counts = generate(args.out, args.num_studies, args.seed)
  print(json.dumps(counts, indent=1))


if __name__ == "__main__":
  main()
