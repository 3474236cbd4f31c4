"""tfds builder `labelled_images`: your own labelled chest X-rays, for the transfer
protocols (docs/transfer.md "Evaluate on your own labelled images"; stored features of
docs/interfaces.md §1b). Two layouts:

  CSV (UTF-8, header row; `.tsv` tab-separated)
    image_path   required: relative to the CSV's folder, or absolute; PNG / JPEG / DICOM ...
                 (`asg_jax.data.images`); `image_id` = the cell as written
    split        optional: train | validation (valid, val, validate, dev) | test; an empty
                 cell is skipped as missing_column; no column: a seeded split by patient
    patient_id (alias subject_id), view_position (alias view), modality, study_id   optional
    classes, one of:
      `labels`   '|'-separated names (NIH style, multi-label; "No Finding" = no positive);
      `label`    one name per row (one-hot);
      else every other column is a class (or `label_columns`), cells 1 / 0 / blank (= 0) /
                 -1 (uncertain: `uncertain` = zeros | ones | ignore, ignore filters the row)
                 (also 1.0 / 0.0 / -1.0, true / false, yes / no)
  class folders: <root>/<class name>/<any sub-folders>/<image files>, one-hot, class names =
    folder names (sorted); image_id = "<class>/<path below it>"; other files (no image
    suffix) are counted as filtered.not_an_image_file

Splits: the `split` column, else a seeded split by patient (sorted unique patients,
`RandomState(split_seed).permutation`: the first ceil(test_fraction · P) patients -> test,
the next ceil(validation_fraction · P) -> validation, the rest train; no patient id: the
image is its own patient), drawn over every row before any file is opened. Rows naming a
non-frontal view (view column; `all_views` keeps them) and rows of a non-X-ray `modality`
(CT, MR, ...) are filtered and counted (`filtered.view_<V>`, `filtered.modality_<M>`); a
repeated image_path keeps its first row (`filtered.duplicate_image_path`). Unreadable
images are skipped with their reason (build_summary.json, one console line).

The user's folder is only read. `prepare(source, data_dir, ...)` builds into `data_dir`
(the run's folder) and rebuilds when the labels file, the image list (paths, sizes, mtimes)
or an option changed (fingerprint `asg_jax_inputs.json` beside the dataset).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import sys
import time
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream
from asg_jax.data.builders.image_text_csv import is_frontal
from asg_jax.data.builders.labelled_layout import (IMAGE_SUFFIXES, NO_FINDING, SPLITS, UNCERTAIN,
                                                   XRAY_MODALITIES, cell_label, csv_layout,
                                                   folder_classes, folder_files, read_rows,
                                                   seeded_split)

NAME = "labelled_images"
SOURCE_FILE = "source.json"        # <data_dir>/labelled_images/<config>/: the config's fields
FINGERPRINT_FILE = "asg_jax_inputs.json"


@dataclasses.dataclass(eq=False)
class LabelledConfig(downstream.DownstreamConfig):
  """One user dataset: where it is and how it is read (module docstring)."""
  source: str = ""                  # absolute path of the CSV or of the class-folder root
  layout: str = "csv"               # csv | folders
  class_names: tuple = ()
  label_mode: str = "columns"       # columns | labels | label | folders
  uncertain: str = "zeros"
  test_fraction: float = 0.2
  label_columns: tuple = ()


def safe_name(text: str) -> str:
  """A tfds config name: lower case, [a-z0-9_], starting with a letter."""
  s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "own"
  return s if s[0].isalpha() else f"d_{s}"


def default_name(source: str) -> str:
  """The folder's name (class folders, or a CSV named labels.csv), else <folder>_<stem>."""
  source = os.path.abspath(source)
  if os.path.isdir(source):
    return safe_name(os.path.basename(source))
  stem = os.path.splitext(os.path.basename(source))[0]
  folder = os.path.basename(os.path.dirname(source))
  return safe_name(folder if stem.lower() == "labels" else f"{folder}_{stem}")


# ---------------------------------------------------------------------------- the builder

