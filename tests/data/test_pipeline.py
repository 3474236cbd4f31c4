"""The tf.data pipeline: schema (interfaces.md §2), regions, words, determinism, resume,
eval padding, process shards, and the tfds path (a tiny real tfds builder)."""
import dataclasses
import pathlib

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from asg_jax import data as data_lib
from asg_jax.config import ASG_REGIONS_23
from asg_jax.data.pipeline import batches, host, source, stream
from asg_jax.data.pipeline.spec import InputSpec
from asg_jax.data.reports import tokenization, vocabulary

RESIZE, SIZE, R, L, K = 40, 32, 6, 24, 23
WORDS = ("heart size normal lungs clear no effusion pneumothorax opacity left right base mild "
         "cardiomegaly stable atelectasis").split()
KEEP_IDS = {vocabulary.REGION_INDEX[r] for r in ASG_REGIONS_23}
SCHEMA = {
    "image": (np.float32, (SIZE, SIZE, 3)), "input_ids": (np.int32, (L,)),
    "attention_mask": (np.int32, (L,)), "word_ids": (np.int32, (L,)),
    "tags": (np.int32, (40,)), "chexpert": (np.float32, (14,)),
    "region_boxes": (np.float32, (R, 4)), "region_mask": (np.bool_, (R,)),
    "region_ids": (np.int32, (R,)), "region_word_index": (np.int32, (R, K)),
    "boxes_annotated": (np.bool_, ()), "index": (np.int64, ()),
}
SIGNATURE = dict(
    image=tf.TensorSpec([None, None, 1], tf.uint8), sentences=tf.TensorSpec([None], tf.string),
    tags=tf.TensorSpec([40], tf.int8), chexpert=tf.TensorSpec([14], tf.float32),
    region_boxes=tf.TensorSpec([None, 4], tf.float32), region_ids=tf.TensorSpec([None], tf.int32),
    region_sentence_index=tf.TensorSpec([None, None], tf.int32),
    marker=tf.TensorSpec([], tf.int64))


