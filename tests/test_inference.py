"""The inference API: a trained workdir loads back, and every call agrees with NumPy."""
import jax
import numpy as np
import pytest

from asg_jax import inference, objectives, train
from asg_jax import workdir as workdir_lib
from asg_jax.models import tag_queries
from tests.helpers import FakeData, demo_config


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  config = demo_config(**{"train.num_steps": 2, "train.checkpoint_every": 2,
                          "eval.every_steps": 2, "train.num_devices": 1})
  path = tmp_path_factory.mktemp("trained")
  train.train_and_evaluate(config, str(path), data=FakeData(config))
  return path, config


@pytest.fixture(scope="module")
def pretrained(workdir):
  path, config = workdir
  return inference.Pretrained.from_workdir(str(path), tokenizer=FakeData(config).tokenizer)


@pytest.mark.slow
def test_best_and_latest_checkpoints_load_and_hold_trained_params(workdir, pretrained):
  path, config = workdir
  latest = inference.Pretrained.from_workdir(str(path), checkpoint="latest",
                                             tokenizer=FakeData(config).tokenizer)
  for a, b in zip(jax.tree.leaves(pretrained.variables), jax.tree.leaves(latest.variables)):
    np.testing.assert_array_equal(a, b)         # best == latest == step 2 here
  assert (path / workdir_lib.CONSTANTS_FILE).exists()
  assert pretrained.fns.tag_logits is not None


def test_missing_workdir_files_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    inference.Pretrained.from_workdir(str(tmp_path))


def test_caption_cleaning_matches_training_captions():
  assert inference.caption_of("Small L. effusion!\nNo PTX.") == "small l effusion no ptx"


@pytest.mark.slow
def test_embeddings_similarity_zero_shot_and_heatmap_agree_with_numpy(pretrained):
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 255, size=(150, 120), dtype=np.uint8),
            rng.integers(0, 255, size=(90, 160, 1), dtype=np.uint8)]
  texts = ["left pleural effusion", "no acute cardiopulmonary process", "cardiomegaly"]
  v = pretrained.embed_images(images)
  t = pretrained.embed_texts(texts)
  assert v.shape == (2, pretrained.config.model.embed_dim) and t.shape[0] == 3
  np.testing.assert_allclose(np.linalg.norm(v, axis=-1), 1.0, atol=1e-5)
  np.testing.assert_allclose(pretrained.similarity(images, texts), v @ t.T, atol=1e-5)
  # case and punctuation are cleaned away like the training captions
  np.testing.assert_allclose(pretrained.embed_texts(["Left pleural EFFUSION."]), t[:1],
                             atol=1e-6)

  names, probs = pretrained.zero_shot(images, {"effusion": texts[:1],
                                               "normal": texts[1:2] + texts[2:]})
  proto = np.stack([t[0], (t[1] + t[2]) / np.linalg.norm(t[1] + t[2])])
  logits = v @ proto.T / pretrained.config.loss.temperature
  expected = np.exp(logits - logits.max(-1, keepdims=True))
  expected /= expected.sum(-1, keepdims=True)
  assert names == ["effusion", "normal"]
  np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)

  heat = pretrained.heatmap(images[0], texts[0])
  patch = pretrained.image_outputs([images[0]])["patch_emb"][0]
  out = pretrained.text_outputs([texts[0]])
  words = out["word_emb"][0][out["word_mask"][0]]
  grid = objectives.patch_grid(pretrained.config)
  np.testing.assert_allclose(heat, (patch @ words.T).mean(-1).reshape(grid), atol=1e-5)

  tags = pretrained.tag_probabilities(images)
  assert tags.shape == (2, 40) and np.all((tags > 0) & (tags < 1))


