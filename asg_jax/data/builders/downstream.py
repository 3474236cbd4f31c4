"""Shared parts of the downstream tfds builders (`cxr_chexpert`, `cxr_nih14`, `cxr_rsna`,
`cxr_siim`, `cxr_covidx`; docs/data.md "Downstream datasets", docs/interfaces.md §1b).

* the downstream stored-example features: `image` uint8 [H, W, 1] (longest side
  `image_size`), `image_id` (the id exactly as the label file names it), `patient_id`,
  `labels` float32 [C] (order: `info.metadata["class_names"]`), `original_size`;
  segmentation sets add `mask` uint8 [H, W, 1] in {0, 1} aligned with `image`;
* the split rules of the papers' code, reproduced without pandas / scikit-learn:
  `train_test_split_positions` is sklearn's `train_test_split(shuffle=True, random_state=s)`
  and `sample_positions` is pandas' `df.sample(n, random_state=s)` /
  `np.random.RandomState(s).choice(n, k, replace=False)`;
* the SIIM-ACR run-length code (relative starts, column-major) and box masks;
* `fraction_ids` — the 1 % / 10 % / 100 % label fractions, stable across builds and
  machines (SHA-256 rank of the image id), and `balanced_ids` (SIIM's positives + as many
  negatives);
* `DownstreamBuilder`, their base class: the skip bookkeeping and `build_summary.json` of
  `mimic_cxr`, plus `example_index.json` (the image ids and labels of every built example).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from typing import Callable, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from asg_jax.data.builders import chest_builder
from asg_jax.data.reports.vocabulary import load_json

CHEXPERT_5: tuple[str, ...] = tuple(load_json("vocab.json")["chexpert_competition_5"])
NIH_14: tuple[str, ...] = tuple(load_json("vocab.json")["nih_chestxray14_classes"])
INDEX_FILE = "example_index.json"

# Skip reasons added by the downstream builders (besides chest_builder.SKIP_REASONS).
BAD_MASK = "bad_mask"              # a run-length code that does not decode onto the image
MISSING_LABEL = "missing_label"    # an image named by a split list without a label row
DOWNSTREAM_SKIP_REASONS = (chest_builder.MISSING_IMAGE, chest_builder.CORRUPT_IMAGE, chest_builder.MISSING_COLUMN,
                           chest_builder.BAD_VALUE, chest_builder.BAD_BOX, BAD_MASK, MISSING_LABEL)


# ------------------------------------------------------------------------- split rules

def train_test_split_positions(n: int, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, test) positions of sklearn `train_test_split(range(n), test_size, random_state=seed)`.

  sklearn: n_test = ceil(test_size * n), n_train = n - n_test, permutation =
  RandomState(seed).permutation(n); test = permutation[:n_test], train = the next n_train.
  """
  if not 0.0 < test_size < 1.0:
    raise ValueError(f"test_size must be in (0, 1), got {test_size}")
  n_test = int(math.ceil(test_size * n))
  perm = np.random.RandomState(seed).permutation(n)
  return perm[n_test:], perm[:n_test]


def split_70_15_15(ids: Sequence[str], seed: int = 0) -> dict[str, list[str]]:
  """MGCA's RSNA / SIIM split: `train, rest = train_test_split(ids, test_size=0.3, seed)`,
  then `test, validation = train_test_split(rest, test_size=0.5, seed)`."""
  ids = list(ids)
  if len(ids) < 3:
    return {"train": ids, "validation": [], "test": []}
  train, rest = train_test_split_positions(len(ids), 0.15 * 2, seed)
  rest_ids = [ids[i] for i in rest]
  test, valid = train_test_split_positions(len(rest_ids), 0.5, seed)
  return {"train": [ids[i] for i in train], "validation": [rest_ids[i] for i in valid],
          "test": [rest_ids[i] for i in test]}


def patient_holdout(patients: Iterable[str], fraction: float, seed: int = 0) -> set[str]:
  """The held-out patients: `train_test_split(sorted unique patients, test_size=fraction,
  random_state=seed)`'s test part (numeric ids sorted as numbers)."""
  unique = sorted(set(patients), key=lambda p: (0, int(p), "") if p.isdigit() else (1, 0, p))
  if len(unique) < 2:
    return set()
  _, held = train_test_split_positions(len(unique), fraction, seed)
  return {unique[i] for i in held}


