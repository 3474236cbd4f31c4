"""Shared parts of the `mimic_cxr` and `image_text_csv` tfds builders.

* image reading (JPEG / PNG incl. 16-bit / DICOM incl. MONOCHROME1) and resizing so that
  the longest side equals the config's `image_size` (aspect kept, small images upscaled);
* the stored-example features (docs/interfaces.md §1) and their assembly from a parsed
  report and region boxes given in ORIGINAL-image pixels;
* the anatomical atlas (atlas.json) used when a dataset has no boxes of its own;
* skip bookkeeping: a bad example raises `Skip(reason, file)`; the builder logs it, counts
  it per split and reason and writes `build_summary.json` next to the dataset;
* `ChestBuilder`, the base class of both builders (configs, features, summary).

Nothing partial is written for a skipped example: every example is fully assembled and
validated in Python before it is yielded to tfds.
"""
from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import io
import json
import logging
import math
import os
import re
from typing import Iterable, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from asg_jax.data import images
from asg_jax.data.reports import CHEXPERT, REGIONS, TAGS, parse_report, report_text

logger = logging.getLogger(__name__)

REGION_INDEX = {r: i for i, r in enumerate(REGIONS)}
SUMMARY_FILE = "build_summary.json"

# Skip reasons (keys of build_summary.json's `skipped`).
MISSING_IMAGE = "missing_image"
CORRUPT_IMAGE = "corrupt_image"
MISSING_REPORT = "missing_report"
EMPTY_REPORT = "empty_report"          # no sentence of >= 3 words left after sections + cleaning
TOO_SHORT_REPORT = "too_short_report"  # fewer than 3 word tokens in all after cleaning
BOX_OUTSIDE_IMAGE = "box_outside_image"
BAD_BOX = "bad_box"                    # unparseable / non-finite / x2 <= x1 box
MISSING_COLUMN = "missing_column"      # a CSV row without a required value
BAD_SCENE_GRAPH = "bad_scene_graph"
NOT_IN_SPLIT = "not_in_split"          # frontal image absent from the split CSV
BAD_VALUE = "bad_value"                # a CSV cell with an invalid value (split, label)
SKIP_REASONS = (MISSING_IMAGE, CORRUPT_IMAGE, MISSING_REPORT, EMPTY_REPORT, TOO_SHORT_REPORT,
                BOX_OUTSIDE_IMAGE,
                BAD_BOX, MISSING_COLUMN, BAD_SCENE_GRAPH, NOT_IN_SPLIT, BAD_VALUE)
MIN_REPORT_TOKENS = 3     # the cleaning keeps sentences of at least 3 tokens (data.md)
MAX_LOGGED_SKIPS = 1000   # per build, in build_summary.json (counts are always complete)


class Skip(Exception):
  """This example cannot be built: `reason` (one of SKIP_REASONS), the file, a detail."""

  def __init__(self, reason: str, file: str, detail: str = ""):
    super().__init__(f"{reason}: {file}" + (f" ({detail})" if detail else ""))
    self.reason, self.file, self.detail = reason, str(file), detail


# ------------------------------------------------------------------------------ images

def read_image(path: str, target_size: int | None = None) -> tuple[np.ndarray, tuple[int, int]]:
  """Read a radiograph as grayscale uint8 with the project's one decoder
  (`asg_jax.data.images.read_grey`: JPEG / PNG / DICOM, any mode, EXIF orientation).

  Args:
    path: the image file.
    target_size: if given, JPEGs are decoded at a reduced scale no smaller than this
      (PIL draft mode; much faster for 3000 px MIMIC images), very large images are
      reduced right after decoding.
  Returns:
    (pixels uint8 [h, w], (H, W) = the ORIGINAL full-resolution height and width).
  Raises:
    Skip(MISSING_IMAGE) when the file does not exist, Skip(CORRUPT_IMAGE) when it cannot
    be decoded (empty, not an image, truncated, ...: the detail starts with the kind).
  """
  try:
    return images.read_grey(path, target_size)
  except images.ImageReadError as e:
    raise Skip(e.reason, path, e.detail) from e