@pytest.mark.slow
def test_grey_and_rgb_inputs_give_the_same_embedding(pretrained):
  grey = np.random.default_rng(1).integers(0, 255, size=(100, 130), dtype=np.uint8)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  np.testing.assert_allclose(pretrained.embed_images([grey]), pretrained.embed_images([rgb]),
                             atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    pretrained.embed_images([grey.astype(np.float32)])


@pytest.mark.slow
def test_preprocessing_is_the_eval_geometry(pretrained):
  """A constant 64x128 image: longest side to `resize` (128x64 → 128 wide, 64 high), centred
  zero padding, centre crop 112: rows outside the image are the normalised zero value."""
  c = pretrained.config.data
  x = pretrained.preprocess_images([np.full((64, 128), 200, np.uint8)])[0]
  assert x.shape == (c.image_size, c.image_size, 3)
  mean, std = (0.5, 0.5) if c.normalization == "half" else (0.485, 0.229)
  pad_rows = (c.resize - 64) // 2 - (c.resize - c.image_size) // 2   # zero rows in the crop
  np.testing.assert_allclose(x[:pad_rows, :, 0], (0 - mean) / std, atol=1e-5)
  np.testing.assert_allclose(x[pad_rows + 2:pad_rows + 60, :, 0], (200 / 255 - mean) / std,
                             atol=1e-5)


# ------------------------------------------------- tag decoder for new class names (KAD)

def _images():
  rng = np.random.default_rng(3)
  return [rng.integers(0, 255, size=(120, 100), dtype=np.uint8),
          rng.integers(0, 255, size=(80, 140), dtype=np.uint8)]


@pytest.mark.slow
def test_new_class_names_are_queried_like_the_training_tags(pretrained):
  saved = pretrained.constants["tag_queries"]
  assert tag_queries.TAG_QUERY_RNG in pretrained.constants      # written by training
  encode = pretrained.fns.tag_queries.encoder()
  # the rebuilt frozen tower reproduces the 40 saved queries
  np.testing.assert_allclose(encode(tag_queries.tag_phrases()), saved, rtol=1e-5, atol=1e-6)
  images = _images()
  names = ["Pneumonia", "Cardiomegaly", "Fibrosis", "Pleural_Thickening"]
  got = pretrained.tag_logits(images, names)
  assert got.shape == (2, 4) and np.all(np.isfinite(got))
  tags = tag_queries.tag_phrases()
  plain = pretrained.tag_logits(images)                              # [2, 40]
  for c in (0, 1):   # tag names read their own tag's logit
    np.testing.assert_allclose(got[:, c], plain[:, tags.index(names[c].lower())], atol=1e-5)
  # a new name, independently: its frozen-tower query in the slot of the nearest tag
  q = encode(["fibrosis"])[0]
  cos = (saved @ q) / (np.linalg.norm(saved, axis=1) * np.linalg.norm(q))
  slot = int(np.argmax(cos))
  queries = saved.copy()
  queries[slot] = q
  patches = pretrained.image_outputs(images)["patch_tokens"]
  ref = pretrained.model.apply(pretrained.variables, patches, queries, train=False,
                               method=lambda m, p, qs, train: m.tag_decoder(p, qs, train=train))
  np.testing.assert_allclose(got[:, 2], np.asarray(ref)[:, slot], rtol=1e-4, atol=1e-5)
  # zero_shot(protocol="tags"): sigmoid of the mean logit of each class's phrases
  names_out, probs = pretrained.zero_shot(
      images, {"fibrosis": [], "effusion": ["pleural effusion", "Pneumonia"]}, protocol="tags")
  assert names_out == ["fibrosis", "effusion"]
  sig = lambda x: 1 / (1 + np.exp(-x))
  np.testing.assert_allclose(probs[:, 0], sig(got[:, 2]), rtol=1e-5)
  mean = (plain[:, tags.index("pleural effusion")] + plain[:, tags.index("pneumonia")]) / 2
  np.testing.assert_allclose(probs[:, 1], sig(mean), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def old_pretrained(workdir, tmp_path_factory):
  """A copy of the trained workdir as written before `tag_query_rng` was saved, loaded
  (with what loading printed)."""
  import contextlib
  import io
  import shutil
  path, config = workdir
  old = tmp_path_factory.mktemp("old") / "w"
  shutil.copytree(path, old)
  with np.load(old / workdir_lib.CONSTANTS_FILE) as z:
    np.savez(old / workdir_lib.CONSTANTS_FILE, tag_queries=z["tag_queries"])
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    loaded = inference.Pretrained.from_workdir(str(old), tokenizer=FakeData(config).tokenizer)
  return loaded, out.getvalue()


@pytest.mark.slow
def test_workdir_without_query_rng_loads_and_answers_the_40_tags(old_pretrained, pretrained):
  old, printed = old_pretrained
  assert "predates `tag_query_rng`" in printed and "40 training tags" in printed
  images = _images()
  np.testing.assert_allclose(old.tag_logits(images, ["pneumonia"]),
                             pretrained.tag_logits(images, ["pneumonia"]), atol=1e-6)
  with pytest.raises(tag_queries.NoQueryEncoder, match="tag_query_rng"):
    old.tag_logits(images, ["fibrosis"])


@pytest.mark.slow
def test_transfer_zeroshot_tags_score_new_names(pretrained, old_pretrained, tmp_path):
  """The transfer zeroshot's tag protocol on mimic_cxr/demo_5x200 (the fixture of
  tests/data/test_mimic_5x200.py): Cardiomegaly queried as "enlarged heart" (not a tag) makes
  every class go through the new-name path, in class order."""
  from asg_jax.data.pipeline import downstream_input
  from asg_jax.transfer import classification, inits, zeroshot
  from tests.data import mimic_5x200_fixture as fixture
  data_dir = str(tmp_path / "tfds")
  fixture.build(fixture.write_fixture(str(tmp_path / "manual")), data_dir, "demo_5x200")
  rename = {"Cardiomegaly": "enlarged heart"}
  v = pretrained.variables
  state = inits.TransferState(v["params"], v.get("batch_stats", {}), 2)
  kwargs = dict(downstream="mimic_cxr/demo_5x200", data_dir=data_dir, protocols=("tags",),
                tag_names=rename, extract_batch_size=2)   # the batch compiled above
  fns = pretrained.fns
  ev = zeroshot.Evaluator(fns, **kwargs)
  assert ev.tag_plan(list(fixture.TASKS))["suffix"].startswith("__q")
  rows = {r["metric"]: r["value"] for r in ev.rows(state)}
  c = pretrained.config.data
  split = downstream_input.load_split("mimic_cxr/demo_5x200", "test", data_dir=data_dir,
                                      resize=c.resize, image_size=c.image_size,
                                      normalization=c.normalization, batch_size=2)
  names = list(fixture.TASKS)
  # the scores of the 5 query phrases in class order (the scorer itself is checked against
  # an independent decoder run in the test above)
  fn = fns.class_tag_logits(["atelectasis", "enlarged heart", "consolidation", "edema",
                             "pleural effusion"])
  ref = np.concatenate([fn(state, split["image"][i:i + 2]) for i in range(0, 8, 2)])
  macro, _ = classification.macro_auroc(ref, split["labels"])
  assert len(split["image_id"]) == 8
  assert rows["auroc"] == pytest.approx(macro, abs=1e-6)
  assert rows["top1"] == pytest.approx(np.mean(ref.argmax(-1) == split["labels"].argmax(-1)))
  assert {f"auroc[{n}]" for n in names} <= set(rows)
  # a workdir that cannot embed "enlarged heart" falls back to the 4 tag-named classes
  plan = zeroshot.Evaluator(old_pretrained[0].fns, **kwargs).tag_plan(names)
  assert [names[i] for i in plan["classes"]] == [n for n in names if n != "Cardiomegaly"]
  assert plan["suffix"] == ""
