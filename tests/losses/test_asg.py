"""ARSA, sentence features, tag BCE and the total ASG objective vs NumPy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import losses
from tests.losses.reference import fake_batch, np_ira, np_lse, np_retrieval, np_roi_align, np_soft

TAU = 0.07


# ------------------------------------------------------------------ NumPy references


def np_sentence_features(word_emb, index):
  b, r, _ = index.shape
  out = np.zeros((b, r, word_emb.shape[-1]))
  for i in range(b):
    for j in range(r):
      pos = [p for p in index[i, j] if 0 <= p < word_emb.shape[1]]
      if pos:
        out[i, j] = np.mean(word_emb[i, pos].astype(np.float64), axis=0)
  return out


def np_arsa(region, sentence, mask, tau=TAU):
  total, count = 0.0, 0
  for i in range(len(region)):
    valid = np.flatnonzero(mask[i])
    if not len(valid):
      continue
    a = region[i, valid].astype(np.float64) @ sentence[i, valid].astype(np.float64).T / tau
    d = np.diag(a)
    total += np.sum(np_lse(a, 1) - d) + np.sum(np_lse(a, 0) - d)
    count += len(valid)
  return total / max(count, 1)


def np_bce(logits, tags):
  x = logits.astype(np.float64)
  y = (tags == 1).astype(np.float64)
  p = 1 / (1 + np.exp(-x))
  return np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)))


def np_objective(outputs, batch, grid, size, weights=(1, 1, 5, 1)):
  gh, gw = grid
  b, m, e = outputs["patch_emb"].shape
  fmap = outputs["patch_emb"].reshape(b, gh, gw, e)
  boxes = batch["region_boxes"] * np.asarray([gw / size, gh / size] * 2)
  regions = np_roi_align(fmap, boxes)
  sentences = np_sentence_features(outputs["word_emb"], batch["region_word_index"])
  terms = {
      "ira": np_ira(outputs["image_emb"], outputs["text_emb"]),
      "arsa": np_arsa(regions, sentences, batch["region_mask"]),
      "irl": np_bce(outputs["tag_logits"], batch["tags"]),
      "erl": np_soft(outputs["image_emb"], outputs["text_emb"], batch["tags"]),
  }
  loss = sum(w * terms[k] for w, k in zip(weights, ("ira", "arsa", "irl", "erl")))
  return loss, terms


# ---------------------------------------------------------------------------- tests


def test_sentence_features_match_numpy():
  outputs, batch = fake_batch(seed=1)
  got = jax.jit(losses.sentence_features)(outputs["word_emb"], batch["region_word_index"])
  want = np_sentence_features(outputs["word_emb"], batch["region_word_index"])
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(got)[-1, 0] == 0)        # no word -> 0, not NaN


def test_arsa_matches_numpy():
  rng = np.random.default_rng(2)
  region = rng.normal(size=(5, 7, 8)).astype(np.float32) * 0.3
  sentence = rng.normal(size=(5, 7, 8)).astype(np.float32) * 0.3
  mask = rng.uniform(size=(5, 7)) < 0.6
  mask[3] = False
  mask[4] = [True] + [False] * 6                   # a single valid region -> 0 loss there
  got = jax.jit(losses.arsa_loss)(region, sentence, mask)
  np.testing.assert_allclose(got, np_arsa(region, sentence, mask), rtol=2e-5, atol=1e-5)


def test_arsa_sanity_and_edge_cases():
  rng = np.random.default_rng(3)
  for n in (1, 3, 6):
    mask = np.zeros((4, 8), bool)
    mask[:, :n] = True
    mask[2] = False                               # an image with no valid region
    equal = np.ones((4, 8, 5), np.float32)        # equal scores
    np.testing.assert_allclose(losses.arsa_loss(equal, equal, mask), 2 * np.log(n), atol=1e-5)
  region = rng.normal(size=(3, 4, 5)).astype(np.float32)
  none = np.zeros((3, 4), bool)
  assert float(losses.arsa_loss(region, region, none)) == 0.0
  for mask in (none, np.eye(3, 4, dtype=bool)):
    grads = jax.grad(losses.arsa_loss, argnums=(0, 1))(region, region, mask)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_tag_bce_matches_numpy_and_log2():
  rng = np.random.default_rng(4)
  logits = (5 * rng.normal(size=(6, 40))).astype(np.float32)
  tags = rng.integers(-1, 2, size=(6, 40))
  np.testing.assert_allclose(losses.tag_bce_loss(logits, tags), np_bce(logits, tags),
                             rtol=1e-5)
  np.testing.assert_allclose(losses.tag_bce_loss(np.zeros((3, 40)), tags[:3]), np.log(2),
                             rtol=1e-6)
  big = np.full((1, 40), 200.0, np.float32)      # extreme logits stay finite
  assert np.isfinite(float(losses.tag_bce_loss(big, -np.ones((1, 40)))))
  assert np.all(np.isfinite(np.asarray(jax.grad(losses.tag_bce_loss)(big, tags[:1]))))


def test_region_features_scales_pixel_boxes():
  outputs, batch = fake_batch(seed=5)
  got = losses.region_features(outputs["patch_emb"], batch["region_boxes"], grid=(4, 4),
                               input_size=64)
  fmap = outputs["patch_emb"].reshape(4, 4, 4, -1)
  want = np_roi_align(fmap, batch["region_boxes"] * 4 / 64)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_asg_objective_matches_numpy():
  outputs, batch = fake_batch(seed=6)
  fn = jax.jit(lambda o, b: losses.asg_objective(o, b, grid=(4, 4), input_size=64))
  loss, meas = fn(outputs, batch)
  want, terms = np_objective(outputs, batch, (4, 4), 64)
  np.testing.assert_allclose(loss, want, rtol=2e-5)
  for k, v in terms.items():
    np.testing.assert_allclose(meas[k], v, rtol=2e-5, atol=1e-6, err_msg=k)
  for k, v in np_retrieval(outputs["image_emb"], outputs["text_emb"]).items():
    np.testing.assert_allclose(meas[k], v, err_msg=k)
  np.testing.assert_allclose(meas["loss"], loss)


@pytest.mark.parametrize("switches", [(True, False, False, False), (True, True, False, False),
                                      (True, False, True, True), (False, True, True, False)])
def test_asg_objective_switches_and_weights(switches):
  outputs, batch = fake_batch(seed=7)
  names = ("ira", "arsa", "irl", "erl")
  weights = (0.5, 2.0, 3.0, 1.5)
  use = dict(zip(("use_ira", "use_arsa", "use_irl", "use_erl"), switches))
  if not use["use_irl"]:
    outputs = {k: v for k, v in outputs.items() if k != "tag_logits"}
  loss, meas = losses.asg_objective(outputs, batch, weights=weights, grid=(4, 4),
                                    input_size=64, **use)
  _, terms = np_objective({"tag_logits": np.zeros((4, 40), np.float32), **outputs}, batch,
                          (4, 4), 64)
  want = sum(w * terms[k] for w, k, on in zip(weights, names, switches) if on)
  np.testing.assert_allclose(loss, want, rtol=2e-5)
  assert {k for k in names if k in meas} == {k for k, on in zip(names, switches) if on}
  assert {"top1", "i2t_top1", "t2i_top1"} <= set(meas)


def test_asg_objective_missing_output_is_a_clear_error():
  outputs, batch = fake_batch()
  del outputs["tag_logits"]
  with pytest.raises(KeyError, match="tag_logits"):
    losses.asg_objective(outputs, batch, grid=(4, 4), input_size=64)


def test_asg_objective_gradients_finite_on_edge_cases():
  # B = 1, no valid region in the batch, no positive tag
  outputs, batch = fake_batch(b=1, seed=8)
  batch["region_mask"][:] = False
  batch["tags"][:] = -1
  diff_keys = ("image_emb", "text_emb", "patch_emb", "word_emb", "tag_logits")

  def f(diff):
    loss, _ = losses.asg_objective({**outputs, **diff}, batch, grid=(4, 4), input_size=64)
    return loss

  diff = {k: jnp.asarray(outputs[k]) for k in diff_keys}
  loss, grads = jax.jit(jax.value_and_grad(f))(diff)
  np.testing.assert_allclose(loss, 5 * np_bce(outputs["tag_logits"], batch["tags"]), rtol=1e-5)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())
  # a batch where every image but one has no valid region
  outputs, batch = fake_batch(b=4, seed=9)
  diff = {k: jnp.asarray(outputs[k]) for k in diff_keys}
  _, grads = jax.jit(jax.value_and_grad(f))(diff)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())
