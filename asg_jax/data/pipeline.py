"""The tf.data input pipeline: stored examples (interfaces.md §1) → host batches (§2).

    it = create_input_iterator(name="mimic_cxr", builder_config="default", data_dir=...,
                               image_size=224, resize=256, max_regions=23,
                               max_region_words=110, max_length=112, normalization="imagenet",
                               regions=ASG_REGIONS_23, shuffle_buffer=10_000, split="train",
                               tokenizer=tok, batch_size=288, train=True, seed=42,
                               start_step=0)
    batch = next(it)   # dict of NumPy arrays, exactly the keys/dtypes/shapes of §2

How it reads (all deterministic, also with parallel map):

* **Shards.** A split is a list of shards (tfrecord files with skip/take, from tfds's
  `file_instructions`), each covering consecutive split positions. Process `p` of `P` reads
  the contiguous positions `[p*M//P, (p+1)*M//P)` (`M` = split size, or `max_examples`).
  `index` in the batch is the split position.
* **Epochs.** Training is an endless concatenation of epochs; epoch `e` reads this process's
  shards in a file order permuted by `(seed, e)` (interleaved), then shuffles the raw records
  with a buffer seeded by `(seed, e)`. Batches run across epoch boundaries
  (`drop_remainder`), so step `s` holds stream positions `[s*b, (s+1)*b)` (`b` = per-process
  batch). `start_step=s` opens the stream at epoch `s*b // n` (earlier epochs are never
  read) and skips the remaining `s*b % n` RAW records — before decoding — so it yields
  exactly what an uninterrupted iterator yields from step `s` on.
* **Examples.** After the skip, each record is decoded (image PNG decode happens here) and
  the geometry of `geometry.py` is applied to image and boxes (random crop seeded by
  `(seed, epoch, index)` for training). Regions are kept when their name is in `regions`
  and their box stays visible; they are packed (stored order) and padded to `max_regions`.
* **Host.** Images leave tf.data as cropped uint8 and are normalised on the host
  (`geometry.normalize_numpy`). Captions are tokenised on the host with the Rust tokenizer
  (one `encode_batch` per batch) and `region_word_index` is computed in NumPy from the
  sentence character offsets: the slots of every word of a region's sentences (truncated
  words dropped); a region left with no word is invalid. A small thread pool does this
  host work ahead of the consumer (in order; 2 batches beyond the workers), on top of
  tf.data's AUTOTUNE prefetch.
* **Eval** (`train=False`): one pass in split order, no shuffle, centre crop; the last
  partial batch is padded to full size (copies of its first row with `valid = False`,
  `index = -1` and no regions), and every process yields the same number of batches.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import queue
import threading
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from asg_jax.data import geometry

logger = logging.getLogger(__name__)

STORED_KEYS = ("image", "sentences", "tags", "chexpert", "region_boxes", "region_ids",
               "region_sentence_index")
BATCH_KEYS = ("image", "input_ids", "attention_mask", "word_ids", "tags", "chexpert",
              "region_boxes", "region_mask", "region_ids", "region_word_index",
              "boxes_annotated", "index")
# region_source values whose boxes are priors, not the image's own anatomy
PRIOR_REGION_SOURCES = ("atlas", "none")
HOST_PREFETCH = 2


# --------------------------------------------------------------------------- sources
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


def _source(kwargs: dict, split: str) -> ExampleSource:
  return open_split(kwargs["name"], kwargs.get("builder_config"), kwargs.get("data_dir"), split)


def num_examples(kwargs: dict, split: str) -> int:
  """Number of examples in `split` of the dataset named by `kwargs` (name, builder_config,
  data_dir), over all processes."""
  return _source(kwargs, split).num_examples


def read_captions(kwargs: dict, split: str) -> list[str]:
  """The captions (`" ".join(sentences)`) of `split` in split order (images not decoded)."""
  return captions_of(_source(kwargs, split))


def captions_of(source: ExampleSource) -> list[str]:
  """The captions of every example of `source`, in split order."""
  decode = source.decode_text or source.decode
  ds = _records(source, train=False, seed=0, shuffle_buffer=1, epoch=tf.constant(0, tf.int64))
  ds = ds.map(lambda e, i, r: tf.strings.reduce_join(decode(r)["sentences"], separator=" "),
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return [c.decode("utf-8") for c in ds.as_numpy_iterator()]


# --------------------------------------------------------------------------- the stream
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


def _example_fn(*, decode, name: str, image_size: int, resize: int, max_regions: int,
                keep_ids: Sequence[int], train: bool, seed: int, min_box_visibility: float):
  keep_ids_t = tf.constant(list(keep_ids), tf.int32)

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
        image, boxes, resize=resize, image_size=image_size, train=train, seed=ex_seed,
        min_box_visibility=min_box_visibility)
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


def make_dataset(source: ExampleSource, *, image_size: int, resize: int, max_regions: int,
                 normalization: str, regions: Sequence[str], shuffle_buffer: int,
                 local_batch_size: int, train: bool, seed: int, start_step: int = 0,
                 min_box_visibility: float = 0.5) -> tf.data.Dataset:
  """This process's tf.data batches before tokenisation (see the module docstring).

  Elements: `image` uint8 `[b, S, S, C]` (cropped, not yet normalised: `finalize_batch`
  does it), `tags` i32 `[b, 40]`, `chexpert` f32 `[b, 14]`,
  `region_boxes` f32 `[b, R, 4]`, `region_ids` i32 `[b, R]`, `region_mask` bool `[b, R]`,
  `region_sentences` i32 `[b, R, S']` (sentence indices, -1 padded), `sentence_starts` i32
  `[b, S'']` (character offset of each sentence in the caption, -1 padded), `caption`
  string `[b]`, `index` i64 `[b]`. Training batches drop the remainder (endless stream);
  eval batches keep a smaller last batch.
  """
  from asg_jax.data.reports import vocabulary  # pylint: disable=import-outside-toplevel
  unknown = [r for r in regions if r not in vocabulary.REGION_INDEX]
  if unknown:
    raise ValueError(f"config.data.regions: unknown region name(s) {unknown}; the names are "
                     f"those of vocab.json imagenome_regions_29")
  keep_ids = [vocabulary.REGION_INDEX[r] for r in regions]
  n_local = source.num_examples
  if n_local == 0:
    raise ValueError(f"{source.name}: this process has no examples to read")
  geometry.normalization_constants(normalization)
  fn = _example_fn(decode=source.decode, name=source.name, image_size=image_size, resize=resize,
                   max_regions=max_regions, keep_ids=keep_ids,
                   train=train, seed=seed, min_box_visibility=min_box_visibility)
  skip = int(start_step) * local_batch_size
  if train:
    first_epoch, skip = divmod(skip, n_local)
    ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(
        lambda e: _records(source, train=True, seed=seed, shuffle_buffer=shuffle_buffer,
                           epoch=e))
  else:
    ds = _records(source, train=False, seed=seed, shuffle_buffer=1,
                  epoch=tf.constant(0, tf.int64))
  if skip:
    ds = ds.skip(skip)   # raw records: nothing skipped is decoded
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


# --------------------------------------------------------------------------- host side
def region_word_index(word_starts: np.ndarray, sentence_starts: np.ndarray,
                      region_sentences: np.ndarray, max_region_words: int) -> np.ndarray:
  """Word slots of each region's sentence set.

  Args:
    word_starts: int `[B, N]` character offset of each word slot in the caption (-1: none).
    sentence_starts: int `[B, S]` character offset of each sentence (-1 padded).
    region_sentences: int `[B, R, S']` sentence indices per region (-1 padded).
    max_region_words: `K`.
  Returns:
    int32 `[B, R, K]`: the slots (ascending) of the words of the region's sentences,
    -1 padded (more than `K` words: the first `K`).
  """
  ws = np.asarray(word_starts)
  ss = np.asarray(sentence_starts)
  rs = np.asarray(region_sentences)
  b, n = ws.shape
  if ss.shape[1] == 0 or rs.shape[2] == 0:
    return np.full((b, rs.shape[1], max_region_words), -1, np.int32)
  num_sentences = ss.shape[1]
  started = (ss[:, None, :] >= 0) & (ss[:, None, :] <= ws[:, :, None])          # [B, N, S]
  sentence_of_word = np.where(ws >= 0, started.sum(-1) - 1, -1)                 # [B, N]
  # has[b, r, j]: region r's sentence set contains sentence j (column S: "no sentence")
  has = np.zeros(rs.shape[:2] + (num_sentences + 1,), bool)
  bi, ri, ki = np.nonzero((rs >= 0) & (rs < num_sentences))
  has[bi, ri, rs[bi, ri, ki]] = True
  lookup = np.where(sentence_of_word >= 0, sentence_of_word, num_sentences)     # [B, N]
  member = np.take_along_axis(has, np.broadcast_to(lookup[:, None, :], rs.shape[:2] + (n,)),
                              axis=2)                                           # [B, R, N]
  # compact the member slots to the front, ascending, -1 padded
  position = np.cumsum(member, axis=-1) - 1
  out = np.full(rs.shape[:2] + (max_region_words,), -1, np.int32)
  bi, ri, wi = np.nonzero(member & (position < max_region_words))
  out[bi, ri, position[bi, ri, wi]] = wi
  return out


def finalize_batch(raw: dict, tokenizer, max_region_words: int,
                   normalization: str = "imagenet") -> dict[str, np.ndarray]:
  """tf.data batch (see `make_dataset`) → host batch of interfaces.md §2: normalises the
  image, tokenises the captions and points the regions at their words."""
  captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in raw["caption"]]
  tokens = tokenizer.encode_batch(captions, return_word_starts=True)
  rwi = region_word_index(tokens["word_starts"], raw["sentence_starts"],
                          raw["region_sentences"], max_region_words)
  mask = np.asarray(raw["region_mask"], bool) & (rwi >= 0).any(-1)
  return {
      "image": geometry.normalize_numpy(raw["image"], normalization),
      "input_ids": tokens["input_ids"],
      "attention_mask": tokens["attention_mask"],
      "word_ids": tokens["word_ids"],
      "tags": np.asarray(raw["tags"], np.int32),
      "chexpert": np.asarray(raw["chexpert"], np.float32),
      "region_boxes": np.where(mask[..., None], raw["region_boxes"], 0).astype(np.float32),
      "region_mask": mask,
      "region_ids": np.where(mask, raw["region_ids"], -1).astype(np.int32),
      "region_word_index": np.where(mask[..., None], rwi, -1).astype(np.int32),
      "boxes_annotated": np.asarray(raw["boxes_annotated"], bool),
      "index": np.asarray(raw["index"], np.int64),
  }


def _pad_batch(batch: dict, size: int) -> dict:
  """Pad rows to `size` with invalid copies of row 0; adds `valid`."""
  n = len(batch["index"])
  out = {}
  for key, value in batch.items():
    if n < size:
      value = np.concatenate([value, np.repeat(value[:1], size - n, axis=0)], axis=0)
    out[key] = value
  valid = np.arange(size) < n
  out["valid"] = valid
  out["index"] = np.where(valid, out["index"], -1).astype(np.int64)
  out["region_mask"] = out["region_mask"] & valid[:, None]
  out["region_ids"] = np.where(out["region_mask"], out["region_ids"], -1).astype(np.int32)
  out["region_boxes"] = np.where(out["region_mask"][..., None], out["region_boxes"], 0
                                 ).astype(np.float32)
  out["region_word_index"] = np.where(out["region_mask"][..., None], out["region_word_index"],
                                      -1).astype(np.int32)
  return out


class _Raised:
  def __init__(self, exc: BaseException):
    self.exc = exc


def _host_map(make_iterator: Callable[[], Iterator], fn: Callable, workers: int,
              depth: int) -> Iterator:
  """`fn` over `make_iterator()`'s items, in order, computed ahead by `workers` threads.

  A daemon thread pulls items (tf.data batches) and submits `fn(item)` to a thread pool,
  keeping at most `depth` results in flight or ready; the consumer gets them in order.
  With `workers == 0` everything runs in the caller's thread.
  """
  if workers <= 0:
    yield from (fn(item) for item in make_iterator())
    return
  pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="asg-input")
  q: queue.Queue = queue.Queue(maxsize=max(depth, 1))
  stop = threading.Event()
  done = object()

  def put(item) -> bool:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def feeder():
    try:
      for item in make_iterator():
        if not put(pool.submit(fn, item)):
          return
      put(done)
    except BaseException as e:  # pylint: disable=broad-except
      put(_Raised(e))

  thread = threading.Thread(target=feeder, daemon=True, name="asg-input-feeder")
  thread.start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, _Raised):
        raise item.exc
      yield item.result()
  finally:
    stop.set()
    pool.shutdown(wait=False, cancel_futures=True)


def iterate_source(source: ExampleSource, *, tokenizer, image_size: int, resize: int,
                   max_regions: int, max_region_words: int, max_length: int,
                   normalization: str, regions: Sequence[str], shuffle_buffer: int,
                   batch_size: int, train: bool, seed: int, start_step: int = 0,
                   max_examples: int | None = None, process_index: int = 0,
                   process_count: int = 1, min_box_visibility: float = 0.5,
                   host_prefetch: int = HOST_PREFETCH, host_workers: int | None = None
                   ) -> Iterator[dict[str, np.ndarray]]:
  """Host batches of this process from a whole-split `source` (see `create_input_iterator`).

  `host_workers` threads (default `min(4, cores)`) normalise/tokenise batches ahead of the
  consumer, `host_prefetch` batches deep; `host_prefetch=0` does it all in the caller's
  thread. The output does not depend on either.
  """
  if image_size > resize:
    raise ValueError(f"config.data.image_size={image_size} > config.data.resize={resize}")
  geometry.normalization_constants(normalization)
  if max_regions < 1 or max_region_words < 1:
    raise ValueError(f"max_regions={max_regions} and max_region_words={max_region_words} must "
                     "be >= 1")
  if getattr(tokenizer, "max_length", max_length) != max_length:
    raise ValueError(f"the tokenizer pads to {tokenizer.max_length} tokens but "
                     f"max_length={max_length}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count})")
  if batch_size % process_count:
    raise ValueError(f"batch_size={batch_size} is not divisible by the {process_count} processes")
  local = batch_size // process_count
  total = source.num_examples
  if max_examples:
    total = min(total, int(max_examples))
  if total < process_count:
    raise ValueError(f"{source.name}: {total} examples cannot be shared by {process_count} "
                     "processes")
  first = source.shards[0].start if source.shards else 0
  lo = first + process_index * total // process_count
  hi = first + (process_index + 1) * total // process_count
  mine = source.select(lo, hi)
  ds = make_dataset(mine, image_size=image_size, resize=resize, max_regions=max_regions,
                    normalization=normalization, regions=regions, shuffle_buffer=shuffle_buffer,
                    local_batch_size=local, train=train, seed=seed, start_step=start_step,
                    min_box_visibility=min_box_visibility)

  finalize = functools.partial(finalize_batch, tokenizer=tokenizer,
                               max_region_words=max_region_words, normalization=normalization)
  workers = host_workers if host_workers is not None else min(4, os.cpu_count() or 1)
  if host_prefetch <= 0:
    workers = 0
  batches = _host_map(ds.as_numpy_iterator, finalize, workers, host_prefetch + workers)
  if train:
    return batches
  num_batches = math.ceil(math.ceil(total / process_count) / local) - int(start_step)
  return _eval_padding(batches, local, num_batches)


def _eval_padding(batches: Iterator[dict], size: int, num_batches: int) -> Iterator[dict]:
  """Pad each batch to `size` rows (`valid`), then add all-padding batches up to
  `num_batches` (so every process yields the same number)."""
  last = None
  for batch in batches:
    last = _pad_batch(batch, size)
    num_batches -= 1
    yield last
  while num_batches > 0 and last is not None:   # other processes have one more batch
    yield _invalidate(last)
    num_batches -= 1


def _invalidate(batch: dict) -> dict:
  """An all-padding copy of `batch` (`valid` False everywhere, no regions)."""
  out = dict(batch)
  b = len(out["index"])
  out["valid"] = np.zeros(b, bool)
  out["index"] = np.full(b, -1, np.int64)
  out["region_mask"] = np.zeros_like(out["region_mask"])
  out["region_ids"] = np.full_like(out["region_ids"], -1)
  out["region_boxes"] = np.zeros_like(out["region_boxes"])
  out["region_word_index"] = np.full_like(out["region_word_index"], -1)
  return out


def create_input_iterator(*, name: str, builder_config: str | None, data_dir: str | None,
                          image_size: int, resize: int, max_regions: int,
                          max_region_words: int, max_length: int, normalization: str,
                          regions: Sequence[str], shuffle_buffer: int, split: str, tokenizer,
                          batch_size: int, train: bool, seed: int, start_step: int,
                          max_examples: int | None = None, process_index: int | None = None,
                          process_count: int | None = None, min_box_visibility: float = 0.5
                          ) -> Iterator[dict[str, np.ndarray]]:
  """Host batches of the tfds split `name/builder_config:split` for this process.

  Args:
    batch_size: the GLOBAL batch; each of the `process_count` processes yields
      `batch_size // process_count` rows (what `parallel.shard_batch` expects).
    train: endless, shuffled, random crops, drop_remainder; else one pass with `valid`.
    start_step: the first step to yield (resume); eval normally uses 0.
    max_examples: use only the split's first `max_examples` examples.
    process_index, process_count: default `jax.process_index()` / `jax.process_count()`.
    (the rest: config.data, see `make_dataset` and geometry.transform)
  Yields:
    dicts with exactly the keys of interfaces.md §2 (`image` f32 `[b, S, S, 3]`,
    `input_ids`/`attention_mask`/`word_ids` i32 `[b, L]`, `tags` i32 `[b, 40]`, `chexpert`
    f32 `[b, 14]`, `region_boxes` f32 `[b, R, 4]`, `region_mask` bool `[b, R]`,
    `region_ids` i32 `[b, R]` (vocab.json `imagenome_regions_29` ids, -1 padding),
    `region_word_index` i32 `[b, R, K]`, `index` i64 `[b]`), plus `valid` bool `[b]` for eval.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index, process_count = jax.process_index(), jax.process_count()
  source = open_split(name, builder_config, data_dir, split)
  return iterate_source(source, tokenizer=tokenizer, image_size=image_size, resize=resize,
                        max_regions=max_regions, max_region_words=max_region_words,
                        max_length=max_length, normalization=normalization, regions=regions,
                        shuffle_buffer=shuffle_buffer, batch_size=batch_size, train=train,
                        seed=seed, start_step=start_step, max_examples=max_examples,
                        process_index=process_index, process_count=process_count,
                        min_box_visibility=min_box_visibility)