def make_examples(n, seed=0, side=RESIZE):
  rng = np.random.default_rng(seed)
  out = []
  for i in range(n):
    short = int(rng.integers(side * 2 // 3, side + 1))
    h, w = (side, short) if i % 2 else (short, side)
    ns = int(rng.integers(1, 6))
    sentences = [" ".join(rng.choice(WORDS, int(rng.integers(2, 7)))) for _ in range(ns)]
    r = int(rng.integers(0, 10))
    x1, y1 = rng.uniform(-5, w - 4, r), rng.uniform(-5, h - 4, r)
    boxes = np.stack([x1, y1, x1 + rng.uniform(2, 25, r), y1 + rng.uniform(2, 25, r)], -1)
    rsi = -np.ones((r, 3), np.int32)
    for j in range(r):
      k = int(rng.integers(0, min(3, ns + 1)))   # some regions have no sentence
      rsi[j, :k] = rng.choice(ns, k, replace=False)
    out.append(dict(
        image=rng.integers(0, 256, (h, w, 1)).astype(np.uint8),
        sentences=np.array(sentences, object), tags=rng.integers(-1, 2, 40).astype(np.int8),
        chexpert=rng.choice([1.0, 0.0, -1.0, np.nan], 14).astype(np.float32),
        region_boxes=boxes.astype(np.float32).reshape(-1, 4),
        region_ids=rng.integers(0, 29, r).astype(np.int32), region_sentence_index=rsi,
        marker=np.int64(i)))
  return out


def source_of(examples, num_shards=3, decode=None):
  ds = tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=SIGNATURE)
  return source.ExampleSource.from_dataset(ds, len(examples), num_shards=num_shards,
                                           decode=decode)


@pytest.fixture(scope="module")
def examples():
  return make_examples(50)


@pytest.fixture(scope="module")
def tokenizer(examples, tmp_path_factory):
  path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
  # a small vocab: long words become several pieces (exercises slot aggregation)
  tokenization.build_wordpiece_vocab([" ".join(e["sentences"]) for e in examples], 50, str(path))
  return tokenization.load_tokenizer(str(path), max_length=L, lower_case=True)


SPEC = InputSpec(image_size=SIZE, resize=RESIZE, max_regions=R, max_region_words=K,
                 max_length=L, normalization="imagenet", regions=ASG_REGIONS_23,
                 shuffle_buffer=16, seed=3)
SPEC_FIELDS = {f.name for f in dataclasses.fields(InputSpec)}


def kwargs(tokenizer, **over):
  """`iterate_source`'s arguments: `SPEC` with the `InputSpec` fields of `over`, and the
  pass's own arguments (the rest of `over`)."""
  spec = dataclasses.replace(SPEC, **{k: v for k, v in over.items() if k in SPEC_FIELDS})
  kw = dict(spec=spec, tokenizer=tokenizer, batch_size=8, host_prefetch=2)
  kw.update({k: v for k, v in over.items() if k not in SPEC_FIELDS})
  return kw


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def ref_boxes_eval(ex):
  """NumPy geometry for the eval centre crop (stored side == RESIZE: no resampling)."""
  h, w = ex["image"].shape[:2]
  top, left = (RESIZE - h) // 2, (RESIZE - w) // 2
  off = (RESIZE - SIZE) // 2
  b = ex["region_boxes"].astype(np.float64).copy()
  b[:, [0, 2]] += left - off
  b[:, [1, 3]] += top - off
  area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
  cb = np.clip(b, 0, SIZE)
  inside = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
  return cb, (area > 0) & (inside >= 0.5 * area)


def test_batch_schema_train_and_eval(examples, tokenizer):
  src = source_of(examples)
  batch = next(batches.iterate_source(src, train=True, **kwargs(tokenizer)))
  assert set(batch) == set(SCHEMA)
  for key, (dtype, shape) in SCHEMA.items():
    assert batch[key].dtype == dtype, key
    assert batch[key].shape == (8,) + shape, key
  ev = next(batches.iterate_source(src, train=False, **kwargs(tokenizer)))
  assert set(ev) == set(SCHEMA) | {"valid"} and ev["valid"].dtype == np.bool_
  for b in (batch, ev):
    assert np.all(b["input_ids"][:, 0] == tokenizer.cls_id)
    assert np.all((b["word_ids"] >= -1) & (b["word_ids"] < L - 1))
    assert np.all(b["region_ids"][~b["region_mask"]] == -1)
    assert np.all(b["region_boxes"][~b["region_mask"]] == 0)
    assert np.all(b["region_word_index"][~b["region_mask"]] == -1)
    assert np.all((b["region_word_index"] >= -1) & (b["region_word_index"] < L - 1))
    boxes = b["region_boxes"][b["region_mask"]]
    assert np.all((boxes >= 0) & (boxes <= SIZE)) and np.all(boxes[:, 2:] > boxes[:, :2])


def test_regions_filter_boxes_and_words_vs_reference(examples, tokenizer):
  """Eval batches (centre crop): every region and its words against a NumPy reference."""
  evals = list(batches.iterate_source(source_of(examples), train=False, **kwargs(tokenizer)))
  dropped = {"name": 0, "box": 0, "words": 0, "truncated": 0}
  for b in evals:
    for row in np.nonzero(b["valid"])[0]:
      ex = examples[b["index"][row]]
      sentences = [str(s) for s in ex["sentences"]]
      words_text = " ".join(sentences).split()
      sentence_of_word = np.concatenate([[j] * len(s.split()) for j, s in enumerate(sentences)])
      ids, word_ids = b["input_ids"][row], b["word_ids"][row]
      num_kept = word_ids[b["attention_mask"][row].sum() - 1]     # the [SEP] slot
      dropped["truncated"] += num_kept < len(words_text)
      boxes, visible = ref_boxes_eval(ex)
      want = []   # (region id, box, word slots) packed in stored order
      for j, rid in enumerate(ex["region_ids"]):
        if rid not in KEEP_IDS:
          dropped["name"] += 1
        elif not visible[j]:
          dropped["box"] += 1
        elif len(want) < R:
          sents = set(ex["region_sentence_index"][j][ex["region_sentence_index"][j] >= 0])
          slots = [k for k in range(min(num_kept, len(words_text)))
                   if sentence_of_word[k] in sents]
          dropped["words"] += not slots
          want.append((rid, boxes[j], slots))
      # regions are packed first; the ones left without words are then invalid
      expected_mask = [bool(w) for _, _, w in want] + [False] * (R - len(want))
      np.testing.assert_array_equal(b["region_mask"][row], expected_mask)
      for r, (rid, box, slots) in enumerate(want):
        if not slots:
          continue
        assert b["region_ids"][row, r] == rid
        np.testing.assert_allclose(b["region_boxes"][row, r], box, atol=1e-4)
        rwi = b["region_word_index"][row, r]
        np.testing.assert_array_equal(rwi[rwi >= 0], slots)
        # decode the words back from the token ids: the region's sentences' words
        decoded = ["".join(tokenizer.id_to_token(t).removeprefix("##")
                           for t in ids[word_ids == s]) for s in slots]
        full = [words_text[k] for k in slots]
        assert decoded[:-1] == full[:-1]
        assert full[-1].startswith(decoded[-1])     # the last kept word may be cut
  assert all(dropped.values()), dropped


def test_determinism_and_resume_across_epochs(examples, tokenizer):
  src = source_of(examples)
  run1 = take(batches.iterate_source(src, train=True, start_step=0, **kwargs(tokenizer)), 9)
  run2 = take(batches.iterate_source(src, train=True, start_step=0,
                                     **kwargs(tokenizer, host_prefetch=0)), 9)
  assert_batches_equal(run1, run2)
  # 50 examples, 8 per step: step 6 crosses into epoch 1; epoch 1 is a different order
  idx = np.concatenate([b["index"] for b in run1])
  assert sorted(idx[:50]) == list(range(50))
  assert not np.array_equal(idx[:22], idx[50:72])
  for start in (2, 5, 7):   # inside epoch 0, across the boundary, inside epoch 1
    resumed = take(batches.iterate_source(src, train=True, start_step=start,
                                          **kwargs(tokenizer)), 9 - start)
    assert_batches_equal(resumed, run1[start:])
  other_seed = take(batches.iterate_source(src, train=True, **kwargs(tokenizer, seed=4)), 2)
  assert not np.array_equal(other_seed[0]["index"], run1[0]["index"])


def test_resume_does_not_decode_skipped_examples(tokenizer):
  exs = make_examples(400, seed=5)   # one epoch >> anything tf.data prefetches
  decoded = []

  def record(marker):
    decoded.append(int(marker))
    return marker

  def decode(ex):
    marker = tf.py_function(record, [ex["marker"]], tf.int64)
    with tf.control_dependencies([marker]):
      return dict(ex, image=tf.identity(ex["image"]))

  kw = kwargs(tokenizer, batch_size=4, host_prefetch=0)
  full = take(batches.iterate_source(source_of(exs, num_shards=1), train=True, **kw), 10)
  skipped = set(np.concatenate([b["index"] for b in full[:8]]).tolist())
  it = batches.iterate_source(source_of(exs, num_shards=1, decode=decode), train=True,
                              start_step=8, **kw)
  got = take(it, 2)
  assert_batches_equal(got, full[8:])
  assert decoded, "the decode function was not called"
  assert not skipped & set(decoded), sorted(skipped & set(decoded))
  print(f"decoded after resume: {len(decoded)}")


def test_eval_padding_and_valid(examples, tokenizer):
  evals = list(batches.iterate_source(source_of(examples), train=False, **kwargs(tokenizer)))
  assert len(evals) == 7                               # ceil(50 / 8)
  valid = np.concatenate([b["valid"] for b in evals])
  index = np.concatenate([b["index"] for b in evals])
  np.testing.assert_array_equal(valid, np.arange(56) < 50)
  np.testing.assert_array_equal(index[:50], np.arange(50))   # split order
  assert np.all(index[50:] == -1)
  last = evals[-1]
  assert not last["region_mask"][2:].any()
  np.testing.assert_array_equal(last["image"][2:], np.repeat(last["image"][:1], 6, 0))
  capped = list(batches.iterate_source(source_of(examples), train=False, max_examples=20,
                                       **kwargs(tokenizer)))
  assert len(capped) == 3 and sum(b["valid"].sum() for b in capped) == 20
  # eval is deterministic and ignores the seed (centre crop, split order)
  again = list(batches.iterate_source(source_of(examples), train=False,
                                      **kwargs(tokenizer, seed=99)))
  assert_batches_equal(evals, again)


def _global_batches(src, tokenizer, processes, n, **over):
  """The global batches the `processes` processes make together: each step's process
  batches concatenated in process order (the row order of `parallel.shard_batch`)."""
  its = [batches.iterate_source(src, process_index=p, process_count=processes,
                                **kwargs(tokenizer, **over)) for p in range(processes)]
  per_proc = [take(it, n) if over.get("train", True) else list(it) for it in its]
  assert len({len(b) for b in per_proc}) == 1          # every process: the same count
  return [{k: np.concatenate([pb[s][k] for pb in per_proc]) for k in per_proc[0][s]}
          for s in range(len(per_proc[0]))]


@pytest.mark.slow
def test_global_batches_are_the_same_for_any_number_of_processes(tokenizer):
  exs = make_examples(51, seed=2)
  src = source_of(exs, num_shards=4)
  # training: 7 global batches of 8 cross the 51-example epoch; every topology makes the
  # same global batches, image for image (random crops are seeded per example)
  one = _global_batches(src, tokenizer, 1, 7, train=True)
  for processes in (2, 8):
    assert_batches_equal(one, _global_batches(src, tokenizer, processes, 7, train=True))
  first = np.concatenate([b["index"] for b in one])
  assert sorted(first[:51].tolist()) == list(range(51))   # an epoch is a permutation
  # resuming at step 3 on 2 processes continues the 1-process stream
  assert_batches_equal(one[3:], _global_batches(src, tokenizer, 2, 4, train=True,
                                                start_step=3))
  # eval: ceil(51 / 8) = 7 batches on every process, split order, padding at the end; with
  # 8 processes of 1 row, processes 3-7 have nothing in the last batch (all padding)
  ev1 = _global_batches(src, tokenizer, 1, 0, train=False)
  for processes in (8,):
    ev = _global_batches(src, tokenizer, processes, 0, train=False)
    assert len(ev) == 7
    for a, b in zip(ev1, ev):
      np.testing.assert_array_equal(a["valid"], b["valid"])
      np.testing.assert_array_equal(a["index"], b["index"])
      np.testing.assert_array_equal(a["image"][a["valid"]], b["image"][b["valid"]])
  index = np.concatenate([b["index"] for b in ev1])
  np.testing.assert_array_equal(index[:51], np.arange(51))
  assert np.all(index[51:] == -1)
  # fewer examples than processes: the processes without any yield one all-padding batch
  tiny = _global_batches(source_of(exs[:3], num_shards=1), tokenizer, 8, 0, train=False)
  assert len(tiny) == 1
  np.testing.assert_array_equal(tiny[0]["valid"], np.arange(8) < 3)
  np.testing.assert_array_equal(tiny[0]["index"], [0, 1, 2] + [-1] * 5)
  assert not tiny[0]["region_mask"][3:].any()
  with pytest.raises(ValueError, match="divisible"):
    batches.iterate_source(src, train=True, process_index=0, process_count=3,
                           **kwargs(tokenizer))


def test_bad_arguments(examples, tokenizer):
  src = source_of(examples)
  with pytest.raises(ValueError, match="unknown region"):
    batches.iterate_source(src, train=True, **kwargs(tokenizer, regions=("left lung", "liver")))
  with pytest.raises(ValueError, match="normalization"):
    batches.iterate_source(src, train=True, **kwargs(tokenizer, normalization="none"))
  with pytest.raises(ValueError, match="max_length"):
    batches.iterate_source(src, train=True, **kwargs(tokenizer, max_length=L + 1))


# ------------------------------------------------------------------ the tfds path
class AsgJaxPipelineTestStored(tfds.core.GeneratorBasedBuilder):
  """A minimal builder with the stored features of interfaces.md §1."""
  VERSION = tfds.core.Version("1.0.0")
  EXAMPLES = make_examples(30, seed=9)

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 1), encoding_format="png"),
        "study_id": tfds.features.Text(),
        "sentences": tfds.features.Sequence(tfds.features.Text()),
        "caption": tfds.features.Text(),
        "tags": tfds.features.Tensor(shape=(40,), dtype=np.int8),
        "chexpert": tfds.features.Tensor(shape=(14,), dtype=np.float32),
        "region_boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
        "region_ids": tfds.features.Tensor(shape=(None,), dtype=np.int32),
        "region_sentence_index": tfds.features.Tensor(
            shape=(None, None), dtype=np.int32, encoding=tfds.features.Encoding.ZLIB),
    }))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0, 20), "validation": self._generate_examples(20, 30)}

  def _generate_examples(self, lo, hi):
    for i in range(lo, hi):
      ex = dict(self.EXAMPLES[i])
      ex.pop("marker")
      ex["sentences"] = [str(s) for s in ex["sentences"]]
      ex["caption"] = " ".join(ex["sentences"])
      ex["study_id"] = f"s{i}"
      yield f"{i:04d}", ex