class LabelledImages(downstream.DownstreamBuilder):
  """Your own labelled chest X-rays (CSV or class folders; module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "CSV (label columns / labels / label) and class folders."}
  BUILDER_CONFIGS = []
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def __init__(self, *, config=None, data_dir=None, **kwargs):
    if isinstance(config, str):        # reading a build: its config from the build's folder
      config = load_config(data_dir, config)
    if not isinstance(config, LabelledConfig):
      raise ValueError("labelled_images needs a LabelledConfig (labelled_images.prepare) or "
                       "the name of a config built into data_dir")
    super().__init__(config=config, data_dir=data_dir, **kwargs)

  def class_names(self):
    return tuple(self.builder_config.class_names)

  def _info(self):
    info = super()._info()
    info.metadata["task"] = ("multilabel" if self.builder_config.label_mode in ("columns", "labels")
                             else "multiclass")
    info.metadata["source"] = self.builder_config.source
    return info

  def _split_generators(self, dl_manager):
    del dl_manager
    c = self.builder_config
    items = self._items_folders() if c.layout == "folders" else self._items_csv()
    splits: dict[str, list] = {"train": [], "validation": [], "test": []}
    for split, item in items:
      splits[split].append(item)
    total = sum(len(v) for v in splits.values())
    self._progress = {"done": 0, "total": total, "start": time.time(), "last": time.time()}
    return self.splits({s: self._generate(s, v) if v else None for s, v in splits.items()})

  def _split_of(self, patients: dict[str, str], explicit: dict[str, str]) -> dict[str, str]:
    c = self.builder_config
    drawn = seeded_split(list(patients.values()), c.seed, c.validation_fraction, c.test_fraction)
    return {k: explicit.get(k) or drawn[p] for k, p in patients.items()}

  def _items_folders(self):
    c = self.builder_config
    items, patients = [], {}
    for image_id, cls, path in folder_files(c.source, c.class_names):
      if not path.lower().endswith(IMAGE_SUFFIXES):
        self.skips.filtered("none", "not_an_image_file")
        continue
      labels = np.zeros(len(c.class_names), np.float32)
      labels[c.class_names.index(cls)] = 1.0
      items.append((image_id, path, image_id, labels))
      patients[image_id] = image_id
    split = self._split_of(patients, {})
    return [(split[i[0]], i) for i in items]

  def _items_csv(self):
    c = self.builder_config
    layout = csv_layout(c.source, c.label_columns)
    cols = layout["columns"]
    _, rows = read_rows(c.source)
    folder = os.path.dirname(c.source)
    kept, patients, explicit, seen = [], {}, {}, set()
    for number, row in enumerate(rows, start=2):
      where = f"{c.source} line {number}"
      image_id = row.get(cols["image"]) or ""
      try:
        if not image_id:
          raise chest_builder.Skip(chest_builder.MISSING_COLUMN, where, "no image_path value")
        split = ""
        if "split" in cols:
          value = (row.get(cols["split"]) or "").lower()
          if not value:
            raise chest_builder.Skip(chest_builder.MISSING_COLUMN, where, "empty split cell")
          if value not in SPLITS:
            raise chest_builder.Skip(chest_builder.BAD_VALUE, where,
                                     f"split {value!r} is not one of {sorted(SPLITS)}")
          split = SPLITS[value]
        labels = self._labels(row, layout, where)
      except chest_builder.Skip as skip:
        self.skips.skip("none", skip)
        continue
      modality = (row.get(cols.get("modality", "")) or "").strip()
      view = (row.get(cols.get("view", "")) or "").strip()
      if modality and modality.lower() not in XRAY_MODALITIES:
        self.skips.filtered("none", f"modality_{modality.upper()}")
        continue
      if view and c.frontal_only and not is_frontal(view):
        self.skips.filtered("none", f"view_{view.upper()}")
        continue
      if labels is None:
        self.skips.filtered("none", "uncertain_label")
        continue
      if image_id in seen:
        self.skips.filtered("none", "duplicate_image_path")
        continue
      seen.add(image_id)
      path = image_id if os.path.isabs(image_id) else os.path.join(folder, image_id)
      patient = (row.get(cols.get("patient", "")) or "").strip() or image_id
      patients[image_id], explicit[image_id] = patient, split
      kept.append((image_id, path, patient, labels))
    split = self._split_of(patients, explicit)
    return [(split[i[0]], i) for i in kept]

  def _labels(self, row: dict, layout: dict, where: str) -> np.ndarray | None:
    c = self.builder_config
    names = c.class_names
    out = np.zeros(len(names), np.float32)
    if layout["mode"] in ("labels", "label"):
      cell = (row.get(layout["columns"]["labels"]) or "").strip()
      if not cell:
        raise chest_builder.Skip(chest_builder.MISSING_COLUMN, where, "empty label cell")
      parts = [p.strip() for p in cell.split("|")] if layout["mode"] == "labels" else [cell]
      for p in parts:
        if not p or (layout["mode"] == "labels" and p.lower() in NO_FINDING):
          continue
        if p not in names:
          raise chest_builder.Skip(chest_builder.BAD_VALUE, where, f"unknown class {p!r}")
        out[names.index(p)] = 1.0
      return out
    for k, name in enumerate(names):
      try:
        v = cell_label(row.get(name) or "", c.uncertain)
      except ValueError as e:
        raise chest_builder.Skip(chest_builder.BAD_VALUE, where, f"{name}: {e}") from e
      if v is None:
        return None
      out[k] = v
    return out

  def _generate(self, split: str, items: list):
    for image_id, path, patient, labels in items:
      def make(image_id=image_id, path=path, patient=patient, labels=labels):
        return self.make_example(image_path=path, image_id=image_id, patient_id=patient,
                                 labels=labels)
      yield from self.guarded(split, image_id, make)
      self._tick()

  def _tick(self):
    p = getattr(self, "_progress", None)
    if p is None:
      return
    p["done"] += 1
    now = time.time()
    if now - p["last"] > 10 or p["done"] == p["total"]:
      p["last"] = now
      rate = p["done"] / max(now - p["start"], 1e-9)
      print(f"  building {NAME}/{self.builder_config.name}: {p['done']:,}/{p['total']:,} "
            f"images | {rate:.1f} images/s", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ configs on disk

def _config_dir(data_dir: str | None, name: str) -> str:
  root = data_dir or os.path.expanduser(os.path.join("~", "tensorflow_datasets"))
  return os.path.join(os.fspath(root), NAME, name)


def load_config(data_dir: str | None, name: str) -> LabelledConfig:
  """The config of the build `<data_dir>/labelled_images/<name>` (its source.json; class
  names from the build's example_index.json when present). FileNotFoundError otherwise."""
  path = os.path.join(_config_dir(data_dir, name), SOURCE_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"labelled_images/{name}: nothing built in {os.path.dirname(path)} "
                            "(build it with labelled_images.prepare or the own_labels recipe)")
  with open(path) as f:
    fields = json.load(f)
  index = os.path.join(_config_dir(data_dir, name), str(LabelledImages.VERSION),
                       downstream.INDEX_FILE)
  if os.path.isfile(index):
    with open(index) as f:
      fields["class_names"] = json.load(f)["class_names"]
  return make_config_from(fields)


def make_config_from(fields: dict) -> LabelledConfig:
  fields = dict(fields)
  for k in ("class_names", "label_columns", "classes"):
    if k in fields:
      fields[k] = tuple(fields[k])
  return LabelledConfig(**fields)


def make_config(source: str, *, name: str = "", image_size: int = 256,
                uncertain: str = "zeros", all_views: bool = False, seed: int = 0,
                validation_fraction: float = 0.1, test_fraction: float = 0.2,
                label_columns: Sequence[str] = ()) -> LabelledConfig:
  """The config of a user's CSV or class-folder root (reads the CSV / lists the folders)."""
  source = os.path.abspath(os.path.expanduser(source))
  if not os.path.exists(source):
    raise FileNotFoundError(f"own labels: {source} does not exist (a labels CSV or a folder "
                            "with one sub-folder per class)")
  if uncertain not in UNCERTAIN:
    raise ValueError(f"uncertain={uncertain!r}; expected one of {UNCERTAIN}")
  if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1
          and validation_fraction + test_fraction < 1):
    raise ValueError("validation_fraction and test_fraction must be in [0, 1) with sum < 1")
  if os.path.isdir(source):
    layout, mode, classes = "folders", "folders", folder_classes(source)
  else:
    found = csv_layout(source, tuple(label_columns))
    layout, mode, classes = "csv", found["mode"], found["class_names"]
  return LabelledConfig(
      name=safe_name(name) if name else default_name(source), image_size=int(image_size),
      description=f"own labelled images from {source}", frontal_only=not all_views,
      seed=int(seed), validation_fraction=float(validation_fraction),
      test_fraction=float(test_fraction), source=source, layout=layout,
      class_names=tuple(classes), label_mode=mode, uncertain=uncertain,
      label_columns=tuple(label_columns))


