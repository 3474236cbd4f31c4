"""Segmentation loss and metric: Dice and the empty-mask rule on hand-made masks; focal and
soft Dice against a float64 NumPy reference written from the formulas."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.losses import segmentation as seg


def _logits(pred):
  """A {0, 1} prediction as logits (+4 / -4)."""
  return jnp.asarray(np.where(np.asarray(pred) > 0, 4.0, -4.0), jnp.float32)


def test_per_image_dice_hand_made_masks_and_empty_rule():
  gt = np.zeros((5, 4, 4), np.float32)
  pred = np.zeros((5, 4, 4), np.float32)
  gt[0, 1:3, 1:3] = 1                  # 4 pixels
  pred[0, 1, 1:3] = 1                  # 2 of them ...
  pred[0, 3, 3] = 1                    # ... and one outside: 2*2 / (3 + 4) = 4/7
  gt[1, 0, :] = 1
  pred[1, 0, :] = 1                    # perfect: 1
  # image 2: empty ground truth, empty prediction -> 1
  pred[3, 2, 2] = 1                    # empty ground truth, one predicted pixel -> 0
  gt[4, 0, 0] = 1                      # a lesion, nothing predicted -> 0
  dice = jax.jit(seg.per_image_dice)
  got = np.asarray(dice(_logits(pred), jnp.asarray(gt)))
  np.testing.assert_allclose(got, [4 / 7, 1.0, 1.0, 0.0, 0.0], rtol=1e-6)
  # the threshold is sigmoid > 0.5: a logit of exactly 0 is not a prediction
  at_half = np.zeros((5, 4, 4), np.float32)
  np.testing.assert_array_equal(dice(at_half, gt), [0.0, 0.0, 1.0, 1.0, 0.0])
  # [B, H, W, 1] works the same
  np.testing.assert_allclose(seg.per_image_dice(_logits(pred)[..., None], jnp.asarray(gt)[..., None]),
                             got, rtol=1e-6)


def _np_focal(x, t, gamma=2.0):
  x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
  p = 1.0 / (1.0 + np.exp(-x))
  pt = np.where(t > 0.5, p, 1.0 - p)
  return float(np.mean(-((1.0 - pt) ** gamma) * np.log(pt)))


def _np_soft_dice(x, t, smooth=1.0):
  x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
  p = 1.0 / (1.0 + np.exp(-x))
  return float((2.0 * np.sum(p * t) + smooth) / (np.sum(p) + np.sum(t) + smooth))


@jax.jit
def _all_terms(x, t):
  loss, terms = seg.segmentation_loss(x, t)
  return {"focal": seg.focal_loss(x, t), "dice": seg.soft_dice(x, t), "loss": loss,
          "terms": terms, "bce": seg.focal_loss(x, t, gamma=0.0)}


def test_focal_and_soft_dice_match_numpy_reference():
  rng = np.random.default_rng(0)
  x = rng.normal(0, 3, (4, 6, 5, 1)).astype(np.float32)
  t = (rng.random((4, 6, 5, 1)) < 0.3).astype(np.float32)
  got = jax.device_get(_all_terms(x, t))
  focal, dice = float(got["focal"]), float(got["dice"])
  assert focal == pytest.approx(_np_focal(x, t), rel=1e-5)
  assert dice == pytest.approx(_np_soft_dice(x, t), rel=1e-5)
  assert float(got["loss"]) == pytest.approx(10 * _np_focal(x, t) - np.log(_np_soft_dice(x, t)), rel=1e-5)
  assert float(got["terms"]["focal"]) == pytest.approx(focal)
  assert float(got["terms"]["soft_dice"]) == pytest.approx(dice)
  # gamma = 0 is plain BCE; large logits stay finite
  bce = np.mean(np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x))))
  assert float(got["bce"]) == pytest.approx(bce, rel=1e-5)
  big = np.full((4, 6, 5, 1), 80.0, np.float32) * np.where(t > 0, -1, 1)   # confidently wrong
  assert all(np.isfinite(float(v)) for v in jax.tree.leaves(_all_terms(big, t)))
  # the soft Dice is one batch-level ratio, not a mean of per-image ones
  per_image = np.mean([_np_soft_dice(x[i], t[i]) for i in range(4)])
  assert abs(dice - per_image) > 1e-3


def test_padding_rows_are_ignored_and_gradient_flows():
  rng = np.random.default_rng(1)
  x = rng.normal(0, 2, (3, 4, 4)).astype(np.float32)
  t = (rng.random((3, 4, 4)) < 0.4).astype(np.float32)
  w = np.asarray([1.0, 1.0, 0.0], np.float32)

  @jax.jit
  def run(x, t, w):
    loss_w, _ = seg.segmentation_loss(x, t, w)
    loss_2, _ = seg.segmentation_loss(x[:2], t[:2])
    grad = jax.grad(lambda z: seg.segmentation_loss(z, t, w)[0])(x)
    loss, m = seg.objective({"logits": x, "mask": t}, {})
    return loss_w, loss_2, grad, loss, m, seg.segmentation_loss(x, t)[0], seg.per_image_dice(x, t)
  loss_w, loss_2, g, loss, m, plain, per_image = jax.device_get(run(x, t, w))
  assert float(loss_w) == pytest.approx(float(loss_2), rel=1e-6)
  assert np.all(g[2] == 0) and np.any(g[0] != 0)
  # the step's objective scores outputs["logits"] against outputs["mask"]
  assert float(loss) == pytest.approx(float(plain))
  assert float(m["dice"]) == pytest.approx(float(np.mean(per_image)))