def test_tfds_split_end_to_end(tmp_path, tokenizer):
  builder = AsgJaxPipelineTestStored(data_dir=str(tmp_path))
  builder.download_and_prepare()
  spec = dataclasses.replace(SPEC, name="asg_jax_pipeline_test_stored", builder_config=None,
                             data_dir=str(tmp_path), normalization="half", shuffle_buffer=8,
                             seed=0)
  assert source.num_examples(spec, "train") == 20
  assert source.num_examples(spec, "validation") == 10
  # tfds serves the split in its own (hashed-key) order: compare by `index` -> caption
  train_ds = builder.as_dataset(split="train", shuffle_files=False)
  stored = [(" ".join(s.decode() for s in ex["sentences"]), ex["image"])
            for ex in tfds.as_numpy(train_ds)]
  assert stream.read_captions(spec, "train") == [c for c, _ in stored]
  common = dict(tokenizer=tokenizer, process_index=0, process_count=1)
  ev = list(batches.create_input_iterator(spec, **common, split="train", batch_size=8,
                                          train=False, start_step=0))
  assert len(ev) == 3 and sum(b["valid"].sum() for b in ev) == 20
  index = np.concatenate([b["index"][b["valid"]] for b in ev])
  np.testing.assert_array_equal(index, np.arange(20))
  for b in ev:
    for row in np.nonzero(b["valid"])[0]:
      caption, image = stored[b["index"][row]]
      want = tokenizer.encode_batch([caption])["input_ids"][0]
      np.testing.assert_array_equal(b["input_ids"][row], want)
      h, w = image.shape[:2]
      top, left, off = (RESIZE - h) // 2, (RESIZE - w) // 2, (RESIZE - SIZE) // 2
      padded = np.zeros((RESIZE, RESIZE), np.float32)
      padded[top:top + h, left:left + w] = image[..., 0]
      ref = (padded[off:off + SIZE, off:off + SIZE] / 255.0 - 0.5) / 0.5
      np.testing.assert_allclose(b["image"][row, ..., 1], ref, atol=1e-5)
  tr = batches.create_input_iterator(spec, **common, split="train", batch_size=8, train=True,
                                     start_step=0)
  tr_batches = take(tr, 5)                         # 40 rows = 2 epochs of 20
  idx = np.concatenate([b["index"] for b in tr_batches])
  assert sorted(idx[:20]) == list(range(20)) and sorted(idx[20:]) == list(range(20))
  resumed = take(batches.create_input_iterator(spec, **common, split="train", batch_size=8,
                                               train=True, start_step=3), 2)
  assert_batches_equal(resumed, tr_batches[3:])
  with pytest.raises(ValueError, match="no split"):
    source.num_examples(spec, "test")


