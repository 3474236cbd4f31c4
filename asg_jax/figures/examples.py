"""The stored examples the figures draw, the model outputs of them, and their classes.

    examples = load_examples("workdir/demo", max_examples=200)     # the eval split, stored
    encoded = encode_examples(model, examples)                     # a `Pretrained`'s outputs
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

_NOT_A_CLASS = ("No Finding", "Support Devices")


def class_of(chexpert: np.ndarray) -> str:
  """A one-word class of a CheXpert-14 label row (vocab order, 1 = positive): its single
  positive finding, "No Finding" (none), or "Multiple"; Support Devices is not a class."""
  from asg_jax.data.reports import CHEXPERT  # pylint: disable=import-outside-toplevel
  found = _findings(chexpert, CHEXPERT)
  if not found:
    return "No Finding"
  return found[0] if len(found) == 1 else "Multiple"


def _findings(chexpert, names) -> tuple[str, ...]:
  row = np.asarray(chexpert, np.float64)
  return tuple(n for n, v in zip(names, row) if v == 1 and n not in _NOT_A_CLASS)


def same_findings(a: np.ndarray, b: np.ndarray) -> bool:
  """Whether two CheXpert rows have the same set of positive findings (retrieval colour)."""
  from asg_jax.data.reports import CHEXPERT  # pylint: disable=import-outside-toplevel
  return _findings(a, CHEXPERT) == _findings(b, CHEXPERT)


def load_examples(workdir: str, config=None, split: str | None = None,
                  max_examples: int = 200) -> list[dict]:
  """The first `max_examples` stored examples (interfaces.md §1) of `split` (default
  `config.data.eval_split`) of the workdir's dataset, in split order: `image` uint8
  `[H, W, 1]`, `sentences` list[str], `caption`, `region_boxes` `[R, 4]` (stored pixels),
  `region_ids` `[R]`, `region_sentence_index` `[R, S]`, `chexpert` `[14]`, `tags` `[40]`,
  `region_source` ("imagenome" / "annotation": the image's own boxes; "atlas" / "none").

  Raises:
    FileNotFoundError / ValueError: naming the dataset folder or split (not built yet).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from asg_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from asg_jax.data.pipeline import source as source_lib  # pylint: disable=import-outside-toplevel
  config = config or workdir_lib.read_config(workdir)
  dc = config.data
  data_dir = dc.data_dir or os.path.join(workdir, "data")
  src = source_lib.open_split(dc.name, dc.builder_config, data_dir, split or dc.eval_split)
  first = src.shards[0].start if src.shards else 0
  src = src.select(first, first + max_examples)
  out = []
  for shard in src.shards:
    ds = tf.data.TFRecordDataset(shard.file).skip(shard.skip).take(shard.take).map(src.decode)
    for ex in ds.as_numpy_iterator():
      sentences = [s.decode("utf-8") if isinstance(s, bytes) else str(s)
                   for s in ex["sentences"]]
      out.append({"image": np.asarray(ex["image"], np.uint8), "sentences": sentences,
                  "caption": " ".join(sentences),
                  "region_boxes": np.asarray(ex["region_boxes"], np.float32).reshape(-1, 4),
                  "region_ids": np.asarray(ex["region_ids"], np.int32).reshape(-1),
                  "region_sentence_index": np.asarray(ex["region_sentence_index"], np.int32),
                  "chexpert": np.asarray(ex["chexpert"], np.float32),
                  "tags": np.asarray(ex["tags"], np.int32),
                  "region_source": _text(ex.get("region_source", b""))})
  return out


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _chunks(n: int, size: int):
  for start in range(0, n, size):
    yield start, min(start + size, n)


def encode_examples(model, examples: Sequence[Mapping], batch_size: int = 32) -> dict:
  """Model outputs of `examples` (stored images + captions) through `model` (a `Pretrained`):
  `image_emb [N,E]`, `patch_emb [N,M,E]`, `text_emb [N,E]`, `word_emb [N,L-1,E]`,
  `word_mask [N,L-1]`, `word_starts [N,L-1]` (character offset of each word slot in the
  cleaned caption). Batches are padded to `batch_size` (one compilation per encoder)."""
  from asg_jax import inference  # pylint: disable=import-outside-toplevel
  n = len(examples)
  if n == 0:
    raise ValueError("no examples to encode")
  batch_size = min(batch_size, n)
  parts: dict[str, list] = {}
  for lo, hi in _chunks(n, batch_size):
    idx = list(range(lo, hi)) + [hi - 1] * (batch_size - (hi - lo))
    images = [examples[i]["image"] for i in idx]
    captions = [inference.caption_of(examples[i]["caption"]) for i in idx]
    img = model.image_outputs(images)
    txt = model.text_outputs(captions)
    tokens = model.tokenizer.encode_batch(captions, return_word_starts=True)
    for key, value in (("image_emb", img["image_emb"]), ("patch_emb", img["patch_emb"]),
                       ("text_emb", txt["text_emb"]), ("word_emb", txt["word_emb"]),
                       ("word_mask", txt["word_mask"]), ("word_starts", tokens["word_starts"])):
      parts.setdefault(key, []).append(np.asarray(value)[: hi - lo])
  return {k: np.concatenate(v) for k, v in parts.items()}


def read_image(path: str) -> np.ndarray:
  """uint8 `[H, W]` grey pixels of a JPEG / PNG (8 or 16 bit) / DICOM file (the builders'
  reader, `asg_jax.data.builders.chest_builder.read_image`).

  Raises:
    FileNotFoundError / ValueError: naming the file.
  """
  from asg_jax.data.builders import chest_builder  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--images: {path} not found")
  try:
    pixels, _ = chest_builder.read_image(path)
  except chest_builder.Skip as e:
    raise ValueError(f"--images: cannot read {path}: {e}") from e
  return pixels