def sample_positions(n: int, k: int, seed: int) -> np.ndarray:
  """pandas `df.sample(n=k, random_state=seed)` positions (all n, shuffled, when k >= n)."""
  return np.random.RandomState(seed).permutation(n)[:min(k, n)]


# ----------------------------------------------------------------------- masks and RLE

def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
  """SIIM-ACR run-length code -> uint8 [height, width] in {0, 1}.

  The competition's `mask_functions.rle2mask` (+ the `.T` its users apply): pairs
  `start length`, each start RELATIVE to the end of the previous run, over the pixels in
  COLUMN-MAJOR order (pixel (row y, column x) is number x * height + y). "-1" or "" is an
  empty mask. Raises ValueError when the code is malformed or runs past the image.
  """
  text = (rle or "").strip()
  mask = np.zeros(height * width, np.uint8)
  if text in ("", "-1"):
    return mask.reshape(width, height).T.copy()
  try:
    values = [int(v) for v in text.split()]
  except ValueError as e:
    raise ValueError(f"run-length code has a non-integer token: {e}") from e
  if len(values) % 2:
    raise ValueError(f"run-length code has an odd number ({len(values)}) of values")
  pos = 0
  for start, length in zip(values[0::2], values[1::2]):
    if start < 0 or length <= 0:
      raise ValueError(f"run-length pair ({start}, {length}) needs start >= 0, length > 0")
    pos += start
    if pos + length > mask.size:
      raise ValueError(f"run ends at pixel {pos + length} > {mask.size} = {height}x{width}")
    mask[pos:pos + length] = 1
    pos += length
  return mask.reshape(width, height).T.copy()


def rle_encode(mask: np.ndarray) -> str:
  """Inverse of `rle_decode` (the competition's mask2rle): "-1" for an empty mask."""
  flat = (np.asarray(mask) > 0).T.reshape(-1).astype(np.int8)
  if not flat.any():
    return "-1"
  edges = np.diff(np.concatenate([[0], flat, [0]]))
  starts, ends = np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0]
  out, prev_end = [], 0
  for s, e in zip(starts, ends):
    out += [int(s - prev_end), int(e - s)]
    prev_end = e
  return " ".join(str(v) for v in out)


def box_mask(boxes: Iterable[Sequence[float]], height: int, width: int) -> np.ndarray:
  """Union of (x1, y1, x2, y2) boxes (original pixels) as uint8 [height, width] in {0, 1}:
  pixel (y, x) is inside when round(x1) <= x < round(x2) and round(y1) <= y < round(y2)."""
  mask = np.zeros((height, width), np.uint8)
  for x1, y1, x2, y2 in boxes:
    c1, c2 = max(0, int(round(x1))), min(width, int(round(x2)))
    r1, r2 = max(0, int(round(y1))), min(height, int(round(y2)))
    if c2 > c1 and r2 > r1:
      mask[r1:r2, c1:c2] = 1
  return mask