def test_data_source_over_a_prepared_tfds_dataset(tmp_path):
  from asg_jax import config as config_lib
  AsgJaxPipelineTestStored(data_dir=str(tmp_path)).download_and_prepare()
  c = config_lib.base_config()
  c.data.name, c.data.builder_config = "asg_jax_pipeline_test_stored", ""
  c.data.data_dir, c.data.tokenizer, c.data.demo_vocab_size = str(tmp_path), "", 60
  c.data.lower_case, c.data.max_length, c.data.max_region_words = True, L, K
  c.data.resize, c.data.image_size, c.data.max_regions = RESIZE, SIZE, R
  c.data.shuffle_buffer, c.train.batch_size, c.eval.batch_size = 8, 4, 8
  c.model.text.vocab_size = 100
  data = data_lib.prepare(c, str(tmp_path / "work"))
  assert data.num_train_examples == 20
  assert (pathlib.Path(data.build["data_dir"]) / "wordpiece_60.txt").exists() and data.tokenizer.vocab_size == 60
  train = take(data.train_batches(0), 7)
  assert_batches_equal(take(data.train_batches(4), 3), train[4:])
  # the pre-training feed: cropped uint8 grey pixels (normalised on device by the model)
  assert all(b["image"].shape == (4, SIZE, SIZE, 1) and b["image"].dtype == np.uint8
             for b in train)
  evals = list(data.eval_batches())
  assert len(evals) == 2 and sum(b["valid"].sum() for b in evals) == 10
  assert set(data.example_batch()) == set(SCHEMA) | {"valid"}
  c.model.text.vocab_size = 50
  with pytest.raises(ValueError, match="vocab_size"):
    data_lib.prepare(c, str(tmp_path / "work"))


