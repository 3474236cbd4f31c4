"""A tiny in-memory data source with the DataSource interface (docs/interfaces.md §2).

Random but deterministic batches (a function of the step), so train-loop tests run without
building a dataset; the real pipeline is tested in tests/data/.
"""
from __future__ import annotations

import numpy as np


class FakeTokenizer:
  """Hashes whitespace words into a small vocabulary; one piece per word."""

  def __init__(self, vocab_size: int, max_length: int):
    self.vocab_size, self.max_length = vocab_size, max_length

  def encode_batch(self, texts):
    n, length = len(texts), self.max_length
    ids = np.zeros((n, length), np.int32)
    mask = np.zeros((n, length), np.int32)
    word_ids = -np.ones((n, length), np.int32)
    for i, text in enumerate(texts):
      words = text.split()[: length - 2]
      toks = [2] + [5 + (sum(map(ord, w)) % (self.vocab_size - 5)) for w in words] + [3]
      ids[i, : len(toks)] = toks
      mask[i, : len(toks)] = 1
      word_ids[i, 1 : len(toks)] = np.arange(len(toks) - 1)
    return {"input_ids": ids, "attention_mask": mask, "word_ids": word_ids}


def fake_batch(config, batch_size: int, seed: int, nan_image: bool = False) -> dict:
  """One host batch following interfaces.md §2 exactly."""
  rng = np.random.default_rng(seed)
  s, length = config.data.image_size, config.data.max_length
  r, k = config.data.max_regions, config.data.max_region_words
  n_words = rng.integers(4, length - 2, size=batch_size)
  ids = np.zeros((batch_size, length), np.int32)
  mask = np.zeros((batch_size, length), np.int32)
  word_ids = -np.ones((batch_size, length), np.int32)
  for i, n in enumerate(n_words):
    ids[i, 0], ids[i, 1 : n + 1], ids[i, n + 1] = 2, rng.integers(5, 100, size=n), 3
    mask[i, : n + 2] = 1
    word_ids[i, 1 : n + 2] = np.arange(n + 1)
  x1 = rng.uniform(0, s / 2, size=(batch_size, r))
  y1 = rng.uniform(0, s / 2, size=(batch_size, r))
  boxes = np.stack([x1, y1, x1 + rng.uniform(8, s / 2, size=x1.shape),
                    y1 + rng.uniform(8, s / 2, size=x1.shape)], -1).astype(np.float32)
  region_mask = rng.random((batch_size, r)) < 0.5
  rwi = -np.ones((batch_size, r, k), np.int32)
  for i in range(batch_size):
    for j in range(r):
      start = rng.integers(0, n_words[i] - 2)
      rwi[i, j, :3] = np.arange(start, start + 3)
  # the feed's uint8 grey pixels (normalised on device): the same programs as the real
  # pipeline's batches, so the persistent compile cache serves both
  image = rng.integers(0, 256, size=(batch_size, s, s, 1), dtype=np.uint8)
  if nan_image:   # pixels cannot be NaN: a NaN region box poisons ARSA's RoIAlign instead
    region_mask[0, 0] = True
    boxes[0, 0, 0] = np.nan
  return {
      "image": image, "input_ids": ids, "attention_mask": mask, "word_ids": word_ids,
      "tags": rng.integers(-1, 2, size=(batch_size, 40)).astype(np.int32),
      "chexpert": rng.choice([1.0, 0.0, -1.0, np.nan], size=(batch_size, 14)).astype(np.float32),
      "region_boxes": boxes * region_mask[..., None],
      "region_mask": region_mask,
      "region_ids": np.where(region_mask, rng.integers(0, 23, size=(batch_size, r)), -1).astype(np.int32),
      "region_word_index": np.where(region_mask[..., None], rwi, -1).astype(np.int32),
      "boxes_annotated": np.ones(batch_size, bool),
      "index": np.arange(seed * batch_size, (seed + 1) * batch_size, dtype=np.int64),
  }


class FakeData:
  """DataSource stand-in: `train_batches(start_step)` is a pure function of the step."""

  def __init__(self, config, num_train_examples: int = 256, num_eval: int = 40,
               nan_at_step: int | None = None):
    self.config = config
    self.num_train_examples = num_train_examples
    self.num_eval = num_eval
    self.nan_at_step = nan_at_step
    self.tokenizer = FakeTokenizer(config.model.text.vocab_size, config.data.max_length)

  def example_batch(self):
    return fake_batch(self.config, 2, seed=10_000)

  def train_batches(self, start_step: int):
    step = start_step
    while True:
      yield fake_batch(self.config, self.config.train.batch_size, seed=step,
                       nan_image=step == self.nan_at_step)
      step += 1

  def eval_batches(self, split: str = "", dataset: str = ""):
    del split, dataset   # one fake split
    bs = self.config.eval.batch_size
    for start in range(0, self.num_eval, bs):
      batch = fake_batch(self.config, bs, seed=50_000 + start)
      batch["valid"] = np.arange(start, start + bs) < self.num_eval
      yield batch