def config_fields(config: LabelledConfig) -> dict:
  skip = {"version", "release_notes", "supported_versions", "tags"}
  out = {}
  for f in dataclasses.fields(config):
    if f.name in skip:
      continue
    v = getattr(config, f.name)
    out[f.name] = list(v) if isinstance(v, tuple) else v
  return out


def image_list(config: LabelledConfig) -> list[list]:
  """[[path as listed, size, mtime_ns] or [path, -1, 0] when absent] of every image the
  source names (class folders: every file below them)."""
  if config.layout == "folders":
    paths = [(i, p) for i, _, p in folder_files(config.source, config.class_names)]
  else:
    layout = csv_layout(config.source, config.label_columns)
    _, rows = read_rows(config.source)
    folder = os.path.dirname(config.source)
    col = layout["columns"]["image"]
    paths = [(r.get(col) or "", os.path.join(folder, r.get(col) or "")) for r in rows]
  out = []
  for listed, path in paths:
    try:
      st = os.stat(path)
      out.append([listed, st.st_size, st.st_mtime_ns])
    except OSError:
      out.append([listed, -1, 0])
  return out


def fingerprint(config: LabelledConfig) -> dict:
  """What a build depends on: version, options, the labels file's SHA-256, the image list."""
  h = hashlib.sha256(json.dumps(image_list(config)).encode("utf-8")).hexdigest()
  labels = ""
  if config.layout == "csv":
    with open(config.source, "rb") as f:
      labels = hashlib.sha256(f.read()).hexdigest()
  return {"builder": NAME, "version": str(LabelledImages.VERSION),
          "options": config_fields(config), "labels_file_sha256": labels,
          "image_list_sha256": h}


