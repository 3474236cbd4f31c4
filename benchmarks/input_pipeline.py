"""Input-pipeline throughput (examples/s) on synthetic stored examples.

Writes synthetic examples in the stored format of interfaces.md §1 (PNG images with
longest side `resize`, serialized by a tfds `FeaturesDict` into tfrecords, exactly what the
builders write), then times the real pipeline (`asg_jax.data.pipeline`) at

* the real geometry: stored 256 → crop 224, L = 112, K = 110, R = 23 (ImageNet norm);
* the demo geometry: stored 128 → crop 112, L = 64, K = 63, R = 23.

Three numbers per geometry: tf.data alone (read, PNG decode, geometry, regions, batching),
host tokenisation + region_word_index alone, and the full host batches (what the train loop
gets). Run with `taskset -c 0` for a one-core figure.

    .venv/bin/python benchmarks/input_pipeline.py [--examples 512] [--batch 64] [--seconds 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from asg_jax.config import ASG_REGIONS_23  # noqa: E402
from asg_jax.data.pipeline import batches, host, stream  # noqa: E402
from asg_jax.data.pipeline.source import ExampleSource  # noqa: E402
from asg_jax.data.pipeline.spec import InputSpec  # noqa: E402
from asg_jax.data.reports import tokenization  # noqa: E402
from asg_jax.data.builders.chest_builder import features  # noqa: E402  (the builders' stored format)

WORDS = ("the heart size is normal lungs are clear there is no pleural effusion or "
         "pneumothorax mild bibasilar atelectasis left lower lobe opacity may represent "
         "pneumonia cardiomediastinal silhouette within limits stable small right "
         "costophrenic angle blunting degenerative changes of the thoracic spine").split()


def synthetic_example(rng: np.random.Generator, side: int) -> dict:
  """A chest-like smooth grey image (PNG size close to a real radiograph's) + report."""
  short = int(rng.integers(int(side * 0.8), side + 1))
  h, w = (side, short) if rng.random() < 0.5 else (short, side)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  img = 120 + 60 * np.sin(6 * xx + rng.uniform(0, 6)) * np.cos(4 * yy)
  img += rng.normal(0, 6, (h, w))
  image = np.clip(img, 0, 255).astype(np.uint8)[..., None]
  ns = int(rng.integers(3, 9))
  sentences = [" ".join(rng.choice(WORDS, int(rng.integers(4, 12)))) for _ in range(ns)]
  r = int(rng.integers(15, 30))
  x1, y1 = rng.uniform(0, w * 0.7, r), rng.uniform(0, h * 0.7, r)
  boxes = np.stack([x1, y1, x1 + rng.uniform(10, w * 0.3, r), y1 + rng.uniform(10, h * 0.3, r)],
                   -1).astype(np.float32)
  rsi = -np.ones((r, 3), np.int32)
  for j in range(r):
    k = int(rng.integers(1, 4))
    rsi[j, :k] = rng.choice(ns, min(k, ns), replace=False).tolist() + [-1] * (k - min(k, ns))
  return {"image": image, "sentences": sentences, "caption": " ".join(sentences),
          "tags": rng.integers(-1, 2, 40).astype(np.int8),
          "chexpert": rng.choice([1.0, 0.0, -1.0, np.nan], 14).astype(np.float32),
          "region_boxes": boxes, "region_ids": rng.permutation(29)[:r].astype(np.int32),
          "region_sentence_index": rsi, "study_id": "s0", "dicom_id": "d0",
          "subject_id": "p0", "region_source": "atlas", "view_position": "PA",
          "original_size": np.asarray([h, w], np.int32)}


def write_tfrecords(directory: str, n: int, side: int, num_files: int = 4
                    ) -> ExampleSource:
  feats = features()
  rng = np.random.default_rng(0)
  files, size = [], 0
  for f in range(num_files):
    path = os.path.join(directory, f"stored-{side}.tfrecord-{f:05d}")
    count = n // num_files + (f < n % num_files)
    with tf.io.TFRecordWriter(path) as writer:
      for _ in range(count):
        record = feats.serialize_example(synthetic_example(rng, side))
        size += len(record)
        writer.write(record)
    files.append((path, count))
  print(f"  wrote {n} examples ({size / n / 1024:.1f} KiB each) in {num_files} files")
  return ExampleSource.from_tfrecords(files, feats, name=f"synthetic-{side}")


def rate(iterator, batch: int, seconds: float, warmup: int = 2) -> float:
  for _ in range(warmup):
    next(iterator)
  n, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(iterator)
    n += batch
  return n / (time.perf_counter() - start)


def bench(source, tok, *, resize, size, length, words, batch, seconds) -> dict:
  spec = InputSpec(image_size=size, resize=resize, max_regions=23, max_region_words=words,
                   max_length=length, normalization="imagenet", regions=ASG_REGIONS_23,
                   shuffle_buffer=1024, seed=0)
  ds = stream.make_dataset(source, spec, local_batch_size=batch, train=True)
  tfdata = rate(ds.as_numpy_iterator(), batch, seconds)
  raws = list(ds.take(4).as_numpy_iterator())
  counter = iter(range(1 << 30))
  host_only = rate(iter(lambda: host.finalize_batch(raws[next(counter) % 4], tok, words),
                        None), batch, seconds / 2)
  full = rate(batches.iterate_source(source, spec, tokenizer=tok, batch_size=batch, train=True),
              batch, seconds)
  # the pre-training feed (DataSource): uint8 grey pixels, normalised on device
  feed = rate(batches.iterate_source(source, spec, tokenizer=tok, batch_size=batch, train=True,
                                     device_normalize=True), batch, seconds)
  return {"tf.data": tfdata, "host tokenise+words": host_only,
          "full host batches (float32 RGB)": full, "full host batches (uint8 feed)": feed}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--examples", type=int, default=512)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--seconds", type=float, default=8.0)
  args = parser.parse_args()
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  print(f"cores available: {cores}; tf {tf.__version__}")
  with tempfile.TemporaryDirectory() as tmp:
    for resize, size, length, words in ((256, 224, 112, 110), (128, 112, 64, 63)):
      print(f"geometry {resize} -> {size}, L={length}, K={words}, batch {args.batch}")
      source = write_tfrecords(tmp, args.examples, resize)
      vocab = os.path.join(tmp, "vocab.txt")
      tokenization.build_wordpiece_vocab(stream.captions_of(source), 400, vocab)
      tok = tokenization.load_tokenizer(vocab, max_length=length, lower_case=True)
      result = bench(source, tok, resize=resize, size=size, length=length, words=words,
                     batch=args.batch, seconds=args.seconds)
      for name, value in result.items():
        print(f"  {name:22s} {value:8.0f} examples/s  ({value / cores:6.0f} per core)")


if __name__ == "__main__":
  main()