def stored_size(height: int, width: int, image_size: int) -> tuple[int, int]:
  """(h, w) with the longest side = image_size, aspect kept (rounded, >= 1)."""
  scale = image_size / max(height, width)
  return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_longest(pixels: np.ndarray, original_size: tuple[int, int], image_size: int) -> Image.Image:
  """uint8 [h, w] -> PIL 'L' image of `stored_size(*original_size, image_size)`.

  The target size is computed from the ORIGINAL size (so that a JPEG decoded at reduced
  scale lands on the same stored size as a full decode).
  """
  h, w = stored_size(original_size[0], original_size[1], image_size)
  im = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode="L")
  if im.size != (w, h):
    im = im.resize((w, h), Image.Resampling.BILINEAR if max(im.size) < image_size
                   else Image.Resampling.LANCZOS, reducing_gap=3.0)
  return im


# ------------------------------------------------------------------------------- atlas

@functools.lru_cache(maxsize=None)
def load_atlas() -> dict[str, tuple[float, float, float, float]]:
  """{region: (x1, y1, x2, y2)} normalised atlas boxes of the 29 regions (atlas.json)."""
  path = os.path.join(os.path.dirname(__file__), "atlas.json")
  with open(path) as f:
    boxes = json.load(f)["boxes"]
  missing = [r for r in REGIONS if r not in boxes]
  if missing:
    raise ValueError(f"{path}: no atlas box for regions {missing}")
  return {r: tuple(float(v) for v in boxes[r]) for r in REGIONS}


def atlas_boxes(original_size: tuple[int, int]) -> dict[str, tuple[float, float, float, float]]:
  """Atlas boxes in original-image pixels for an image of (H, W) = original_size."""
  h, w = original_size
  return {r: (b[0] * w, b[1] * h, b[2] * w, b[3] * h) for r, b in load_atlas().items()}


def check_box(box: Sequence[float], original_size: tuple[int, int], file: str,
              region: str) -> tuple[float, float, float, float]:
  """Validate one (x1, y1, x2, y2) box in original pixels; raise Skip when it is unusable.

  Non-numeric, non-finite or inverted boxes are BAD_BOX; a box without any overlap with
  the image (it cannot belong to this image) is BOX_OUTSIDE_IMAGE. Partial overlap is
  fine (clipped later).
  """
  try:
    x1, y1, x2, y2 = (float(v) for v in box)
  except (TypeError, ValueError) as e:
    raise Skip(BAD_BOX, file, f"region {region!r}: box {box!r} is not 4 numbers") from e
  if not all(math.isfinite(v) for v in (x1, y1, x2, y2)) or x2 <= x1 or y2 <= y1:
    raise Skip(BAD_BOX, file, f"region {region!r}: box {box!r} needs finite x1 < x2, y1 < y2")
  h, w = original_size
  if x2 <= 0 or y2 <= 0 or x1 >= w or y1 >= h:
    raise Skip(BOX_OUTSIDE_IMAGE, file,
               f"region {region!r}: box {[x1, y1, x2, y2]} lies outside the {w}x{h} image")
  return x1, y1, x2, y2


# ------------------------------------------------------------------------------ features

def features() -> tfds.features.FeaturesDict:
  """The stored-example features (docs/interfaces.md §1)."""
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
      "study_id": tfds.features.Text(),
      "dicom_id": tfds.features.Text(),
      "subject_id": tfds.features.Text(),
      "region_source": tfds.features.Text(),
      "view_position": tfds.features.Text(),
      "sentences": tfds.features.Sequence(tfds.features.Text()),
      "caption": tfds.features.Text(),
      "tags": tfds.features.Tensor(shape=(len(TAGS),), dtype=np.int8),
      "chexpert": tfds.features.Tensor(shape=(len(CHEXPERT),), dtype=np.float32),
      "region_boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
      "region_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
      "region_sentence_index": tfds.features.Tensor(
          shape=(None, None), dtype=np.int32, encoding=tfds.features.Encoding.ZLIB),
      "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
  })


def parse_label(value: str | None) -> float:
  """A CheXpert CSV cell ('1.0', '0.0', '-1.0', '' ) -> float (NaN when empty)."""
  if value is None or str(value).strip() == "":
    return float("nan")
  v = float(value)
  if v not in (1.0, 0.0, -1.0):
    raise ValueError(f"CheXpert label {value!r} is not 1, 0, -1 or empty")
  return v


