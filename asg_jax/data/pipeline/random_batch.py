"""A random host batch in the exact layout of docs/interfaces.md §2 (benchmarks, tests).

No TensorFlow, no tfds, no tokenizer: what the train step reads, at the shapes a config
fixes, with full-length captions (the worst case for the text tower), one word per token
after [CLS], and every region valid with a box and a sentence set — so every loss term and
every head does its full work.
"""
from __future__ import annotations

import ml_collections
import numpy as np

NUM_TAGS = 40
NUM_CHEXPERT = 14


def random_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int = 0
                 ) -> dict[str, np.ndarray]:
  """`batch_size` random examples at the shapes of `config.data` (interfaces.md §2).

  Returns:
    `image` uint8 `[B, S, S, 1]` (the feed's grey pixels, normalised on device),
    `input_ids/attention_mask/word_ids [B, L]`, `tags [B, 40]`, `chexpert [B, 14]`,
    `region_boxes [B, R, 4]`, `region_mask/region_ids [B, R]`,
    `region_word_index [B, R, K]`, `boxes_annotated/index [B]`.
  """
  dc = config.data
  rng = np.random.default_rng(seed)
  b, s, length = batch_size, dc.image_size, dc.max_length
  r, k = dc.max_regions, dc.max_region_words
  vocab = config.model.text.vocab_size
  input_ids = rng.integers(5, vocab, (b, length), dtype=np.int32)
  input_ids[:, 0], input_ids[:, -1] = 2, 3            # [CLS] ... [SEP]
  word_ids = np.broadcast_to(np.arange(-1, length - 1, dtype=np.int32), (b, length)).copy()
  word_ids[:, -1] = -1                                 # [CLS] and [SEP] are no words
  num_words = length - 2
  x1 = rng.uniform(0, s / 2, (b, r))
  y1 = rng.uniform(0, s / 2, (b, r))
  boxes = np.stack([x1, y1, x1 + rng.uniform(8, s / 2, (b, r)),
                    y1 + rng.uniform(8, s / 2, (b, r))], -1).clip(0, s).astype(np.float32)
  start = rng.integers(0, max(num_words - k, 1), (b, r, 1))
  rwi = (start + np.arange(min(k, num_words))).astype(np.int32)
  if rwi.shape[-1] < k:
    rwi = np.concatenate([rwi, np.full((b, r, k - rwi.shape[-1]), -1, np.int32)], -1)
  return {
      "image": rng.integers(0, 256, (b, s, s, 1), dtype=np.uint8),
      "input_ids": input_ids,
      "attention_mask": np.ones((b, length), np.int32),
      "word_ids": word_ids,
      "tags": rng.integers(-1, 2, (b, NUM_TAGS)).astype(np.int32),
      "chexpert": rng.integers(0, 2, (b, NUM_CHEXPERT)).astype(np.float32),
      "region_boxes": boxes,
      "region_mask": np.ones((b, r), bool),
      "region_ids": np.broadcast_to(np.arange(r, dtype=np.int32), (b, r)).copy(),
      "region_word_index": rwi,
      "boxes_annotated": np.ones((b,), bool),
      "index": np.arange(b, dtype=np.int64),
  }
