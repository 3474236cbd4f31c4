"""The pre-training input path: stored examples (interfaces.md §1) → host batches (§2).

    from asg_jax.data.pipeline import batches
    from asg_jax.data.pipeline.spec import InputSpec
    spec = InputSpec.from_config(config.data, seed=config.seed, data_dir=data_dir)
    it = batches.create_input_iterator(spec, split="train", tokenizer=tok, batch_size=288,
                                       train=True, start_step=0)
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
  (`normalization.normalize_numpy`), or on device by the model (the pre-training feed,
  `device_normalize=True`). Captions are tokenised on the host with the Rust tokenizer
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

The modules:

  spec.py              `InputSpec`: the dataset and every config.data knob, in one value
  data_source.py       `DataSource`: the training job's tokenizer, counts and iterators over
                       data `asg_jax.data.prepare` left ready
  batches.py           `create_input_iterator` / `iterate_source`: the parts put together
  source.py            `ExampleSource` (shards + decoder), `open_split` (the tfds split)
  stream.py            tf.data: epochs, file order, shuffle, decode + geometry, batching;
                       the captions of a split (`read_captions`)
  host.py              tokenise, normalise, region words, eval padding, thread prefetcher
  downstream_input.py  the downstream builders' splits for the transfer protocols (§1b)
  random_batch.py      a random host batch of §2 (benchmarks, tests; no TensorFlow)

Nothing here imports TensorFlow on `import asg_jax.data.pipeline`; each module imports
what it needs.
"""