def prepare(source: str, data_dir: str, *, rebuild: str = "auto", **options) -> dict:
  """Build the user's dataset into `data_dir` unless an up-to-date build is there.

  Args:
    source: the labels CSV or the class-folder root (only read).
    data_dir: the tfds folder of the run (e.g. `<out>/tfds`).
    rebuild: auto (when the fingerprint differs) | never | always.
    options: `make_config`'s keywords.
  Returns:
    {"dataset": "labelled_images/<name>", "built", "reason", "data_dir" (the version
     folder), "class_names", "task", "summary" (build_summary.json's dict)}.
  """
  from asg_jax import locking  # pylint: disable=import-outside-toplevel
  config = make_config(source, **options)
  cdir = _config_dir(data_dir, config.name)
  os.makedirs(cdir, exist_ok=True)
  with locking.take_turns(os.path.join(cdir, ".build.lock"),
                          f"preparing {NAME}/{config.name} in {data_dir}"):
    new = fingerprint(config)
    vdir = os.path.join(cdir, str(LabelledImages.VERSION))
    fp_path = os.path.join(vdir, FINGERPRINT_FILE)
    old = None
    if os.path.isfile(fp_path):
      with open(fp_path) as f:
        old = json.load(f)
    built, reason = False, "up to date"
    if old is None or rebuild == "always" or (old != new and rebuild != "never"):
      reason = ("not built yet" if old is None else "rebuild=always" if old == new
                else _changes(old, new))
      print(f"Building {NAME}/{config.name} from {config.source} into {vdir} ({reason})",
            file=sys.stderr, flush=True)
      with open(os.path.join(cdir, SOURCE_FILE), "w") as f:
        json.dump(config_fields(config), f, indent=1)
      b = LabelledImages(config=config, data_dir=data_dir)
      from asg_jax import console  # pylint: disable=import-outside-toplevel
      with console.quiet_tfds_prints():
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.path.dirname(config.source) if config.layout == "csv" else config.source,
            download_mode=tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS))
      with open(fp_path, "w") as f:
        json.dump(new, f, indent=1)
      built = True
    elif old != new:
      reason = f"reused despite: {_changes(old, new)} (rebuild=never)"
    with open(os.path.join(vdir, chest_builder.SUMMARY_FILE)) as f:
      summary = json.load(f)
    if not built:
      print(chest_builder.summary_line(f"{NAME}/{config.name} (reused)", summary),
            file=sys.stderr, flush=True)
    b = LabelledImages(config=load_config(data_dir, config.name), data_dir=data_dir)
    return {"dataset": f"{NAME}/{config.name}", "built": built, "reason": reason,
            "data_dir": vdir, "class_names": list(b.class_names()),
            "task": b.info.metadata["task"], "summary": summary}


def _changes(old: dict, new: dict) -> str:
  parts = []
  if old.get("labels_file_sha256") != new["labels_file_sha256"]:
    parts.append("the labels file changed")
  if old.get("image_list_sha256") != new["image_list_sha256"]:
    parts.append("the image list changed")
  changed = sorted(k for k in new["options"] if old.get("options", {}).get(k) != new["options"][k])
  if changed:
    parts.append(f"options changed: {', '.join(changed)}")
  if old.get("version") != new["version"]:
    parts.append(f"version {old.get('version')} -> {new['version']}")
  return "; ".join(parts) or "the fingerprint changed"
