"""tfds builder `mimic_cxr`: MIMIC-CXR-JPG 2.0.0 + MIMIC-CXR reports (+ Chest ImaGenome).

One example per FRONTAL image (ViewPosition PA or AP) of a study whose report gives at
least one sentence after sections (IMPRESSION + FINDINGS) and MGCA/ASG cleaning; split
mapping official train -> `train`, validate + test -> `validation` (data.md). Region boxes
come from the image's Chest ImaGenome silver scene graph when present (region_source
"imagenome"), else from the atlas (atlas.json, region_source "atlas"); each region keeps
the sentences the report parser links to it. See docs/data.md.

Configs `5x200` (and `demo_5x200`: 8 per task, longest side 128): a zero-shot / retrieval
set with CheXpert's 5×200 rule (`cxr_chexpert.is_5x200_candidate` / `select_5x200`) drawn
from MIMIC's official `validate` + `test` images, one split `test`, and the downstream
features (docs/interfaces.md §1b) plus the report text:
  pool        per study, its first frontal image (lowest dicom_id) listed as validate or
              test in the split CSV
  candidates  per competition task, in `mimic-cxr-2.0.0-chexpert.csv` row order, the pool
              studies with that task 1.0 and the other 12 observations (No Finding excepted)
              0.0 or blank; `sample(per_task, seed 0)` (RandomState(0).permutation(n)[:200])
  example     image_id = dicom_id, patient_id = subject_id, study_id, labels one-hot [5]
              (info.metadata["class_names"]), `sentences` / `caption`: the report text of
              the pre-training configs (IMPRESSION + FINDINGS, MGCA/ASG cleaning)
The CheXpert CSV is required by these configs (an error naming it otherwise).

    import asg_jax.data.builders  # registers the builders
    b = tfds.builder("mimic_cxr/default", data_dir=DATA_DIR)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=MANUAL))
"""
from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, cxr_chexpert, downstream
from asg_jax.data.reports import CHEXPERT

METADATA_CSV = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_CSV = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_CSV = "mimic-cxr-2.0.0-chexpert.csv"
SCENE_GRAPH_DIR = os.path.join("silver_dataset", "scene_graph")
FRONTAL = ("PA", "AP")
SPLIT_MAP = {"train": "train", "validate": "validation", "test": "validation"}
# 5x200 configs: official validate + test images form the pool (split `test`); train is left out
SPLIT_MAP_5X200 = {"train": None, "validate": "test", "test": "test"}
TASKS = downstream.CHEXPERT_5


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
    raise chest_builder.Skip(chest_builder.BAD_SCENE_GRAPH, path, f"{type(e).__name__}: {e}") from e


def _clean_id(value: str | None) -> str:
  """An id cell as text ('' when missing; a pandas-style '123.0' -> '123')."""
  value = (value or "").strip()
  if value.endswith(".0"):   # ids written as floats by pandas
    value = value[:-2]
  return value


