"""Where stored examples come from: an `ExampleSource` (shards of raw records + a decoder).

`open_split` is the only function that touches tfds: a prepared split becomes an
`ExampleSource` over its tfrecord files (`ExampleSource.from_tfrecords`); tests and
benchmarks build one over an in-memory `tf.data.Dataset` (`ExampleSource.from_dataset`).
How the records are read (epochs, file order, shuffle) is the stream's business
(`asg_jax.data.pipeline.stream`); the pipeline as a whole is described in
`asg_jax.data.pipeline`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import tensorflow as tf

from asg_jax.data.pipeline.spec import InputSpec

# the stored features (interfaces.md §1) that the stream reads
STORED_KEYS = ("image", "sentences", "tags", "chexpert", "region_boxes", "region_ids",
               "region_sentence_index")


@dataclasses.dataclass(frozen=True)
class Shard:
  """Records `[skip, skip + take)` of one file hold split positions `[start, start + take)`."""
  file: str
  skip: int
  take: int
  start: int


@dataclasses.dataclass(frozen=True)
class ExampleSource:
  """The examples of (a part of) a split: shards of raw records plus a decoder.

  Attributes:
    shards: consecutive shards in split order.
    read: `(file, skip, take)` scalar tensors -> `tf.data.Dataset` of raw records.
    decode: raw record -> dict of stored features (§1); runs after any skipping.
    split_size: number of examples of the whole split (not only these shards).
    name: for error messages.
    decode_text: like `decode` but may leave the image undecoded (for `read_captions`).
  """
  shards: tuple[Shard, ...]
  read: Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.data.Dataset]
  decode: Callable[[Any], dict]
  split_size: int
  name: str = "examples"
  decode_text: Callable[[Any], dict] | None = None

  @property
  def num_examples(self) -> int:
    return sum(s.take for s in self.shards)

  def select(self, start: int, stop: int) -> "ExampleSource":
    """The examples at split positions `[start, stop)`."""
    shards = []
    for s in self.shards:
      lo, hi = max(start, s.start), min(stop, s.start + s.take)
      if lo < hi:
        shards.append(Shard(s.file, s.skip + lo - s.start, hi - lo, lo))
    return dataclasses.replace(self, shards=tuple(shards))

  @classmethod
  def from_dataset(cls, dataset: tf.data.Dataset, num_examples: int, num_shards: int = 1,
                   name: str = "in-memory examples",
                   decode: Callable[[Any], dict] | None = None) -> "ExampleSource":
    """A source over a `tf.data.Dataset` of stored examples (tests, benchmarks).

    The dataset's `num_examples` elements are cut into `num_shards` consecutive shards
    (read with `skip`/`take`), so file-order shuffling is exercised as with tfrecords.
    """
    if num_examples <= 0:
      raise ValueError(f"{name}: no examples")
    num_shards = max(1, min(num_shards, num_examples))
    bounds = [i * num_examples // num_shards for i in range(num_shards + 1)]
    shards = tuple(Shard(name, lo, hi - lo, lo) for lo, hi in zip(bounds, bounds[1:]))
    return cls(shards=shards, read=lambda f, skip, take: dataset.skip(skip).take(take),
               decode=decode or (lambda x: x), split_size=num_examples, name=name)

  @classmethod
  def from_tfrecords(cls, files: Sequence[tuple[str, int]], features,
                     name: str = "tfrecords") -> "ExampleSource":
    """A source over tfrecord files of serialized tfds examples.

    Args:
      files: `(path, num_records)` in split order.
      features: the tfds `FeaturesDict` that serialized them.
    """
    shards, start = [], 0
    for path, count in files:
      shards.append(Shard(str(path), 0, int(count), start))
      start += int(count)
    return cls(shards=tuple(shards), read=_read_tfrecord, decode=features.deserialize_example,
               split_size=start, name=name, decode_text=_text_decoder(features))


def _read_tfrecord(file, skip, take) -> tf.data.Dataset:
  return tf.data.TFRecordDataset(file).skip(skip).take(take)


def _text_decoder(features):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  if "image" not in features.keys():
    return features.deserialize_example
  skip = {"image": tfds.decode.SkipDecoding()}
  return lambda rec: features.deserialize_example(rec, decoders=skip)


def open_split(name: str, builder_config: str | None, data_dir: str | None, split: str
               ) -> ExampleSource:
  """The only function that touches tfds: a prepared split as an `ExampleSource`."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  try:
    # registers the project's builders
    import asg_jax.data.builders  # noqa: F401  pylint: disable=import-outside-toplevel
  except ImportError:
    pass
  try:
    builder = tfds.builder(name, config=builder_config or None, data_dir=data_dir or None)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot open tfds dataset {name!r} (config {builder_config!r}, data_dir "
                     f"{data_dir!r}): {e}") from e
  if not builder.is_prepared():
    raise FileNotFoundError(
        f"tfds dataset {name}/{builder_config} is not prepared in {builder.data_dir}: build it "
        f"first (`tfds build` with --manual_dir, or set config.data.manual_dir)")
  splits = builder.info.splits
  try:
    instructions = splits[split].file_instructions   # also "train[:10%]"-style slices
  except (KeyError, ValueError, AssertionError) as e:
    raise ValueError(f"{name}/{builder_config} has no split {split!r}; it has "
                     f"{sorted(splits)}") from e
  fmt = str(getattr(builder.info, "file_format", "tfrecord")).lower()
  if "tfrecord" not in fmt:
    raise ValueError(f"{name}: file format {fmt} is not supported (tfrecord expected)")
  features = builder.info.features
  missing = [k for k in STORED_KEYS if k not in features.keys()]
  if missing:
    raise ValueError(f"tfds dataset {name} ({builder.data_dir}) lacks the stored feature(s) "
                     f"{missing}; interfaces.md §1 expects {list(STORED_KEYS)}")
  source = ExampleSource.from_tfrecords(
      [(fi.filename, fi.take) for fi in instructions], features, name=f"{name}/{split}")
  skips = [fi.skip for fi in instructions]
  shards = tuple(dataclasses.replace(s, skip=k) for s, k in zip(source.shards, skips))
  return dataclasses.replace(source, shards=shards)


def num_examples(spec: InputSpec, split: str) -> int:
  """Number of examples in `split` of the prepared tfds dataset `spec` names (its name,
  builder_config, data_dir), over all processes."""
  return open_split(spec.name, spec.builder_config, spec.data_dir, split).num_examples
