"""Preparing the pre-training data: one explicit step, before anything reads it.

    data = asg_jax.data.prepare(config, workdir, bound_tokenizer=...)   # a DataSource

`prepare`, in this order:

1. checks `config.data.name` / `builder_config` against the registered tfds builders (reads
   no data), and that the demo is asked of `mimic_cxr` only;
2. with `config.data.demo_num_studies > 0`, generates the synthetic demo in the real
   MIMIC-CXR layout into `config.data.manual_dir`, or `<data_dir>/demo_manual` when empty —
   only ever into a folder the generator created (`demo/owned_dir.py`);
3. (re)builds the tfds dataset from the manual_dir when it is not built yet or its label
   files changed (`builders/build.py`, `config.data.rebuild`);
4. learns the WordPiece vocabulary from the training captions (`config.data.demo_vocab_size`,
   stored next to the build, so a rebuild learns it again) — unless `bound_tokenizer` (the
   vocabulary a trained workdir's checkpoints are bound to: `lineage.bound_tokenizer`, what
   `train.train_and_evaluate` passes) or `config.data.tokenizer` names the vocabulary;

and returns the `DataSource` (`pipeline/data_source.py`) that reads the result. The tfds
data_dir is `config.data.data_dir`, or `<workdir>/data` when empty.

Several processes: process 0 does 2–4 while the others wait, then they open what it wrote.
Two runs sharing one data_dir take turns for 2–4 (the build alone also takes its own turn:
`build.prepare`).

TensorFlow, tfds and the builders are imported when `prepare` runs, not on
`import asg_jax.data`.
"""
from __future__ import annotations

import os

import ml_collections

from asg_jax import distributed, locking
from asg_jax.errors import ConfigError


def prepare(config: ml_collections.ConfigDict, workdir: str, *,
            bound_tokenizer: str | None = None):
  """Generates, builds and learns what `config.data` needs (module docstring); returns the
  `DataSource` over it.

  Raises:
    ConfigError: an unknown builder / config, or the demo asked of another builder.
    owned_dir.NotOwnedError: the demo's manual_dir holds files the generator did not write.
    FileNotFoundError: nothing is built and there is no manual_dir to build from.
    ValueError: no vocabulary is named nor to be learnt, or it has more tokens than
      `config.model.text.vocab_size`.
  """
  # pylint: disable=import-outside-toplevel  (TensorFlow and tfds load here)
  from asg_jax.data.builders import build
  from asg_jax.data.pipeline import data_source
  dc = config.data
  build.check_builder(dc.name, dc.builder_config)     # before anything is generated or built
  data_dir = os.path.abspath(dc.data_dir or os.path.join(workdir, "data"))
  manual_dir = dc.manual_dir or None
  if dc.demo_num_studies > 0:
    if dc.name != "mimic_cxr":
      raise ConfigError(
          f"config.data.demo_num_studies = {dc.demo_num_studies} generates the MIMIC-CXR-"
          f"layout demo, but config.data.name = {dc.name!r}. To train on your own pairs use "
          f"configs/own_data.py (or set config.data.demo_num_studies=0 and "
          f"config.data.builder_config=default).")
    manual_dir = dc.manual_dir or os.path.join(data_dir, "demo_manual")
  # multi-host: process 0 generates, builds and learns the vocabulary; the others wait,
  # then open what it wrote. Two runs sharing one data_dir take turns for all three (the
  # build alone also takes its own turn: build.prepare).
  with distributed.first_process_only("data") as mine:
    if mine:
      turn = os.path.join(data_dir, f".{dc.name}.{dc.builder_config or 'default'}"
                          f".data.lock")
      with locking.take_turns(turn, f"preparing the data of {dc.name} in {data_dir}"):
        if dc.demo_num_studies > 0:
          from asg_jax.data.demo import synthetic
          synthetic.ensure_demo(manual_dir, num_studies=dc.demo_num_studies,
                                seed=dc.demo_seed)
        built = build.prepare(dc.name, dc.builder_config, data_dir, manual_dir,
                              rebuild=dc.rebuild)
        vocabulary = _vocabulary(config, data_dir, built, bound_tokenizer)
  if not mine:
    built = build.prepare(dc.name, dc.builder_config, data_dir, manual_dir, rebuild="never")
    vocabulary = _vocabulary(config, data_dir, built, bound_tokenizer)
  return data_source.DataSource(config, data_source.PreparedData(data_dir, built, vocabulary))


def _vocabulary(config: ml_collections.ConfigDict, data_dir: str, built: dict,
                bound_tokenizer: str | None) -> str:
  """What the tokenizer is loaded from; learns the WordPiece vocabulary when it is the one
  to use and is not there yet."""
  # pylint: disable=import-outside-toplevel  (TensorFlow loads here)
  from asg_jax.data.pipeline import stream
  from asg_jax.data.pipeline.spec import InputSpec
  from asg_jax.data.reports import tokenization
  dc = config.data
  if bound_tokenizer:   # the workdir has checkpoints: the vocabulary they trained with
    return bound_tokenizer
  if dc.tokenizer:
    return dc.tokenizer
  if not dc.demo_vocab_size:
    raise ValueError("config.data.tokenizer is empty: name a vocab.txt / local model dir / "
                     "cached hub name, or set config.data.demo_vocab_size to train one")
  # next to the built dataset: a rebuild (changed inputs) also retrains the vocabulary
  path = os.path.join(built["data_dir"], f"wordpiece_{dc.demo_vocab_size}.txt")
  if not os.path.exists(path):
    spec = InputSpec.from_config(dc, seed=config.seed, data_dir=data_dir)
    tokenization.build_wordpiece_vocab(stream.read_captions(spec, dc.train_split),
                                       dc.demo_vocab_size, path, lowercase=dc.lower_case)
  return path