def test_region_word_index_vs_loop_reference():
  rng = np.random.default_rng(11)
  for _ in range(30):
    b, n, r, k = 3, int(rng.integers(1, 15)), 4, int(rng.integers(1, 12))
    s = int(rng.integers(1, 5))
    kept = rng.integers(0, n + 1, b)
    ws = np.array([[10 * w if w < kept[i] else -1 for w in range(n)] for i in range(b)])
    ss = np.stack([np.sort(rng.choice(10 * n, s, replace=False)) for _ in range(b)])
    ss[:, 0] = 0
    ss[0, -1] = -1 if s > 1 else 0                  # padded sentence
    rs = rng.integers(-1, s + 1, (b, r, 3))          # includes out-of-range ids
    got = host.region_word_index(ws, ss, rs, k)
    for i in range(b):
      starts = [x for x in ss[i] if x >= 0]
      for j in range(r):
        sents = {x for x in rs[i, j] if 0 <= x < len(starts)}
        words = [w for w in range(n) if ws[i, w] >= 0 and
                 max(t for t, x in enumerate(starts) if x <= ws[i, w]) in sents][:k]
        np.testing.assert_array_equal(got[i, j], words + [-1] * (k - len(words)))


def test_stored_example_errors_name_the_field(examples, tokenizer):
  broken = [dict(e, region_ids=e["region_ids"][:0]) for e in examples[:8] if len(e["region_ids"])]
  with pytest.raises(tf.errors.InvalidArgumentError, match="region_boxes and region_ids"):
    next(batches.iterate_source(source_of(broken, num_shards=1), train=False,
                                **kwargs(tokenizer, host_prefetch=0)))
  ds = tf.data.Dataset.from_generator(
      lambda: ({k: v for k, v in e.items() if k != "tags"} for e in examples),
      output_signature={k: v for k, v in SIGNATURE.items() if k != "tags"})
  src = source.ExampleSource.from_dataset(ds, len(examples), name="no-tags")
  with pytest.raises(ValueError, match=r"no-tags.*\['tags'\]"):
    batches.iterate_source(src, train=True, **kwargs(tokenizer))