def resize_mask(mask: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
  """{0, 1} mask at original size -> uint8 [h, w, 1] at the stored size (nearest neighbour)."""
  h, w = size_hw
  im = Image.fromarray(np.ascontiguousarray(mask, np.uint8), mode="L")
  if im.size != (w, h):
    im = im.resize((w, h), Image.Resampling.NEAREST)
  return np.asarray(im, np.uint8)[:, :, None]


# ------------------------------------------------------------------------ label fractions

def fraction_count(n: int, fraction: float) -> int:
  """How many of n training examples a label fraction keeps: n for fraction 1, else
  max(1, floor(fraction * n + 0.5)) (round half up; 0 when n = 0)."""
  if not 0.0 < fraction <= 1.0:
    raise ValueError(f"fraction must be in (0, 1], got {fraction}")
  if n == 0 or fraction >= 1.0:
    return n
  return max(1, int(math.floor(fraction * n + 0.5)))


def _rank(image_id: str, seed: int) -> str:
  return hashlib.sha256(f"{seed}:{image_id}".encode("utf-8")).hexdigest()


def select_fraction(ids: Iterable[str], fraction: float, seed: int = 42) -> list[str]:
  """The `fraction_count` ids of lowest SHA-256(f"{seed}:{id}") (sorted): independent of
  the order of `ids`, of the machine and of the build; nested (1 % ⊂ 10 % ⊂ 100 %); an id
  missing from one build shifts the selection by at most that one id."""
  ids = sorted(set(ids))
  k = fraction_count(len(ids), fraction)
  return sorted(sorted(ids, key=lambda i: (_rank(i, seed), i))[:k])


def read_index(builder) -> dict[str, dict[str, list]]:
  """{split: {"image_id": [...], "labels": [[...], ...]}} of a built downstream dataset.

  From `example_index.json` (written by the build), else by reading the split's records
  (images not decoded)."""
  path = os.path.join(os.fspath(builder.data_dir), INDEX_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      return json.load(f)["splits"]
  out = {}
  skip = {k: tfds.decode.SkipDecoding() for k in ("image", "mask") if k in builder.info.features}
  for split in builder.info.splits:
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=skip or None)
    ids, labels = [], []
    for ex in tfds.as_numpy(ds):
      ids.append(ex["image_id"].decode("utf-8"))
      labels.append([float(v) for v in ex["labels"]])
    out[split] = {"image_id": ids, "labels": labels}
  return out


def fraction_ids(builder, split: str = "train", fraction: float = 1.0, seed: int = 42) -> list[str]:
  """The image ids (sorted) of a label fraction of `split` of a BUILT downstream dataset.

  `builder`: a prepared tfds builder (e.g. `tfds.builder("cxr_chexpert", data_dir=...)`).
  Rule: `select_fraction` — the `fraction_count(n, fraction)` ids whose SHA-256 of
  f"{seed}:{image_id}" is lowest. Use as `ds.filter(lambda ex: tf.reduce_any(ex["image_id"]
  == ids))` or through a lookup table.
  """
  index = read_index(builder)
  if split not in index:
    raise KeyError(f"{builder.name}: no split {split!r} (built: {sorted(index)})")
  return select_fraction(index[split]["image_id"], fraction, seed)


def balanced_ids(builder, split: str = "train", seed: int = 42, label: int = 0) -> list[str]:
  """All positive images (labels[label] > 0.5) plus as many negatives, chosen by the
  SHA-256 rank of the id (MGCA's SIIM training set, made reproducible); sorted."""
  index = read_index(builder)[split]
  pos = [i for i, l in zip(index["image_id"], index["labels"]) if l[label] > 0.5]
  neg = [i for i, l in zip(index["image_id"], index["labels"]) if l[label] <= 0.5]
  neg = sorted(neg, key=lambda i: (_rank(i, seed), i))[:len(pos)]
  return sorted(pos + neg)


# --------------------------------------------------------------------------- the builder

@dataclasses.dataclass(eq=False)
class DownstreamConfig(chest_builder.ChestConfig):
  """A downstream builder variant (the builder's docstring says which fields it reads)."""
  anatomy: bool = False
  subset: str = ""                  # "" or "5x200" (cxr_chexpert)
  validation_size: int = 5000       # cxr_chexpert: random frontal training images
  validation_fraction: float = 0.1  # cxr_nih14 / cxr_covidx: held-out patients
  per_task: int = 200               # 5x200 sets: images per task
  classes: tuple = ()               # cxr_covidx: the label names of the lists
  seed: int = 0                     # the split seed of the papers' code


def missing_file(builder_name: str, path: str, instructions: str) -> FileNotFoundError:
  return FileNotFoundError(f"{builder_name}: required file {path} not found. Expected layout "
                           f"of the manual_dir:\n{instructions}")


def strip_header(rows: list[dict]) -> list[dict]:
  """CSV rows with stripped column names and values (SIIM's ' EncodedPixels')."""
  return [{(k or "").strip(): (v.strip() if isinstance(v, str) else v) for k, v in r.items()}
          for r in rows]


def index_files(root: str, suffixes: tuple[str, ...]) -> dict[str, str]:
  """{file name: path} of every file below `root` ending in `suffixes` (first in sorted
  walk order wins when a name repeats)."""
  out: dict[str, str] = {}
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for name in sorted(filenames):
      if name.lower().endswith(suffixes) and name not in out:
        out[name] = os.path.join(dirpath, name)
  return out


class DownstreamBuilder(chest_builder.ChestBuilder, skip_registration=True):
  """Base of the downstream builders: features, `build_summary.json`, `example_index.json`."""

  SEGMENTATION = False
  BOXES = False

  def class_names(self) -> tuple[str, ...]:
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    feats = {
        "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
        "image_id": tfds.features.Text(),
        "patient_id": tfds.features.Text(),
        "labels": tfds.features.Tensor(shape=(len(self.class_names()),), dtype=np.float32),
        "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32),
    }
    if self.SEGMENTATION:
      feats["mask"] = tfds.features.Image(shape=(None, None, 1), encoding_format="png")
    if self.BOXES:
      feats["boxes"] = tfds.features.Tensor(shape=(None, 4), dtype=np.float32)
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=tfds.features.FeaturesDict(feats),
        metadata=tfds.core.MetadataDict(class_names=list(self.class_names())))

  def _download_and_prepare(self, dl_manager, download_config=None, **kwargs):  # pylint: disable=arguments-differ
    self.built_index: dict[str, dict[str, list]] = {}
    super()._download_and_prepare(dl_manager=dl_manager, download_config=download_config, **kwargs)
    for entry in self.built_index.values():   # sorted by id: independent of build order
      order = sorted(range(len(entry["image_id"])), key=lambda i: entry["image_id"][i])
      entry["image_id"] = [entry["image_id"][i] for i in order]
      entry["labels"] = [entry["labels"][i] for i in order]
    with open(os.path.join(self.data_dir, INDEX_FILE), "w") as f:
      json.dump({"builder": self.name, "config": self.builder_config.name,
                 "class_names": list(self.class_names()), "splits": self.built_index}, f)

  def _generate_examples(self, *args, **kwargs):   # the split generators are self._generate
    raise NotImplementedError(f"{self.name}: _split_generators returns the generators")

  def manual(self, dl_manager) -> str:
    manual_dir = os.fspath(dl_manager.manual_dir)
    if not os.path.isdir(manual_dir):
      raise FileNotFoundError(f"{self.name}: manual_dir {manual_dir} does not exist. Expected "
                              f"layout:\n{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return manual_dir

  def guarded(self, split: str, key: str, make: Callable[[], dict]):
    for k, example in super().guarded(split, key, make):
      entry = getattr(self, "built_index", {}).setdefault(split, {"image_id": [], "labels": []})
      entry["image_id"].append(example["image_id"])
      entry["labels"].append([float(v) for v in example["labels"]])
      yield k, example

  def splits(self, generators: dict[str, Iterable]) -> dict[str, Iterable]:
    """Drop empty splits (tfds needs >= 1 example per split); an error when none is left."""
    out = {s: g for s, g in generators.items() if g is not None}
    if not out:
      raise ValueError(f"{self.name}: no usable example found in the manual_dir")
    return out

  def make_example(self, *, image_path: str, image_id: str, patient_id: str,
                   labels: Sequence[float], mask_fn: Callable[[tuple[int, int]], np.ndarray] | None = None,
                   boxes: Sequence[Sequence[float]] | None = None) -> dict:
    """One stored example; raises Skip. `mask_fn(original (H, W)) -> {0,1} [H, W]`;
    `boxes` (x1, y1, x2, y2) in original pixels (stored scaled to the stored image)."""
    size = self.builder_config.image_size
    pixels, original = chest_builder.read_image(image_path, target_size=size)
    image = chest_builder.resize_longest(pixels, original, size)
    w, h = image.size
    example = {"image": np.asarray(image, np.uint8)[:, :, None], "image_id": image_id,
               "patient_id": patient_id, "labels": np.asarray(labels, np.float32),
               "original_size": np.asarray(original, np.int32)}
    if self.SEGMENTATION:
      mask = mask_fn(original) if mask_fn is not None else np.zeros(original, np.uint8)
      example["mask"] = resize_mask(mask, (h, w))
    if self.BOXES:
      sy, sx = h / original[0], w / original[1]
      example["boxes"] = np.asarray(
          [(b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in (boxes or [])],
          np.float32).reshape(-1, 4)
    return example
