"""The host side of the input pipeline: tf.data batches → host batches (interfaces.md §2).

`finalize_batch` normalises the images, tokenises the captions (one `encode_batch` per
batch) and points the regions at their words (`region_word_index`); `pad_batch`,
`eval_padding` and `invalidate` make the fixed-size eval batches (`valid`); `host_map`
is the thread prefetcher that runs this host work ahead of the consumer, in order.
"""
from __future__ import annotations

import concurrent.futures
import queue
import threading
from typing import Callable, Iterator

import numpy as np

from asg_jax.data import normalization as normalization_lib

BATCH_KEYS = ("image", "input_ids", "attention_mask", "word_ids", "tags", "chexpert",
              "region_boxes", "region_mask", "region_ids", "region_word_index",
              "boxes_annotated", "index")
HOST_PREFETCH = 2


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
                   normalization: str | None = "imagenet") -> dict[str, np.ndarray]:
  """tf.data batch (see `make_dataset`) → host batch of interfaces.md §2: normalises the
  image (`normalization=None`: keeps the uint8 pixels, normalised later on device),
  tokenises the captions and points the regions at their words."""
  captions = [c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in raw["caption"]]
  tokens = tokenizer.encode_batch(captions, return_word_starts=True)
  rwi = region_word_index(tokens["word_starts"], raw["sentence_starts"],
                          raw["region_sentences"], max_region_words)
  mask = np.asarray(raw["region_mask"], bool) & (rwi >= 0).any(-1)
  return {
      "image": (np.asarray(raw["image"], np.uint8) if normalization is None
                else normalization_lib.normalize_numpy(raw["image"], normalization)),
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


def pad_batch(batch: dict, size: int) -> dict:
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


def host_map(make_iterator: Callable[[], Iterator], fn: Callable, workers: int,
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


def eval_padding(batches: Iterator[dict], size: int, num_batches: int) -> Iterator[dict]:
  """Pad each batch to `size` rows (`valid`), then add all-padding batches up to
  `num_batches` (so every process yields the same number)."""
  last = None
  for batch in batches:
    last = pad_batch(batch, size)
    num_batches -= 1
    yield last
  while num_batches > 0 and last is not None:   # other processes have one more batch
    yield invalidate(last)
    num_batches -= 1


def invalidate(batch: dict) -> dict:
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
