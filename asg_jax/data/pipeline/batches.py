"""Host batches of one split: `create_input_iterator` (a prepared tfds split) and
`iterate_source` (any `ExampleSource`) put the parts of `asg_jax.data.pipeline` together.

    spec = InputSpec.from_config(config.data, seed=config.seed, data_dir=data_dir)
    it = create_input_iterator(spec, split="train", tokenizer=tok, batch_size=288,
                               train=True, start_step=0)
    batch = next(it)   # dict of NumPy arrays, exactly the keys/dtypes/shapes of §2

The rules they follow (shards, processes, epochs, resume, eval padding) are in the
package docstring (`asg_jax/data/pipeline/__init__.py`).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Iterator

import numpy as np

from asg_jax.data import geometry
from asg_jax.data.pipeline.host import (HOST_PREFETCH, eval_padding, finalize_batch, host_map,
                                        invalidate, pad_batch)
from asg_jax.data.pipeline.source import ExampleSource, open_split
from asg_jax.data.pipeline.spec import InputSpec
from asg_jax.data.pipeline.stream import make_dataset

def iterate_source(source: ExampleSource, spec: InputSpec, *, tokenizer, batch_size: int,
                   train: bool, start_step: int = 0, max_examples: int | None = None,
                   process_index: int = 0, process_count: int = 1,
                   device_normalize: bool = False, host_prefetch: int = HOST_PREFETCH,
                   host_workers: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Host batches of this process from a whole-split `source` (see `create_input_iterator`;
  `spec.name`, `builder_config`, `data_dir` are not read: `source` is the split).

  `host_workers` threads (default `min(4, cores)`) normalise/tokenise batches ahead of the
  consumer, `host_prefetch` batches deep; `host_prefetch=0` does it all in the caller's
  thread. The output does not depend on either.
  """
  if spec.image_size > spec.resize:
    raise ValueError(f"config.data.image_size={spec.image_size} > config.data.resize="
                     f"{spec.resize}")
  geometry.normalization_constants(spec.normalization)
  if spec.max_regions < 1 or spec.max_region_words < 1:
    raise ValueError(f"max_regions={spec.max_regions} and max_region_words="
                     f"{spec.max_region_words} must be >= 1")
  if getattr(tokenizer, "max_length", spec.max_length) != spec.max_length:
    raise ValueError(f"the tokenizer pads to {tokenizer.max_length} tokens but "
                     f"max_length={spec.max_length}")
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
  ds = make_dataset(source, spec, local_batch_size=local, train=train,
                    start_step=0 if empty else start_step,
                    process_index=0 if empty else process_index,
                    process_count=1 if empty else process_count)
  if empty:
    ds = ds.take(1)

  finalize = functools.partial(finalize_batch, tokenizer=tokenizer,
                               max_region_words=spec.max_region_words,
                               normalization=None if device_normalize else spec.normalization)
  workers = host_workers if host_workers is not None else min(4, os.cpu_count() or 1)
  if host_prefetch <= 0:
    workers = 0
  batches = host_map(ds.as_numpy_iterator, finalize, workers, host_prefetch + workers)
  if train:
    return batches
  if empty:
    template = invalidate(pad_batch(next(iter(batches)), local))
    return iter([template] * num_batches)
  return eval_padding(batches, local, num_batches)


def create_input_iterator(spec: InputSpec, *, split: str, tokenizer, batch_size: int,
                          train: bool, start_step: int, max_examples: int | None = None,
                          process_index: int | None = None, process_count: int | None = None,
                          device_normalize: bool = False) -> Iterator[dict[str, np.ndarray]]:
  """Host batches of the tfds split `spec.name/spec.builder_config:split` for this process.

  Args:
    spec: the dataset and every config.data knob (`InputSpec`: geometry, regions, words,
      tokens, normalisation, shuffle, seed).
    batch_size: the GLOBAL batch; each of the `process_count` processes yields
      `batch_size // process_count` rows (what `parallel.shard_batch` expects).
    train: endless, shuffled, random crops, drop_remainder; else one pass with `valid`.
    start_step: the first step to yield (resume); eval normally uses 0.
    max_examples: use only the split's first `max_examples` examples.
    process_index, process_count: default `jax.process_index()` / `jax.process_count()`.
    device_normalize: leave `image` as the cropped uint8 grey pixels `[b, S, S, 1]` (the
      pre-training feed: the model normalises them on device, `data/normalization.py`);
      False: float32 `[b, S, S, 3]` normalised on the host.
  Yields:
    dicts with exactly the keys of interfaces.md §2 (`image` f32 `[b, S, S, 3]`,
    `input_ids`/`attention_mask`/`word_ids` i32 `[b, L]`, `tags` i32 `[b, 40]`, `chexpert`
    f32 `[b, 14]`, `region_boxes` f32 `[b, R, 4]`, `region_mask` bool `[b, R]`,
    `region_ids` i32 `[b, R]` (vocab.json `imagenome_regions_29` ids, -1 padding),
    `region_word_index` i32 `[b, R, K]`, `boxes_annotated` bool `[b]`, `index` i64 `[b]`),
    plus `valid` bool `[b]` for eval; `S, L, R, K` = spec.image_size, max_length,
    max_regions, max_region_words.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index, process_count = jax.process_index(), jax.process_count()
  source = open_split(spec.name, spec.builder_config, spec.data_dir, split)
  return iterate_source(source, spec, tokenizer=tokenizer, batch_size=batch_size, train=train,
                        start_step=start_step, max_examples=max_examples,
                        process_index=process_index, process_count=process_count,
                        device_normalize=device_normalize)
