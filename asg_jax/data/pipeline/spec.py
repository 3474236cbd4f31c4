"""`InputSpec`: everything the pre-training input pipeline reads from the config, in one value.

    spec = InputSpec.from_config(config.data, seed=config.seed, data_dir=data_dir)
    batches.create_input_iterator(spec, split="train", tokenizer=tok, batch_size=288,
                                  train=True, start_step=0)

The spec travels whole through the pipeline (`batches.create_input_iterator` →
`batches.iterate_source` → `stream.make_dataset` → `stream.example_fn`), so a new knob is
one field here, its line in `from_config`, and the one place that reads it. What changes
from one pass to the next (split, batch size, train / eval, start step, process) stays an
argument of those functions.
"""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputSpec:
  """Which stored examples, and how they become host batches (interfaces.md §1 → §2).

  Attributes:
    name, builder_config, data_dir: the prepared tfds dataset (`config.data.name`,
      `.builder_config`; `data_dir` resolved by `asg_jax.data.prepare`, None: tfds' default).
      Unused over an in-memory `ExampleSource` (`batches.iterate_source`).
    image_size: the crop `S` (`config.data.image_size`).
    resize: longest side before the crop (`config.data.resize`, >= image_size).
    max_regions: `R`, regions per example after filtering (padded).
    max_region_words: `K`, word slots per region (padded).
    max_length: `L`, tokens per caption (the tokenizer must pad to it).
    normalization: "imagenet" | "half" (the host's or the device's lookup table).
    regions: the vocab.json `imagenome_regions_29` names kept (`config.data.regions`).
    shuffle_buffer: raw records in the training shuffle buffer.
    seed: file order, shuffle and random crops depend on it (`config.seed`).
    min_box_visibility: a box is kept when at least this fraction of it stays in the crop
      (not a config key).
  """
  name: str = ""
  builder_config: str | None = None
  data_dir: str | None = None
  image_size: int
  resize: int
  max_regions: int
  max_region_words: int
  max_length: int
  normalization: str
  regions: tuple[str, ...]
  shuffle_buffer: int
  seed: int
  min_box_visibility: float = 0.5

  @classmethod
  def from_config(cls, data_config: Any, *, seed: int, data_dir: str | None = None
                  ) -> "InputSpec":
    """The spec of `config.data` (`data_config`), seeded by `config.seed`; `data_dir`: the
    resolved tfds data_dir (default `data_config.data_dir`, "" meaning tfds' default)."""
    dc = data_config
    return cls(name=dc.name, builder_config=dc.builder_config,
               data_dir=data_dir if data_dir is not None else (dc.data_dir or None),
               image_size=dc.image_size, resize=dc.resize, max_regions=dc.max_regions,
               max_region_words=dc.max_region_words, max_length=dc.max_length,
               normalization=dc.normalization, regions=tuple(dc.regions),
               shuffle_buffer=dc.shuffle_buffer, seed=seed)

  def of_dataset(self, dataset: str) -> "InputSpec":
    """The same spec over another prepared tfds dataset in the same data_dir and stored
    layout: `dataset` is "name" or "name/config"."""
    name, _, builder_config = dataset.partition("/")
    return dataclasses.replace(self, name=name, builder_config=builder_config or None)