def assemble_example(*, file: str, report: str, image_path: str, image_size: int,
                     ids: Mapping[str, str], view_position: str = "",
                     boxes: Mapping[str, Sequence[float]] | None = None,
                     region_source: str = "none", anatomy: bool = True,
                     chexpert: np.ndarray | None = None, report_fallback: str = "none") -> dict:
  """Build one stored example (interfaces.md §1); raise Skip when it cannot be built.

  Args:
    file: the report's file name for messages (or "pairs.csv row N").
    report: raw report text (sections are extracted, then cleaned and parsed).
    image_path: the radiograph.
    image_size: longest side of the stored image.
    ids: `study_id`, `dicom_id`, `subject_id`.
    boxes: {region name: (x1, y1, x2, y2) in ORIGINAL-image pixels}, or None for the
      atlas. Names outside the 29 regions are ignored.
    region_source: stored as is ("imagenome" / "annotation"); "atlas" when boxes is None.
    anatomy: False stores no regions (R = 0).
    chexpert: float32[14] labels from the dataset's CSV, or None for the parser's.
    report_fallback: the text of a report with section headers but neither FINDINGS nor
      IMPRESSION (`reports.report_text`): "none" drops it (MIMIC-CXR, as MGCA/ASG do),
      "whole_text" keeps the whole text (image_text_csv: notes with `History:`, `Day 4:`).
  Returns the feature dict, with the image as a PIL image (PNG-encoded by tfds).
  """
  parsed = _parse(report, report_fallback)
  if not parsed.sentences:
    from asg_jax.data.reports import cleaning  # pylint: disable=import-outside-toplevel
    tokens = len(cleaning.ascii_tokens(report or ""))
    if tokens < MIN_REPORT_TOKENS:
      raise Skip(TOO_SHORT_REPORT, file, f"{tokens} word token(s) after cleaning; captions "
                 f"need at least {MIN_REPORT_TOKENS}")
    raise Skip(EMPTY_REPORT, file, f"no sentence of >= {MIN_REPORT_TOKENS} words left after "
               "sections + cleaning")
  pixels, original_size = read_image(image_path, target_size=image_size)
  image = resize_longest(pixels, original_size, image_size)
  w, h = image.size
  sy, sx = h / original_size[0], w / original_size[1]
  if not anatomy:
    region_source = "none"
  elif boxes is None:
    boxes, region_source = atlas_boxes(original_size), "atlas"
  region_boxes, region_ids, region_sents = [], [], []
  if anatomy:
    for region, sent_idx in parsed.regions.items():
      sent_idx = [int(s) for s in sent_idx if 0 <= s < len(parsed.sentences)]
      if region not in boxes or not sent_idx:
        continue
      x1, y1, x2, y2 = check_box(boxes[region], original_size, file, region)
      x1, x2 = np.clip([x1 * sx, x2 * sx], 0, w)
      y1, y2 = np.clip([y1 * sy, y2 * sy], 0, h)
      if (x2 - x1) * (y2 - y1) < 1.0:
        continue
      region_boxes.append((x1, y1, x2, y2))
      region_ids.append(REGION_INDEX[region])
      region_sents.append(sent_idx)
  width = max([len(s) for s in region_sents] + [1])
  rsi = np.full((len(region_sents), width), -1, np.int32)
  for i, s in enumerate(region_sents):
    rsi[i, :len(s)] = s
  if chexpert is None:
    chexpert = parsed.chexpert
  chexpert = np.asarray(chexpert, np.float32)
  if chexpert.shape != (len(CHEXPERT),):
    raise ValueError(f"{file}: chexpert labels need shape ({len(CHEXPERT)},), got {chexpert.shape}")
  return {
      "image": image,
      "study_id": str(ids.get("study_id", "")),
      "dicom_id": str(ids.get("dicom_id", "")),
      "subject_id": str(ids.get("subject_id", "")),
      "region_source": region_source,
      "view_position": view_position or "",
      "sentences": list(parsed.sentences),
      "caption": " ".join(parsed.sentences),
      "tags": np.asarray(parsed.tags, np.int8),
      "chexpert": chexpert,
      "region_boxes": np.asarray(region_boxes, np.float32).reshape(-1, 4),
      "region_ids": np.asarray(region_ids, np.int32),
      "region_sentence_index": rsi,
      "original_size": np.asarray(original_size, np.int32),
  }


