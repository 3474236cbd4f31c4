"""The tf.data stream: raw records of an `ExampleSource` → padded, cropped tf.data batches.

`make_dataset` reads the records epoch by epoch (`_records`: a seeded file order + shuffle
for training), decodes each after any skipping (`_example_fn`: image decode, the geometry of
`geometry.py`, region selection and padding) and batches them; the host side
(`asg_jax.data.pipeline.host`) then tokenises and normalises. `captions_of` /
`read_captions` read the captions of a split in split order (the vocabulary is learnt from
them). See `asg_jax.data.pipeline` for the whole pipeline and its determinism rules.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from asg_jax.data import geometry
from asg_jax.data.pipeline.source import STORED_KEYS, ExampleSource, open_split
from asg_jax.data.pipeline.spec import InputSpec
from asg_jax.data.reports import vocabulary

# region_source values whose boxes are priors, not the image's own anatomy
PRIOR_REGION_SOURCES = ("atlas", "none")


def _example_fn(spec: InputSpec, *, decode, name: str, keep_ids: list[int], train: bool):
  """The per-record map: `(epoch, index, raw record)` → one padded example (see
  `make_dataset` for its features)."""
  keep_ids_t = tf.constant(list(keep_ids), tf.int32)
  max_regions, seed = spec.max_regions, spec.seed

  def fn(epoch, index, record):
    ex = decode(record)
    missing = [k for k in STORED_KEYS if k not in ex]
    if missing:
      raise ValueError(f"{name}: the stored examples lack the feature(s) {missing}; "
                       f"interfaces.md §1 expects {list(STORED_KEYS)}")
    image = ex["image"]
    if image.dtype == tf.string:
      image = tf.io.decode_image(image, channels=1, expand_animations=False)
    ex_seed = tf.random.experimental.stateless_fold_in(
        tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]), index)
    boxes = tf.reshape(tf.cast(ex["region_boxes"], tf.float32), [-1, 4])
    ids = tf.reshape(tf.cast(ex["region_ids"], tf.int32), [-1])
    rsi = tf.cast(ex["region_sentence_index"], tf.int32)
    rows = tf.shape(ids)[0]
    checks = [
        tf.debugging.assert_equal(tf.shape(boxes)[0], rows, message=(
            f"{name}: region_boxes and region_ids of a stored example have different "
            "numbers of rows")),
        tf.debugging.assert_equal(tf.shape(rsi)[0], rows, message=(
            f"{name}: region_sentence_index and region_ids of a stored example have "
            "different numbers of rows")),
    ]
    with tf.control_dependencies(checks):   # fail here, before any shape clash below
      boxes, ids = tf.identity(boxes), tf.identity(ids)
      rsi = tf.reshape(rsi, [rows, -1])
    image, boxes, visible = geometry.crop(
        image, boxes, resize=spec.resize, image_size=spec.image_size, train=train, seed=ex_seed,
        min_box_visibility=spec.min_box_visibility)
    wanted = tf.reduce_any(ids[:, None] == keep_ids_t[None, :], axis=1)
    kept = tf.where(tf.logical_and(wanted, visible))[:, 0][:max_regions]
    n = tf.shape(kept)[0]
    pad = max_regions - n
    sentences = tf.reshape(ex["sentences"], [-1])
    if "region_source" in ex:
      source = tf.reshape(ex["region_source"], [])
      annotated = tf.logical_not(tf.reduce_any(tf.equal(source, PRIOR_REGION_SOURCES)))
    else:
      annotated = tf.constant(True)
    lengths = tf.strings.length(sentences, unit="UTF8_CHAR")
    return {
        "image": image,
        "tags": tf.reshape(tf.cast(ex["tags"], tf.int32), [40]),
        "chexpert": tf.reshape(tf.cast(ex["chexpert"], tf.float32), [14]),
        "region_boxes": tf.ensure_shape(tf.pad(tf.gather(boxes, kept), [[0, pad], [0, 0]]),
                                        [max_regions, 4]),
        "region_ids": tf.ensure_shape(tf.pad(tf.gather(ids, kept), [[0, pad]],
                                             constant_values=-1), [max_regions]),
        "region_mask": tf.range(max_regions) < n,
        "region_sentences": tf.pad(tf.gather(rsi, kept), [[0, pad], [0, 0]], constant_values=-1),
        "sentence_starts": tf.cast(tf.cumsum(lengths + 1, exclusive=True), tf.int32),
        "caption": tf.strings.reduce_join(sentences, separator=" "),
        "boxes_annotated": annotated,
        "index": tf.cast(index, tf.int64),
    }
  return fn


_PADDING = {"region_sentences": -1, "sentence_starts": -1}


def make_dataset(source: ExampleSource, spec: InputSpec, *, local_batch_size: int,
                 train: bool, start_step: int = 0, process_index: int = 0,
                 process_count: int = 1) -> tf.data.Dataset:
  """This process's tf.data batches before tokenisation (see the module docstring).

  The record stream is the same on every process (it depends on `spec.seed` only); process
  `process_index` of `process_count` decodes its `local_batch_size` rows of each global
  batch of `local_batch_size * process_count` stream positions (asg_jax.data.pipeline).

  Elements: `image` uint8 `[b, S, S, C]` (cropped, not yet normalised: `finalize_batch`
  does it), `tags` i32 `[b, 40]`, `chexpert` f32 `[b, 14]`,
  `region_boxes` f32 `[b, R, 4]`, `region_ids` i32 `[b, R]`, `region_mask` bool `[b, R]`,
  `region_sentences` i32 `[b, R, S']` (sentence indices, -1 padded), `sentence_starts` i32
  `[b, S'']` (character offset of each sentence in the caption, -1 padded), `caption`
  string `[b]`, `boxes_annotated` bool `[b]`, `index` i64 `[b]` (`S` = spec.image_size,
  `R` = spec.max_regions). Training batches drop the remainder (endless stream); eval
  batches keep a smaller last batch.
  """
  unknown = [r for r in spec.regions if r not in vocabulary.REGION_INDEX]
  if unknown:
    raise ValueError(f"config.data.regions: unknown region name(s) {unknown}; the names are "
                     f"those of vocab.json imagenome_regions_29")
  keep_ids = [vocabulary.REGION_INDEX[r] for r in spec.regions]
  n = source.num_examples
  if n == 0:
    raise ValueError(f"{source.name}: there are no examples to read")
  geometry.normalization_constants(spec.normalization)
  fn = _example_fn(spec, decode=source.decode, name=source.name, keep_ids=keep_ids, train=train)
  global_batch = local_batch_size * process_count
  skip = int(start_step) * global_batch
  if train:
    first_epoch, skip = divmod(skip, n)
    ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(
        lambda e: _records(source, train=True, seed=spec.seed,
                           shuffle_buffer=spec.shuffle_buffer, epoch=e))
  else:
    ds = _records(source, train=False, seed=spec.seed, shuffle_buffer=1,
                  epoch=tf.constant(0, tf.int64))
  if skip:
    ds = ds.skip(skip)   # raw records: nothing skipped is decoded
  if process_count > 1:   # this process's rows of every global batch (raw: not decoded)
    b = local_batch_size
    ds = ds.enumerate().filter(
        lambda pos, rec: (pos % global_batch) // b == process_index
    ).map(lambda pos, rec: rec)
  ds = ds.map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  padding = {k: tf.constant("") if spec.dtype == tf.string else
             tf.constant(False) if spec.dtype == tf.bool else
             tf.constant(_PADDING.get(k, 0), dtype=spec.dtype)
             for k, spec in ds.element_spec.items()}
  ds = ds.padded_batch(local_batch_size, drop_remainder=train, padding_values=padding)
  options = tf.data.Options()
  options.deterministic = True
  ds = ds.with_options(options)
  return ds.prefetch(tf.data.AUTOTUNE)


def _mix(seed, epoch):
  return tf.cast(seed, tf.int64) * 1_000_003 + tf.cast(epoch, tf.int64) * 7919 + 17


def _records(source: ExampleSource, *, train: bool, seed: int, shuffle_buffer: int,
             epoch: tf.Tensor) -> tf.data.Dataset:
  """One epoch of `(epoch, index, raw record)`: seeded file order + shuffle for training."""
  files = tf.constant([s.file for s in source.shards])
  skips = tf.constant([s.skip for s in source.shards], tf.int64)
  takes = tf.constant([s.take for s in source.shards], tf.int64)
  starts = tf.constant([s.start for s in source.shards], tf.int64)
  num_shards = len(source.shards)

  def shard(f):
    records = source.read(files[f], skips[f], takes[f])
    index = tf.data.Dataset.range(starts[f], starts[f] + takes[f])
    return tf.data.Dataset.zip((index, records))

  if train and num_shards > 1:
    noise = tf.random.stateless_uniform([num_shards], seed=tf.stack([_mix(seed, epoch), 1]))
    order = tf.argsort(noise)
  else:
    order = tf.range(num_shards)
  cycle = min(num_shards, 16) if train else 1
  parallel = dict(num_parallel_calls=cycle, deterministic=True) if cycle > 1 else {}
  ds = tf.data.Dataset.from_tensor_slices(order).interleave(
      shard, cycle_length=cycle, block_length=1, **parallel)
  if train:
    buffer = max(1, min(int(shuffle_buffer), source.num_examples))
    ds = ds.shuffle(buffer, seed=_mix(seed, epoch), reshuffle_each_iteration=False)
  return ds.map(lambda i, r: (epoch, i, r))


def captions_of(source: ExampleSource) -> list[str]:
  """The captions (`" ".join(sentences)`) of every example of `source`, in split order
  (images not decoded where the source can skip them)."""
  decode = source.decode_text or source.decode
  ds = _records(source, train=False, seed=0, shuffle_buffer=1, epoch=tf.constant(0, tf.int64))
  ds = ds.map(lambda e, i, r: tf.strings.reduce_join(decode(r)["sentences"], separator=" "),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return [c.decode("utf-8") for c in ds.as_numpy_iterator()]


def read_captions(spec: InputSpec, split: str) -> list[str]:
  """The captions of `split` of the prepared tfds dataset `spec` names, in split order."""
  return captions_of(open_split(spec.name, spec.builder_config, spec.data_dir, split))
