"""Reading the downstream builders' examples (interfaces.md §1b) for the transfer evaluators.

    for batch in downstream_input.batches("cxr_chexpert/demo", "test", data_dir=...,
                                          resize=128, image_size=112, normalization="half"):
      batch["image"]      # float32 [B, S, S, 3]: the EVALUATION geometry of training
      batch["labels"]     # float32 [B, C] in info.metadata["class_names"] order
      batch["image_id"]   # list of B str
      batch["valid"]      # bool [B]: False on the padding rows of the last batch

The geometry is exactly the one of pre-training's evaluation and of
a pre-trained model's `Pretrained.preprocess_images` (asg_jax/data/geometry.py): longest side to
`resize`, centred zero pad, centre crop `image_size`, then the configured normalisation
(grey replicated to 3 channels). Cropping runs in tf.data on uint8, the normalisation on
the host (`geometry.normalize_numpy`), as the pre-training pipeline does. TensorFlow stays
on the CPU.

Batches have a fixed size (the last one padded with zero images, `valid` False) so a jitted
encoder compiles once. `ids` restricts a split to those image ids (a label fraction from
`asg_jax.data.builders.fraction_ids`).
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from asg_jax.data import geometry


def builder(dataset: str, data_dir: str | None):
  """The prepared tfds builder `dataset` ("name" or "name/config") in `data_dir`.

  Raises FileNotFoundError when it is not built there (the downstream builders need their
  manual_dir: docs/data.md "Downstream datasets")."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import asg_jax.data.builders  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  b = tfds.builder(dataset, data_dir=data_dir or None)
  if not b.is_prepared():
    raise FileNotFoundError(
        f"downstream dataset {dataset!r} is not built in {b.data_dir}: build it from its "
        f"manual download with `python -m asg_jax.evaluate ... --config.manual_dir=PATH` "
        f"(the folder in the layout of docs/data.md \"Downstream datasets\"; built into "
        f"--config.data_dir), or from Python with asg_jax.data.builders.build.prepare("
        f"{dataset.split('/')[0]!r}, ..., manual_dir=PATH)")
  return b


def class_names(b) -> list[str]:
  return list(b.info.metadata["class_names"])


def num_examples(b, split: str) -> int:
  return int(b.info.splits[split].num_examples)


def _cropped(b, split: str, *, resize: int, image_size: int, ids: Sequence[str] | None):
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  if split not in b.info.splits:
    raise KeyError(f"{b.info.full_name}: no split {split!r} (built: {sorted(b.info.splits)})")
  ds = b.as_dataset(split=split, shuffle_files=False)
  if ids is not None:
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(list(ids) or [""], tf.string),
                                            tf.ones([max(1, len(ids))], tf.int32)), 0)
    if not ids:
      return ds.take(0)
    ds = ds.filter(lambda ex: table.lookup(ex["image_id"]) > 0)

  def crop(ex):
    image, _, _ = geometry.crop(ex["image"], tf.zeros((0, 4), tf.float32), resize=resize,
                                image_size=image_size, train=False)
    return {"image": image, "labels": ex["labels"], "image_id": ex["image_id"]}
  return ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE)


def batches(dataset: str, split: str, *, data_dir: str | None, resize: int, image_size: int,
            normalization: str, batch_size: int = 64, ids: Sequence[str] | None = None,
            max_examples: int = 0) -> Iterator[dict]:
  """Fixed-size host batches of one split (module docstring). `max_examples` > 0 keeps the
  first that many examples (in the stored order)."""
  b = dataset if not isinstance(dataset, str) else builder(dataset, data_dir)
  ds = _cropped(b, split, resize=resize, image_size=image_size, ids=ids)
  if max_examples > 0:
    ds = ds.take(max_examples)
  ds = ds.batch(batch_size).prefetch(2)
  num_classes = len(class_names(b))
  for ex in ds.as_numpy_iterator():
    n = len(ex["image_id"])
    image = geometry.normalize_numpy(ex["image"], normalization)
    labels = np.asarray(ex["labels"], np.float32).reshape(n, num_classes)
    valid = np.ones(batch_size, bool)
    if n < batch_size:
      pad = batch_size - n
      image = np.concatenate([image, np.zeros((pad,) + image.shape[1:], image.dtype)])
      labels = np.concatenate([labels, np.zeros((pad, num_classes), np.float32)])
      valid[n:] = False
    yield {"image": image, "labels": labels, "valid": valid,
           "image_id": [i.decode("utf-8") for i in ex["image_id"]]}


def load_split(dataset: str, split: str, **kwargs) -> dict:
  """A whole split in memory: `image` float32 [N, S, S, 3], `labels` [N, C], `image_id`
  (for small sets: 5×200, tests). kwargs as `batches`."""
  images, labels, ids = [], [], []
  for batch in batches(dataset, split, **kwargs):
    v = batch["valid"]
    images.append(batch["image"][v])
    labels.append(batch["labels"][v])
    ids += [i for i, ok in zip(batch["image_id"], v) if ok]
  if not ids:
    raise ValueError(f"{dataset}/{split}: no example")
  return {"image": np.concatenate(images), "labels": np.concatenate(labels), "image_id": ids}


def select_rows(image_ids: Iterable[str], wanted: Iterable[str]) -> np.ndarray:
  """int positions of `wanted` ids in `image_ids` (sorted by position); KeyError naming a
  wanted id that is absent."""
  pos = {i: k for k, i in enumerate(image_ids)}
  missing = [w for w in wanted if w not in pos]
  if missing:
    raise KeyError(f"{len(missing)} wanted image ids not in the split, e.g. {missing[:3]}")
  return np.sort(np.asarray([pos[w] for w in wanted], np.int64))