@functools.lru_cache(maxsize=256)
def _parse(report: str, fallback: str = "none"):
  """parse_report, cached (a study's report is shared by its images; never mutated).
  `fallback`: what `report_text` uses when the report has section headers but neither
  FINDINGS nor IMPRESSION ("none": nothing, the study is dropped)."""
  if fallback == "none":
    return parse_report(report)
  return parse_report(report_text(report, fallback=fallback) or "", sections=False)


# --------------------------------------------------------------------------------- CSVs

def open_text(path: str):
  """Open a text file, transparently gunzipping `.gz`."""
  if path.endswith(".gz"):
    return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
  return open(path, encoding="utf-8", newline="")


def find_file(manual_dir: str, name: str, what: str) -> str:
  """`manual_dir/name` or `manual_dir/name.gz`; a clear error naming the file otherwise."""
  for candidate in (name, name + ".gz"):
    path = os.path.join(manual_dir, candidate)
    if os.path.isfile(path):
      return path
  raise FileNotFoundError(
      f"required file {os.path.join(manual_dir, name)} (or {name}.gz) not found: expected "
      f"{what}. See the builder's MANUAL_DOWNLOAD_INSTRUCTIONS / docs/data.md.")


def read_csv(path: str, required: Iterable[str]) -> list[dict]:
  """Rows of a CSV as dicts; a clear error when a required column is missing."""
  with open_text(path) as f:
    reader = csv.DictReader(f)
    header = [h for h in (reader.fieldnames or [])]
    missing = [c for c in required if c not in header]
    if missing:
      raise ValueError(f"{path}: missing column(s) {missing}; expected at least "
                       f"{list(required)}, found header {header}")
    return list(reader)


# ------------------------------------------------------------------------------ builder

@dataclasses.dataclass(eq=False)
class ChestConfig(tfds.core.BuilderConfig):
  """A builder variant: stored longest side and whether regions are stored."""
  image_size: int = 256
  anatomy: bool = True
  frontal_only: bool = True   # image_text_csv: filter rows naming a non-frontal view


_SIZED_NAME = re.compile(r"^(?P<base>[a-z_]+?)_(?P<size>[0-9]+)$")


class SkipLog:
  """Skips per split and reason (+ the first MAX_LOGGED_SKIPS files), filtered counts."""

  def __init__(self):
    self.splits: dict[str, dict] = {}
    self.skipped_files: list[dict] = []
    self.corrupt_kinds: dict[str, int] = {}
    self.extra: dict = {}          # builder-specific entries of build_summary.json

  def _split(self, split: str) -> dict:
    return self.splits.setdefault(split, {"examples": 0, "skipped": {}, "filtered": {}})

  def example(self, split: str) -> None:
    self._split(split)["examples"] += 1

  def skip(self, split: str, skip: Skip) -> None:
    counts = self._split(split)["skipped"]
    counts[skip.reason] = counts.get(skip.reason, 0) + 1
    kind = skip.detail.split(":", 1)[0] if skip.reason == CORRUPT_IMAGE else ""
    if kind in images.KINDS:   # what was wrong with an unreadable file, counted too
      self.corrupt_kinds[kind] = self.corrupt_kinds.get(kind, 0) + 1
    # one line per file only in the debug log: a partial release (1,000 of NIH's 112,120
    # images) would print 111,120 lines; the build prints one summary line instead
    logger.debug("skipping example (%s): %s %s", skip.reason, skip.file, skip.detail)
    if len(self.skipped_files) < MAX_LOGGED_SKIPS:
      self.skipped_files.append({"split": split, "reason": skip.reason, "file": skip.file,
                                 "detail": skip.detail})

  def filtered(self, split: str, why: str, n: int = 1) -> None:
    counts = self._split(split)["filtered"]
    counts[why] = counts.get(why, 0) + n

  def summary(self) -> dict:
    total: dict[str, int] = {}
    for s in self.splits.values():
      for k, v in s["skipped"].items():
        total[k] = total.get(k, 0) + v
    filtered: dict[str, int] = {}
    for s in self.splits.values():
      for k, v in s["filtered"].items():
        filtered[k] = filtered.get(k, 0) + v
    return {"splits": self.splits, "skipped_total": total,
            "num_skipped": sum(total.values()), "corrupt_image_kinds": dict(self.corrupt_kinds),
            "filtered_total": filtered, **self.extra, "skipped_files": self.skipped_files}


