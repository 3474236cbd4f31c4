"""The training job's data source: config.data → tokenizer + train/eval batch iterators.

    data = DataSource(config, workdir)
    data.train_batches(start_step)   # host batches (interfaces.md §2), resumable by step
    data.eval_batches()              # one pass over the eval split, last batch padded (`valid`)

With `config.data.demo_num_studies > 0` the synthetic demo is generated in the real
MIMIC-CXR layout and built by the real `mimic_cxr` builder on first use; other datasets are
built from `config.data.manual_dir` (see `DataSource`).
"""
from __future__ import annotations

import logging
import os
from typing import Iterator

import ml_collections
import numpy as np

from asg_jax import config as config_lib

logger = logging.getLogger(__name__)


class DataSource:
  """Tokenizer, example counts and batch iterators for one config.

  The tfds data_dir is `config.data.data_dir`, or `<workdir>/data` when empty. With
  `config.data.demo_num_studies > 0` the demo is generated into `config.data.manual_dir`, or
  `<data_dir>/demo_manual` when empty — only ever into a folder the generator created
  (`owned_dir`). The dataset is (re)built from the manual_dir when not built yet or when its
  label files changed (`build.prepare`, `config.data.rebuild`). `bound_tokenizer`: the
  vocabulary a trained workdir's checkpoints are bound to (`lineage.bound_tokenizer`, what
  `train.train_and_evaluate` passes), loaded instead of any configured or learnt one.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str,
               bound_tokenizer: str | None = None):
    from asg_jax import distributed  # pylint: disable=import-outside-toplevel
    from asg_jax.data import build, pipeline, tokenization  # pylint: disable=import-outside-toplevel
    self.config = config
    self.workdir = workdir
    self.bound_tokenizer = bound_tokenizer
    dc = config.data
    build.check_builder(dc.name, dc.builder_config)     # before anything is generated or built
    self.data_dir = os.path.abspath(dc.data_dir or os.path.join(workdir, "data"))
    self._pipeline = pipeline
    manual_dir = dc.manual_dir or None
    if dc.demo_num_studies > 0:
      from asg_jax.data import synthetic  # pylint: disable=import-outside-toplevel
      if dc.name != "mimic_cxr":
        raise config_lib.ConfigError(
            f"config.data.demo_num_studies = {dc.demo_num_studies} generates the MIMIC-CXR-"
            f"layout demo, but config.data.name = {dc.name!r}. To train on your own pairs use "
            f"configs/own_data.py (or set config.data.demo_num_studies=0 and "
            f"config.data.builder_config=default).")
      manual_dir = dc.manual_dir or os.path.join(self.data_dir, "demo_manual")
    # multi-host: process 0 generates, builds and trains the vocabulary; the others wait,
    # then open what it wrote. Two runs sharing one data_dir take turns for all three (the
    # build alone also takes its own turn: build.prepare).
    from asg_jax import locking  # pylint: disable=import-outside-toplevel
    with distributed.first_process_only("data") as mine:
      if mine:
        turn = os.path.join(self.data_dir, f".{dc.name}.{dc.builder_config or 'default'}"
                            f".data.lock")
        with locking.take_turns(turn, f"preparing the data of {dc.name} in {self.data_dir}"):
          if dc.demo_num_studies > 0:
            synthetic.ensure_demo(manual_dir, num_studies=dc.demo_num_studies,
                                  seed=dc.demo_seed)
          self.build = build.prepare(dc.name, dc.builder_config, self.data_dir, manual_dir,
                                     rebuild=dc.rebuild)
          self.tokenizer = self._tokenizer(tokenization)
    if not mine:
      self.build = build.prepare(dc.name, dc.builder_config, self.data_dir, manual_dir,
                                 rebuild="never")
      self.tokenizer = self._tokenizer(tokenization)
    vocab = self.tokenizer.vocab_size
    if vocab > config.model.text.vocab_size:
      raise ValueError(f"the tokenizer has {vocab} tokens but config.model.text.vocab_size = "
                       f"{config.model.text.vocab_size}")
    self.num_train_examples = pipeline.num_examples(self._kwargs(), dc.train_split)
    self.num_eval_examples = pipeline.num_examples(self._kwargs(), dc.eval_split)
    if config.eval.max_examples:
      self.num_eval_examples = min(self.num_eval_examples, config.eval.max_examples)

  def _kwargs(self) -> dict:
    dc = self.config.data
    return dict(name=dc.name, builder_config=dc.builder_config, data_dir=self.data_dir,
                image_size=dc.image_size, resize=dc.resize, max_regions=dc.max_regions,
                max_region_words=dc.max_region_words, max_length=dc.max_length,
                normalization=dc.normalization, regions=tuple(dc.regions),
                shuffle_buffer=dc.shuffle_buffer)

  def _tokenizer(self, tokenization):
    dc = self.config.data
    if self.bound_tokenizer:   # the workdir has checkpoints: the vocabulary they trained with
      return tokenization.load_tokenizer(self.bound_tokenizer, max_length=dc.max_length,
                                         lower_case=dc.lower_case)
    if dc.tokenizer:
      return tokenization.load_tokenizer(dc.tokenizer, max_length=dc.max_length,
                                         lower_case=dc.lower_case)
    if not dc.demo_vocab_size:
      raise ValueError("config.data.tokenizer is empty: name a vocab.txt / local model dir / "
                       "cached hub name, or set config.data.demo_vocab_size to train one")
    # next to the built dataset: a rebuild (changed inputs) also retrains the vocabulary
    path = os.path.join(self.build["data_dir"], f"wordpiece_{dc.demo_vocab_size}.txt")
    if not os.path.exists(path):
      captions = self._pipeline_captions()
      tokenization.build_wordpiece_vocab(captions, dc.demo_vocab_size, path,
                                         lowercase=dc.lower_case)
    return tokenization.load_tokenizer(path, max_length=dc.max_length, lower_case=dc.lower_case)

  def _pipeline_captions(self) -> list[str]:
    from asg_jax.data import pipeline  # pylint: disable=import-outside-toplevel
    return pipeline.read_captions(self._kwargs(), self.config.data.train_split)

  def example_batch(self) -> dict[str, np.ndarray]:
    """A small host batch fixing the input shapes (for parameter initialisation)."""
    return next(iter(self.eval_batches()))

  def train_batches(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """Endless, seeded, deterministic train batches starting at `start_step`."""
    return self._pipeline.create_input_iterator(
        **self._kwargs(), split=self.config.data.train_split, tokenizer=self.tokenizer,
        batch_size=self.config.train.batch_size, train=True, seed=self.config.seed,
        start_step=start_step, device_normalize=True)

  def eval_batches(self, split: str = "", dataset: str = "") -> Iterator[dict[str, np.ndarray]]:
    """One pass over `split` (default `config.data.eval_split`) of `dataset` (default the
    pre-training data; else a prepared tfds `name` or `name/config` in `config.data.data_dir`
    stored in the same layout), with `valid`; `config.eval.max_examples` caps it."""
    kwargs = self._kwargs()
    if dataset:
      name, _, builder_config = dataset.partition("/")
      kwargs.update(name=name, builder_config=builder_config or None)
    return self._pipeline.create_input_iterator(
        **kwargs, split=split or self.config.data.eval_split, tokenizer=self.tokenizer,
        batch_size=self.config.eval.batch_size, train=False, seed=self.config.seed,
        start_step=0, max_examples=self.config.eval.max_examples or None,
        device_normalize=True)
