"""tfds builder `mimic_cxr`: MIMIC-CXR-JPG 2.0.0 + MIMIC-CXR reports (+ Chest ImaGenome).

One example per FRONTAL image (ViewPosition PA or AP) of a study whose report gives at
least one sentence after sections (IMPRESSION + FINDINGS) and MGCA/ASG cleaning; split
mapping official train -> `train`, validate + test -> `validation` (data.md). Region boxes
come from the image's Chest ImaGenome silver scene graph when present (region_source
"imagenome"), else from the atlas (atlas.json, region_source "atlas"); each region keeps
the sentences the report parser links to it. See docs/data.md.

    import asg_jax.data.builders  # registers the builders
    b = tfds.builder("mimic_cxr/default", data_dir=DATA_DIR)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=MANUAL))
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import common
from asg_jax.data.reports import CHEXPERT

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
SCENE_GRAPH_DIR = os.path.join("silver_dataset", "scene_graph")
FRONTAL = ("PA", "AP")
SPLIT_MAP = {"train": "train", "validate": "validation", "test": "validation"}


def image_relpath(subject_id: str, study_id: str, dicom_id: str) -> str:
  """files/p10/p10000032/s50414267/<dicom_id>.jpg"""
  return os.path.join("files", f"p{subject_id[:2]}", f"p{subject_id}", f"s{study_id}",
                      f"{dicom_id}.jpg")


def report_relpath(subject_id: str, study_id: str) -> str:
  """files/p10/p10000032/s50414267.txt"""
  return os.path.join("files", f"p{subject_id[:2]}", f"p{subject_id}", f"s{study_id}.txt")


def scene_graph_relpath(dicom_id: str) -> str:
  """silver_dataset/scene_graph/<dicom_id>_SceneGraph.json"""
  return os.path.join(SCENE_GRAPH_DIR, f"{dicom_id}_SceneGraph.json")


def read_scene_graph(path: str) -> dict[str, tuple[float, float, float, float]]:
  """{bbox_name: (original_x1, original_y1, original_x2, original_y2)} of a scene graph.

  Raises Skip(BAD_SCENE_GRAPH) when the JSON is unreadable or an object lacks the fields.
  """
  try:
    with open(path, encoding="utf-8") as f:
      graph = json.load(f)
    boxes = {}
    for obj in graph["objects"]:
      boxes[str(obj["bbox_name"]).lower()] = tuple(
          float(obj[f"original_{k}"]) for k in ("x1", "y1", "x2", "y2"))
    return boxes
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise common.Skip(common.BAD_SCENE_GRAPH, path, f"{type(e).__name__}: {e}") from e


def _clean_id(value: str | None) -> str:
  """An id cell as text ('' when missing; a pandas-style '123.0' -> '123')."""
  value = (value or "").strip()
  if value.endswith(".0"):   # ids written as floats by pandas
    value = value[:-2]
  return value


class MimicCxr(common.ChestBuilder):
  """MIMIC-CXR-JPG frontal images with cleaned reports, ASG tags, CheXpert labels, regions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: frontal filter, MGCA/ASG cleaning, ASG tags, "
                            "Chest ImaGenome or atlas regions."}
  BUILDER_CONFIGS = [
      common.ChestConfig(name="default", image_size=256, anatomy=True,
                         description="longest side 256, regions (Chest ImaGenome or atlas)"),
      common.ChestConfig(name="demo", image_size=128, anatomy=True,
                         description="longest side 128: the synthetic demo (asg_jax.data.synthetic)"),
      common.ChestConfig(name="no_anatomy", image_size=256, anatomy=False,
                         description="longest side 256, no regions stored (R = 0)"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MIMIC-CXR needs PhysioNet credentialing; download by hand and put into the manual_dir
(tfds.download.DownloadConfig(manual_dir=...) / config.data.manual_dir):

  {METADATA_CSV}      (or .csv.gz as distributed by MIMIC-CXR-JPG 2.0.0)
                                     required; columns dicom_id, subject_id, study_id, ViewPosition
  {SPLIT_CSV}         (or .csv.gz) required; columns dicom_id, study_id, subject_id, split
  {CHEXPERT_CSV}      (or .csv.gz) optional; subject_id, study_id + the 14 observations
                                     (without it the report parser's CheXpert labels are stored)
  files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg     MIMIC-CXR-JPG images (e.g.
                                     files/p10/p10000032/s50414267/02aa804e-....jpg)
  files/pXX/pSUBJECT/sSTUDY.txt      the free-text reports of MIMIC-CXR (mimic-cxr-reports.zip,
                                     extracted so that they sit beside the image folders)
  silver_dataset/scene_graph/DICOM_ID_SceneGraph.json
                                     optional: Chest ImaGenome 1.0.0 silver scene graphs
                                     (scene_graph.zip extracted); without them the atlas boxes
                                     of asg_jax/data/builders/atlas.json are used.
"""

  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise FileNotFoundError(f"mimic_cxr: manual_dir {manual_dir} does not exist.\n"
                              f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    index = self._index(manual_dir)
    splits = {split: self._generate_examples(manual_dir, split, items, index["chexpert"])
              for split, items in index["splits"].items() if items}   # tfds needs >= 1 example
    if not splits:
      raise ValueError(f"mimic_cxr: no frontal image of {manual_dir} is listed in both the "
                       f"metadata and split CSVs")
    return splits

  def _index(self, manual_dir: str) -> dict:
    """Read the CSVs: frontal images per split, CheXpert labels per study."""
    meta_path = common.find_file(manual_dir, METADATA_CSV,
                                 "the MIMIC-CXR-JPG metadata CSV (dicom_id, subject_id, "
                                 "study_id, ViewPosition, ...)")
    split_path = common.find_file(manual_dir, SPLIT_CSV,
                                  "the MIMIC-CXR-JPG split CSV (dicom_id, study_id, subject_id, "
                                  "split in train/validate/test)")
    split_of = {}
    for row in common.read_csv(split_path, ("dicom_id", "split")):
      value = (row["split"] or "").strip()
      if value not in SPLIT_MAP:
        raise ValueError(f"{split_path}: split {value!r} of dicom_id {row['dicom_id']!r} is not "
                         f"one of {sorted(SPLIT_MAP)}")
      split_of[row["dicom_id"].strip()] = SPLIT_MAP[value]
    chexpert = {}
    try:
      chx_path = common.find_file(manual_dir, CHEXPERT_CSV, "")
    except FileNotFoundError:
      chx_path = None
    if chx_path:
      for row in common.read_csv(chx_path, ("study_id",) + tuple(CHEXPERT)):
        study = _clean_id(row["study_id"])
        try:
          chexpert[study] = np.asarray([common.parse_label(row[c]) for c in CHEXPERT], np.float32)
        except (TypeError, ValueError) as e:
          raise ValueError(f"{chx_path}: study {study}: {e}") from e
    splits: dict[str, list[dict]] = {"train": [], "validation": []}
    for number, row in enumerate(common.read_csv(
        meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition")), start=2):
      dicom = (row["dicom_id"] or "").strip()
      split = split_of.get(dicom)
      item = {"dicom_id": dicom, "subject_id": _clean_id(row["subject_id"]),
              "study_id": _clean_id(row["study_id"]), "view": row["ViewPosition"]}
      empty = [k for k in ("dicom_id", "subject_id", "study_id") if not item[k]]
      if item["view"] is None:   # a short row (csv gives None for absent trailing cells)
        empty.append("ViewPosition")
      if empty:
        self.skips.skip(split or "none", common.Skip(
            common.MISSING_COLUMN, f"{meta_path} line {number}", f"no value for column(s) {empty}"))
        continue
      item["view"] = item["view"].strip()
      if item["view"] not in FRONTAL:   # laterals and images without a view position
        self.skips.filtered(split or "none", f"view_{item['view'] or 'missing'}")
        continue
      if split is None:
        self.skips.skip("none", common.Skip(common.NOT_IN_SPLIT, dicom,
                                            f"dicom_id not in {os.path.basename(split_path)}"))
        continue
      splits[split].append(item)
    for items in splits.values():
      items.sort(key=lambda it: it["dicom_id"])
    return {"splits": splits, "chexpert": chexpert}

  def _generate_examples(self, manual_dir: str, split: str, items: list[dict], chexpert: dict):
    graphs_present = os.path.isdir(os.path.join(manual_dir, SCENE_GRAPH_DIR))
    config = self.builder_config
    for item in items:
      def make(item=item):
        ids = {k: item[k] for k in ("study_id", "dicom_id", "subject_id")}
        report_path = os.path.join(manual_dir, report_relpath(item["subject_id"], item["study_id"]))
        if not os.path.isfile(report_path):
          raise common.Skip(common.MISSING_REPORT, report_path, "report file not found")
        with open(report_path, encoding="utf-8", errors="replace") as f:
          report = f.read()
        boxes, source = None, "atlas"
        graph_path = os.path.join(manual_dir, scene_graph_relpath(item["dicom_id"]))
        if config.anatomy and graphs_present and os.path.isfile(graph_path):
          boxes, source = read_scene_graph(graph_path), "imagenome"
        return common.assemble_example(
            file=report_path, report=report,
            image_path=os.path.join(manual_dir, image_relpath(
                item["subject_id"], item["study_id"], item["dicom_id"])),
            image_size=config.image_size, ids=ids, view_position=item["view"], boxes=boxes,
            region_source=source, anatomy=config.anatomy, chexpert=chexpert.get(item["study_id"]))
      yield from self.guarded(split, item["dicom_id"], make)
