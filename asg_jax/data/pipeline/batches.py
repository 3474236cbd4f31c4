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
  `file_instructions`), each covering consecutive split positions (`M` = split size, or
  `max_examples`). `index` in the batch is the split position.
* **Processes.** Every process reads the same global stream of raw records (the order
  below depends on the seed only) and decodes its own part of each global batch: process `p`
  of `P` keeps stream positions `[s*B + p*b, s*B + (p+1)*b)` of step `s` (`B` = global
  batch, `b = B/P`). So the global batches, and a run's numbers, are the same on 1 × 8,
  2 × 4 or 8 × 1 devices; the price is that every process reads (not decodes) every record.
* **Epochs.** Training is an endless concatenation of epochs; epoch `e` reads this process's
  shards in a file order permuted by `(seed, e)` (interleaved), then shuffles the raw records
  with a buffer seeded by `(seed, e)`. Batches run across epoch boundaries
  (`drop_remainder`), so step `s` holds stream positions `[s*B, (s+1)*B)`.
  `start_step=s` opens the stream at epoch `s*B // M` (earlier epochs are never
  read) and skips the remaining `s*B % M` RAW records — before decoding — so it yields
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
  `index = -1` and no regions), and every process yields the same number of batches,
  `ceil(M / B)` (a process whose part of the last global batch is empty yields an
  all-padding batch).

The parts: `source` (ExampleSource, tfds splits), `stream` (tf.data decode + geometry +
batching), `host` (tokenise, normalise, region words, eval padding, thread prefetcher);
this module puts them together and re-exports their public names.
"""
from __future__ import annotations

import functools
import logging
import math
import os
from typing import Iterator, Sequence

import numpy as np

from asg_jax.data import geometry
# pylint: disable=unused-import
from asg_jax.data.host import (BATCH_KEYS, HOST_PREFETCH, _eval_padding, _host_map,
                               _invalidate, _pad_batch, _Raised, finalize_batch,
                               region_word_index)
from asg_jax.data.source import (STORED_KEYS, ExampleSource, Shard, _mix, _read_tfrecord,
                                 _records, _source, _text_decoder, captions_of, num_examples,
                                 open_split, read_captions)
from asg_jax.data.stream import _PADDING, PRIOR_REGION_SOURCES, _example_fn, make_dataset
# pylint: enable=unused-import

logger = logging.getLogger(__name__)


def iterate_source(source: ExampleSource, *, tokenizer, image_size: int, resize: int,
                   max_regions: int, max_region_words: int, max_length: int,
                   normalization: str, regions: Sequence[str], shuffle_buffer: int,
                   batch_size: int, train: bool, seed: int, start_step: int = 0,
                   max_examples: int | None = None, process_index: int = 0,
                   process_count: int = 1, min_box_visibility: float = 0.5,
                   host_prefetch: int = HOST_PREFETCH, host_workers: int | None = None,
                   device_normalize: bool = False) -> Iterator[dict[str, np.ndarray]]:
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
  first = source.shards[0].start if source.shards else 0
  source = source.select(first, first + total)
  num_batches = math.ceil(total / batch_size) - int(start_step)   # eval, on every process
  # eval: a process whose part of every global batch is past the end reads the first
  # record only, as the template of its all-padding batches
  empty = not train and process_index * local >= total
  ds = make_dataset(source, image_size=image_size, resize=resize, max_regions=max_regions,
                    normalization=normalization, regions=regions, shuffle_buffer=shuffle_buffer,
                    local_batch_size=local, train=train, seed=seed,
                    start_step=0 if empty else start_step,
                    min_box_visibility=min_box_visibility,
                    process_index=0 if empty else process_index,
                    process_count=1 if empty else process_count)
  if empty:
    ds = ds.take(1)

  finalize = functools.partial(finalize_batch, tokenizer=tokenizer,
                               max_region_words=max_region_words,
                               normalization=None if device_normalize else normalization)
  workers = host_workers if host_workers is not None else min(4, os.cpu_count() or 1)
  if host_prefetch <= 0:
    workers = 0
  batches = _host_map(ds.as_numpy_iterator, finalize, workers, host_prefetch + workers)
  if train:
    return batches
  if empty:
    template = _invalidate(_pad_batch(next(iter(batches)), local))
    return iter([template] * num_batches)
  return _eval_padding(batches, local, num_batches)


def create_input_iterator(*, name: str, builder_config: str | None, data_dir: str | None,
                          image_size: int, resize: int, max_regions: int,
                          max_region_words: int, max_length: int, normalization: str,
                          regions: Sequence[str], shuffle_buffer: int, split: str, tokenizer,
                          batch_size: int, train: bool, seed: int, start_step: int,
                          max_examples: int | None = None, process_index: int | None = None,
                          process_count: int | None = None, min_box_visibility: float = 0.5,
                          device_normalize: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Host batches of the tfds split `name/builder_config:split` for this process.

  Args:
    batch_size: the GLOBAL batch; each of the `process_count` processes yields
      `batch_size // process_count` rows (what `parallel.shard_batch` expects).
    train: endless, shuffled, random crops, drop_remainder; else one pass with `valid`.
    start_step: the first step to yield (resume); eval normally uses 0.
    max_examples: use only the split's first `max_examples` examples.
    process_index, process_count: default `jax.process_index()` / `jax.process_count()`.
    device_normalize: leave `image` as the cropped uint8 grey pixels `[b, S, S, 1]` (the
      pre-training feed: the model normalises them on device, `data/normalization.py`);
      False: float32 `[b, S, S, 3]` normalised on the host.
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
                        min_box_visibility=min_box_visibility,
                        device_normalize=device_normalize)