def summary_line(name: str, summary: Mapping, path: str = "") -> str:
  """The ONE console line of a build: examples per split, skips and filtered rows by reason
  (largest first), where the per-file list is."""
  built = {k: v["examples"] for k, v in summary["splits"].items() if v["examples"]}
  parts = [f"{name}: built {sum(built.values()):,} examples (" + ", ".join(
      f"{k} {v:,}" for k, v in sorted(built.items())) + ")"]
  def counts(d):
    return ", ".join(f"{k} {v:,}" for k, v in sorted(d.items(), key=lambda kv: (-kv[1], kv[0])))
  if summary.get("num_skipped"):
    kinds = summary.get("corrupt_image_kinds") or {}
    parts.append(f"skipped {summary['num_skipped']:,} ({counts(summary['skipped_total'])}"
                 + (f"; corrupt: {counts(kinds)}" if kinds else "") + ")")
  else:
    parts.append("skipped none")
  if summary.get("filtered_total"):
    parts.append(f"filtered {sum(summary['filtered_total'].values()):,} "
                 f"({counts(summary['filtered_total'])})")
  return "; ".join(parts) + (f"; details in {path}" if path else "")


class ChestBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the chest X-ray builders: shared features, sized configs, build summary.

  `image_size=N` (constructor keyword) or a config name `<config>_<N>` (e.g.
  `mimic_cxr/default_384`) selects another stored size.
  """

  def __init__(self, *, config=None, image_size: int | None = None, **kwargs):
    if isinstance(config, str):
      m = _SIZED_NAME.match(config)
      if m and m.group("base") in {c.name for c in self.BUILDER_CONFIGS}:
        config, image_size = m.group("base"), int(m.group("size"))
    if image_size is not None:
      if int(image_size) < 8:
        raise ValueError(f"{self.name}: image_size must be >= 8, got {image_size}")
      base = config if isinstance(config, tfds.core.BuilderConfig) else next(
          c for c in self.BUILDER_CONFIGS if c.name == (config or self.BUILDER_CONFIGS[0].name))
      if int(image_size) != base.image_size:
        config = dataclasses.replace(base, name=f"{base.name}_{int(image_size)}",
                                     image_size=int(image_size),
                                     description=f"{base.description} (image_size={image_size})")
      else:
        config = base
    super().__init__(config=config, **kwargs)
    self.skips = SkipLog()

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=self.__doc__, features=features())

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):  # pylint: disable=arguments-differ
    self.skips = SkipLog()
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config, **kwargs)
    self.write_summary(self.data_dir)

  def write_summary(self, directory: str) -> dict:
    """Write build_summary.json into `directory` (the dataset version dir) and log it."""
    summary = {"builder": self.name, "config": self.builder_config.name,
               "version": str(self.version), "image_size": self.builder_config.image_size,
               "anatomy": self.builder_config.anatomy, **self.skips.summary()}
    path = os.path.join(directory, SUMMARY_FILE)
    with open(path, "w") as f:
      json.dump(summary, f, indent=1)
    final = re.sub(r"incomplete\.[A-Za-z0-9]+_", "", path)   # where tfds moves the build
    line = summary_line(f"{self.name}/{self.builder_config.name}", summary, final)
    if summary["num_skipped"]:
      logger.warning("%s", line)
    else:
      logger.info("%s", line)
    return summary

  def guarded(self, split: str, key: str, make) -> Iterable[tuple[str, dict]]:
    """Yield (key, make()) unless make() raises Skip (then count and log it)."""
    try:
      example = make()
    except Skip as skip:
      self.skips.skip(split, skip)
      return
    self.skips.example(split)
    yield key, example


def read_summary(data_dir: str, name: str, config: str, version: str) -> dict:
  """Load `<data_dir>/<name>/<config>/<version>/build_summary.json`."""
  with open(os.path.join(data_dir, name, config, version, SUMMARY_FILE)) as f:
    return json.load(f)
