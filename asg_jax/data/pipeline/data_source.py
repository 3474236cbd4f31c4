"""The training job's data: tokenizer, example counts and train / eval batch iterators over
data that `asg_jax.data.prepare` left ready. It only reads: nothing is generated, built or
learnt here.

    data = asg_jax.data.prepare(config, workdir)   # a DataSource
    data.train_batches(start_step)   # host batches (interfaces.md §2), resumable by step
    data.eval_batches()              # one pass over the eval split, last batch padded (`valid`)
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import ml_collections
import numpy as np

from asg_jax.data.pipeline import batches
from asg_jax.data.pipeline.source import num_examples
from asg_jax.data.pipeline.spec import InputSpec
from asg_jax.data.reports import tokenization


@dataclasses.dataclass(frozen=True)
class PreparedData:
  """What `asg_jax.data.prepare` left ready to read.

  Attributes:
    data_dir: the tfds data_dir (absolute).
    build: `builders.build.prepare`'s record: {"built": bool, "reason": why it was (re)built
      or reused, "data_dir": the dataset's version folder}.
    vocabulary: what the tokenizer is loaded from: the workdir's bound tokenizer.json,
      `config.data.tokenizer`, or the WordPiece vocabulary learnt next to the build.
  """
  data_dir: str
  build: dict
  vocabulary: str


class DataSource:
  """Tokenizer, example counts and batch iterators for one config over `prepared` data.

  Attributes:
    spec: the `InputSpec` of `config.data` over the prepared dataset.
    data_dir, build: `prepared.data_dir` / `prepared.build`.
    tokenizer: loaded from `prepared.vocabulary` (`config.data.max_length`, `lower_case`).
    num_train_examples, num_eval_examples: of `config.data.train_split` / `eval_split`
      (the latter capped by `config.eval.max_examples`).
  Raises:
    ValueError: the tokenizer has more tokens than `config.model.text.vocab_size`.
  """

  def __init__(self, config: ml_collections.ConfigDict, prepared: PreparedData):
    self.config = config
    self.data_dir = prepared.data_dir
    self.build = prepared.build
    dc = config.data
    self.spec = InputSpec.from_config(dc, seed=config.seed, data_dir=prepared.data_dir)
    self.tokenizer = tokenization.load_tokenizer(prepared.vocabulary, max_length=dc.max_length,
                                                 lower_case=dc.lower_case)
    vocab = self.tokenizer.vocab_size
    if vocab > config.model.text.vocab_size:
      raise ValueError(f"the tokenizer has {vocab} tokens but config.model.text.vocab_size = "
                       f"{config.model.text.vocab_size}")
    self.num_train_examples = num_examples(self.spec, dc.train_split)
    self.num_eval_examples = num_examples(self.spec, dc.eval_split)
    if config.eval.max_examples:
      self.num_eval_examples = min(self.num_eval_examples, config.eval.max_examples)

  def example_batch(self) -> dict[str, np.ndarray]:
    """A small host batch fixing the input shapes (for parameter initialisation)."""
    return next(iter(self.eval_batches()))

  def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """Endless, seeded, deterministic train batches starting at `start_step`."""
    return batches.create_input_iterator(
        self.spec, split=self.config.data.train_split, tokenizer=self.tokenizer,
        batch_size=self.config.train.batch_size, train=True, start_step=start_step,
        device_normalize=True)

  def eval_batches(self, split: str = "", dataset: str = "") -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split` (default `config.data.eval_split`) of `dataset` (default the
    pre-training data; else a prepared tfds `name` or `name/config` in the same data_dir,
    stored in the same layout), with `valid`; `config.eval.max_examples` caps it."""
    spec = self.spec.of_dataset(dataset) if dataset else self.spec
    return batches.create_input_iterator(
        spec, split=split or self.config.data.eval_split, tokenizer=self.tokenizer,
        batch_size=self.config.eval.batch_size, train=False, start_step=0,
        max_examples=self.config.eval.max_examples or None, device_normalize=True)
