"""tfds builder `cxr_siim`: SIIM-ACR Pneumothorax Segmentation (train-rle.csv + DICOMs).

One example per distinct ImageId of train-rle.csv (an image with several pneumothoraces
has one row per region; "-1" = no pneumothorax). `mask` = the union of the image's rows,
each decoded as the competition encodes it (`downstream.rle_decode`: relative starts,
column-major, on the DICOM's Rows x Columns), then resized (nearest) onto the stored
image. labels `["Pneumothorax"]` = 1 when any row has a run-length code.

Split: MGCA's 70/15/15 (`train_test_split(test_size=0.3, random_state=0)`, then the rest
half/half into test/validation), applied to the distinct ImageIds in the order they first
appear in the CSV (MGCA splits the CSV ROWS, which can put one image's rows into two
splits; a difference only for images with several rows). MGCA's balanced training set
(all positives + as many negatives) is `downstream.balanced_ids(builder, "train")`.
image_id = ImageId; patient_id = the DICOM's PatientID.
"""
from __future__ import annotations

import csv
import os

import numpy as np
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream

RLE_CSV = "train-rle.csv"
IMAGE_DIR = "dicom-images-train"


def union_mask(codes: list[str], height: int, width: int, image_id: str) -> np.ndarray:
  """Union of the decoded rows; Skip(bad_mask) when one does not decode."""
  mask = np.zeros((height, width), np.uint8)
  for code in codes:
    try:
      mask |= downstream.rle_decode(code, height, width)
    except ValueError as e:
      raise chest_builder.Skip(downstream.BAD_MASK, image_id, str(e)) from e
  return mask


def dicom_patient_id(path: str) -> str:
  try:
    import pydicom  # pylint: disable=import-outside-toplevel
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    return str(getattr(ds, "PatientID", "") or "")
  except Exception:  # pylint: disable=broad-except
    return ""   # an unreadable file is reported by read_image


class CxrSiim(downstream.DownstreamBuilder):
  """SIIM-ACR Pneumothorax: label + union mask per image; 70/15/15 split (module docstring)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: union masks, split by image."}
  SEGMENTATION = True
  BUILDER_CONFIGS = [
      downstream.DownstreamConfig(name="default", image_size=256,
                                  description="train/validation/test, longest side 256"),
      downstream.DownstreamConfig(name="demo", image_size=128,
                                  description="the demo stand-in (asg_jax.data.demo.downstream)"),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
SIIM-ACR Pneumothorax Segmentation (Kaggle; the stage-1 train set as distributed), in the
manual_dir:

  {RLE_CSV}                          header "ImageId, EncodedPixels" (with the leading space);
                                     one row per pneumothorax region, "-1" for none
  {IMAGE_DIR}/<study>/<series>/<ImageId>.dcm   the DICOMs (any depth below {IMAGE_DIR}/)
"""

  def class_names(self):
    return ("Pneumothorax",)

  def _split_generators(self, dl_manager):
    manual_dir = self.manual(dl_manager)
    path = os.path.join(manual_dir, RLE_CSV)
    if not os.path.isfile(path):
      raise downstream.missing_file(self.name, path, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    image_dir = os.path.join(manual_dir, IMAGE_DIR)
    if not os.path.isdir(image_dir):
      raise downstream.missing_file(self.name, image_dir + os.sep, self.MANUAL_DOWNLOAD_INSTRUCTIONS)
    with chest_builder.open_text(path) as f:
      reader = csv.DictReader(f)
      header = [(h or "").strip() for h in (reader.fieldnames or [])]
      if not {"ImageId", "EncodedPixels"} <= set(header):
        raise ValueError(f"{path}: expected the header 'ImageId, EncodedPixels', found "
                         f"{reader.fieldnames}")
      rows = downstream.strip_header(list(reader))
    codes: dict[str, list[str]] = {}
    for number, row in enumerate(rows, start=2):
      image_id = row.get("ImageId") or ""
      if not image_id or row.get("EncodedPixels") is None:
        self.skips.skip("none", chest_builder.Skip(chest_builder.MISSING_COLUMN, f"{path} line {number}",
                                            "no ImageId / EncodedPixels"))
        continue
      codes.setdefault(image_id, []).append(row["EncodedPixels"])
    images = {os.path.splitext(n)[0]: p for n, p in downstream.index_files(image_dir, (".dcm",)).items()}
    split = downstream.split_70_15_15(list(codes), self.builder_config.seed)
    return self.splits({s: self._generate(s, ids, codes, images) if ids else None
                        for s, ids in split.items()})

  def _generate(self, split: str, ids: list[str], codes: dict, images: dict):
    for image_id in ids:
      def make(image_id=image_id):
        rows = codes[image_id]
        if image_id not in images:
          raise chest_builder.Skip(chest_builder.MISSING_IMAGE, image_id, f"no {image_id}.dcm below {IMAGE_DIR}/")
        positive = any(c.strip() not in ("", "-1") for c in rows)
        return self.make_example(
            image_path=images[image_id], image_id=image_id,
            patient_id=dicom_patient_id(images[image_id]), labels=[float(positive)],
            mask_fn=lambda size: union_mask(rows, size[0], size[1], image_id))
      yield from self.guarded(split, image_id, make)