class MimicCxr(downstream.DownstreamBuilder):
  """MIMIC-CXR-JPG frontal images with cleaned reports, ASG tags, CheXpert labels, regions;
  the `5x200` configs: the downstream features + report text (module docstring).

  A DownstreamBuilder for its 5x200 configs only (features, example_index.json); the
  pre-training configs keep ChestBuilder's features, examples and build summary.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: frontal filter, MGCA/ASG cleaning, ASG tags, "
                            "Chest ImaGenome or atlas regions."}
  BUILDER_CONFIGS = [
      chest_builder.ChestConfig(name="default", image_size=256, anatomy=True,
                         description="longest side 256, regions (Chest ImaGenome or atlas)"),
      chest_builder.ChestConfig(name="demo", image_size=128, anatomy=True,
                         description="longest side 128: the synthetic demo (asg_jax.data.demo.synthetic)"),
      chest_builder.ChestConfig(name="no_anatomy", image_size=256, anatomy=False,
                         description="longest side 256, no regions stored (R = 0)"),
      downstream.DownstreamConfig(name="5x200", image_size=256, subset="5x200", per_task=200,
                                  description="MIMIC 5x200 (CheXpert's rule on the official "
                                              "validate + test images), split test only"),
      downstream.DownstreamConfig(name="demo_5x200", image_size=128, subset="5x200",
                                  per_task=8, description="the 5x200 rule, 8 per task, "
                                                          "longest side 128 (small sets)"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
MIMIC-CXR needs PhysioNet credentialing; download by hand and put into the manual_dir
(tfds.download.DownloadConfig(manual_dir=...) / config.data.manual_dir):

  {METADATA_CSV}      (or .csv.gz as distributed by MIMIC-CXR-JPG 2.0.0)
                                     required; columns dicom_id, subject_id, study_id, ViewPosition
  {SPLIT_CSV}         (or .csv.gz) required; columns dicom_id, study_id, subject_id, split
  {CHEXPERT_CSV}      (or .csv.gz) optional; subject_id, study_id + the 14 observations
                                     (without it the report parser's CheXpert labels are stored);
                                     REQUIRED by the 5x200 configs
  files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg     MIMIC-CXR-JPG images (e.g.
                                     files/p10/p10000032/s50414267/02aa804e-....jpg)
  files/pXX/pSUBJECT/sSTUDY.txt      the free-text reports of MIMIC-CXR (mimic-cxr-reports.zip,
                                     extracted so that they sit beside the image folders)
  silver_dataset/scene_graph/DICOM_ID_SceneGraph.json
                                     optional: Chest ImaGenome 1.0.0 silver scene graphs
                                     (scene_graph.zip extracted); without them the atlas boxes
                                     of asg_jax/data/builders/atlas.json are used.
"""

  # ------------------------------------------------------------ config dispatch
  @property
  def is_5x200(self) -> bool:
    return getattr(self.builder_config, "subset", "") == "5x200"

  def class_names(self):
    return TASKS

  def _info(self) -> tfds.core.DatasetInfo:
    if not self.is_5x200:
      return chest_builder.ChestBuilder._info(self)
    info = downstream.DownstreamBuilder._info(self)
    feats = dict(info.features)
    feats.update(study_id=tfds.features.Text(),
                 sentences=tfds.features.Sequence(tfds.features.Text()),
                 caption=tfds.features.Text())
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=tfds.features.FeaturesDict(feats),
        metadata=tfds.core.MetadataDict(class_names=list(TASKS)))

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):  # pylint: disable=arguments-differ
    base = downstream.DownstreamBuilder if self.is_5x200 else chest_builder.ChestBuilder
    return base._download_and_prepare(self, dl_manager=dl_manager,   # pylint: disable=protected-access
                                      download_config=download_config, **kwargs)

  def guarded(self, split: str, key: str, make):
    base = downstream.DownstreamBuilder if self.is_5x200 else chest_builder.ChestBuilder
    yield from base.guarded(self, split, key, make)

  # ------------------------------------------------------------------- splits
  def _split_generators(self, dl_manager):
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise FileNotFoundError(f"mimic_cxr: manual_dir {manual_dir} does not exist.\n"
                              f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if self.is_5x200:
      return self._split_generators_5x200(manual_dir)
    index = self._index(manual_dir)
    splits = {split: self._generate_examples(manual_dir, split, items, index["chexpert"])
              for split, items in index["splits"].items() if items}   # tfds needs >= 1 example
    if not splits:
      raise ValueError(f"mimic_cxr: no frontal image of {manual_dir} is listed in both the "
                       f"metadata and split CSVs")
    return splits

  def _split_generators_5x200(self, manual_dir: str):
    """The 5x200 set (module docstring): pool, candidates in CheXpert-CSV order, the draw."""
    chx_path = chest_builder.find_file(
        manual_dir, CHEXPERT_CSV, f"the MIMIC-CXR-JPG CheXpert labels (subject_id, study_id + "
        f"the 14 observations), required by mimic_cxr/{self.builder_config.name}")
    index = self._index(manual_dir, SPLIT_MAP_5X200, read_chexpert=False)
    pool: dict[str, dict] = {}
    for item in index["splits"]["test"]:          # sorted by dicom_id: the first per study
      if item["study_id"] not in pool:
        pool[item["study_id"]] = item
      else:
        self.skips.filtered("test", "other_frontal_image_of_study")
    rows, seen = [], set()
    for number, row in enumerate(chest_builder.read_csv(chx_path, ("study_id",) + tuple(CHEXPERT)),
                                 start=2):
      study = _clean_id(row["study_id"])
      if study not in pool or study in seen:
        continue
      seen.add(study)
      try:
        obs = cxr_chexpert.parse_row(row)
      except (TypeError, ValueError) as e:
        self.skips.skip("test", chest_builder.Skip(chest_builder.BAD_VALUE, f"{chx_path} line {number}",
                                            f"study {study}: {e}"))
        continue
      rows.append(({"Path": pool[study]["dicom_id"]}, obs))
    if len(seen) < len(pool):
      self.skips.filtered("test", "no_chexpert_row", len(pool) - len(seen))
    chosen = cxr_chexpert.select_5x200(rows, self.builder_config.per_task,
                                       self.builder_config.seed)
    items = sorted((it for it in pool.values() if it["dicom_id"] in chosen),
                   key=lambda it: it["dicom_id"])
    return self.splits({"test": self._generate_5x200(manual_dir, items, chosen) if items
                        else None})

  def _generate_5x200(self, manual_dir: str, items: list[dict], chosen: dict[str, str]):
    size = self.builder_config.image_size
    for item in items:
      def make(item=item):
        report_path = os.path.join(manual_dir, report_relpath(item["subject_id"], item["study_id"]))
        if not os.path.isfile(report_path):
          raise chest_builder.Skip(chest_builder.MISSING_REPORT, report_path, "report file not found")
        with open(report_path, encoding="utf-8", errors="replace") as f:
          report = f.read()
        ex = chest_builder.assemble_example(   # the pre-training report text, image and its size
            file=report_path, report=report, image_size=size, anatomy=False,
            image_path=os.path.join(manual_dir, image_relpath(
                item["subject_id"], item["study_id"], item["dicom_id"])),
            ids={k: item[k] for k in ("study_id", "dicom_id", "subject_id")},
            view_position=item["view"])
        task = chosen[item["dicom_id"]]
        return {"image": np.asarray(ex["image"], np.uint8)[:, :, None],
                "image_id": item["dicom_id"], "patient_id": item["subject_id"],
                "study_id": item["study_id"],
                "labels": np.asarray([t == task for t in TASKS], np.float32),
                "original_size": ex["original_size"], "sentences": ex["sentences"],
                "caption": ex["caption"]}
      yield from self.guarded("test", item["dicom_id"], make)

  def _index(self, manual_dir: str, split_map: dict = SPLIT_MAP, read_chexpert: bool = True
             ) -> dict:
    """Read the CSVs: frontal images per split (`split_map`: official split -> ours, None =
    left out silently), CheXpert labels per study (when `read_chexpert`)."""
    meta_path = chest_builder.find_file(manual_dir, METADATA_CSV,
                                 "the MIMIC-CXR-JPG metadata CSV (dicom_id, subject_id, "
                                 "study_id, ViewPosition, ...)")
    split_path = chest_builder.find_file(manual_dir, SPLIT_CSV,
                                  "the MIMIC-CXR-JPG split CSV (dicom_id, study_id, subject_id, "
                                  "split in train/validate/test)")
    split_of, left_out = {}, set()
    for row in chest_builder.read_csv(split_path, ("dicom_id", "split")):
      value = (row["split"] or "").strip()
      if value not in split_map:
        raise ValueError(f"{split_path}: split {value!r} of dicom_id {row['dicom_id']!r} is not "
                         f"one of {sorted(split_map)}")
      if split_map[value] is None:
        left_out.add(row["dicom_id"].strip())
      else:
        split_of[row["dicom_id"].strip()] = split_map[value]
    chexpert = {}
    chx_path = None
    if read_chexpert:
      try:
        chx_path = chest_builder.find_file(manual_dir, CHEXPERT_CSV, "")
      except FileNotFoundError:
        chx_path = None
    if chx_path:
      for row in chest_builder.read_csv(chx_path, ("study_id",) + tuple(CHEXPERT)):
        study = _clean_id(row["study_id"])
        try:
          chexpert[study] = np.asarray([chest_builder.parse_label(row[c]) for c in CHEXPERT], np.float32)
        except (TypeError, ValueError) as e:
          raise ValueError(f"{chx_path}: study {study}: {e}") from e
    splits: dict[str, list[dict]] = {s: [] for s in split_map.values() if s is not None}
    for number, row in enumerate(chest_builder.read_csv(
        meta_path, ("dicom_id", "subject_id", "study_id", "ViewPosition")), start=2):
      dicom = (row["dicom_id"] or "").strip()
      if dicom in left_out:
        continue
      split = split_of.get(dicom)
      item = {"dicom_id": dicom, "subject_id": _clean_id(row["subject_id"]),
              "study_id": _clean_id(row["study_id"]), "view": row["ViewPosition"]}
      empty = [k for k in ("dicom_id", "subject_id", "study_id") if not item[k]]
      if item["view"] is None:   # a short row (csv gives None for absent trailing cells)
        empty.append("ViewPosition")
      if empty:
        self.skips.skip(split or "none", chest_builder.Skip(
            chest_builder.MISSING_COLUMN, f"{meta_path} line {number}", f"no value for column(s) {empty}"))
        continue
      item["view"] = item["view"].strip()
      if item["view"] not in FRONTAL:   # laterals and images without a view position
        self.skips.filtered(split or "none", f"view_{item['view'] or 'missing'}")
        continue
      if split is None:
        self.skips.skip("none", chest_builder.Skip(chest_builder.NOT_IN_SPLIT, dicom,
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
          raise chest_builder.Skip(chest_builder.MISSING_REPORT, report_path, "report file not found")
        with open(report_path, encoding="utf-8", errors="replace") as f:
          report = f.read()
        boxes, source = None, "atlas"
        graph_path = os.path.join(manual_dir, scene_graph_relpath(item["dicom_id"]))
        if config.anatomy and graphs_present and os.path.isfile(graph_path):
          boxes, source = read_scene_graph(graph_path), "imagenome"
        return chest_builder.assemble_example(
            file=report_path, report=report,
            image_path=os.path.join(manual_dir, image_relpath(
                item["subject_id"], item["study_id"], item["dicom_id"])),
            image_size=config.image_size, ids=ids, view_position=item["view"], boxes=boxes,
            region_source=source, anatomy=config.anatomy, chexpert=chexpert.get(item["study_id"]))
      yield from self.guarded(split, item["dicom_id"], make)
