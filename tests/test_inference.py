"""The inference API: a trained workdir loads back, and every call agrees with NumPy."""
import jax
import numpy as np
import pytest

from asg_jax import inference, objectives, train
from tests.fakes import FakeData
from tests.test_train import demo_config


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


def test_best_and_latest_checkpoints_load_and_hold_trained_params(workdir, pretrained):
  path, config = workdir
  latest = inference.Pretrained.from_workdir(str(path), checkpoint="latest",
                                             tokenizer=FakeData(config).tokenizer)
  for a, b in zip(jax.tree.leaves(pretrained.variables), jax.tree.leaves(latest.variables)):
    np.testing.assert_array_equal(a, b)         # best == latest == step 2 here
  assert (path / inference.CONSTANTS_FILE).exists()
  assert pretrained._tag_logits is not None     # pylint: disable=protected-access


def test_missing_workdir_files_fail_clearly(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    inference.Pretrained.from_workdir(str(tmp_path))


def test_caption_cleaning_matches_training_captions():
  assert inference.caption_of("Small L. effusion!\nNo PTX.") == "small l effusion no ptx"


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


def test_grey_and_rgb_inputs_give_the_same_embedding(pretrained):
  grey = np.random.default_rng(1).integers(0, 255, size=(100, 130), dtype=np.uint8)
  rgb = np.repeat(grey[..., None], 3, axis=-1)
  np.testing.assert_allclose(pretrained.embed_images([grey]), pretrained.embed_images([rgb]),
                             atol=1e-6)
  with pytest.raises(ValueError, match="uint8"):
    pretrained.embed_images([grey.astype(np.float32)])


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
