"""roi_align vs a loop-by-loop NumPy transcription of torchvision's CPU RoIAlign kernel."""
import jax
import numpy as np
import pytest

from asg_jax import losses
from tests.losses.reference import np_roi_align


def boxes_fixture(h=6, w=7, seed=0):
  rng = np.random.default_rng(seed)
  random = []
  for _ in range(14):
    x1, y1 = rng.uniform(-2, w + 1), rng.uniform(-2, h + 1)
    random.append([x1, y1, x1 + rng.uniform(0, w), y1 + rng.uniform(0, h)])
  special = [
      [0, 0, w, h],                  # the whole grid (touching every border)
      [0, 0, 0, 0],                  # padding row (zero box)
      [w - 1, h - 1, w, h],          # the last cell, touching the far corner
      [w - 0.3, 1, w + 2.5, 3],      # leaving the grid on the right
      [-3, -3, -0.5, -0.5],          # fully outside (left/top)
      [-1, -1, 0.5, 0.5],            # samples between -1 and 0
      [w + 0.5, h + 0.5, w + 2, h + 2],  # fully outside (right/bottom)
      [1.2, 2.7, 1.4, 2.8],          # smaller than one cell (clamped to size 1)
      [2, 1, 2, 5],                  # zero width
      [0.5, 0.25, 6.75, 5.5],        # fractional, inside
  ]
  return np.asarray(random + special, np.float32)


@pytest.mark.parametrize("aligned,sampling_ratio", [(False, -1), (True, -1), (False, 2)])
def test_matches_torchvision_transcription(aligned, sampling_ratio):
  h, w, d = 6, 7, 5
  rng = np.random.default_rng(1)
  fmap = rng.normal(size=(2, h, w, d)).astype(np.float32)
  boxes = np.stack([boxes_fixture(h, w, 0), boxes_fixture(h, w, 1)])
  got = jax.jit(lambda f, b: losses.roi_align(f, b, aligned=aligned,
                                              sampling_ratio=sampling_ratio))(fmap, boxes)
  want = np_roi_align(fmap, boxes, aligned=aligned, sampling_ratio=sampling_ratio)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_spatial_scale_and_large_boxes_with_max_samples():
  h, w, d = 5, 5, 3
  rng = np.random.default_rng(2)
  fmap = rng.normal(size=(1, h, w, d)).astype(np.float32)
  boxes = np.asarray([[[-4, -3, 9, 8], [10, 20, 60, 70]]], np.float32)  # larger than the grid
  # exact with a big enough static sample grid
  got = losses.roi_align(fmap, boxes, max_samples=(16, 16))
  np.testing.assert_allclose(got, np_roi_align(fmap, boxes), rtol=1e-5, atol=1e-5)
  got = losses.roi_align(fmap, boxes, spatial_scale=0.1)
  np.testing.assert_allclose(got, np_roi_align(fmap, boxes, spatial_scale=0.1),
                             rtol=1e-5, atol=1e-5)
  # the default (H, W) bound stays finite and close for a box larger than the grid
  assert np.all(np.isfinite(np.asarray(losses.roi_align(fmap, boxes))))


def test_pixel_boxes_on_vit_grid():
  """A 224-pixel box layout scaled to the 14×14 grid, as asg_objective does."""
  rng = np.random.default_rng(3)
  fmap = rng.normal(size=(1, 14, 14, 4)).astype(np.float32)
  px = np.asarray([[[0, 0, 224, 224], [37, 50, 101, 180], [200, 210, 224, 224]]], np.float32)
  grid = px * 14 / 224
  np.testing.assert_allclose(losses.roi_align(fmap, grid), np_roi_align(fmap, grid),
                             rtol=1e-5, atol=1e-5)
  # aligned=False samples at (i + .5) in a convention where cell centres are integers, so the
  # whole-grid box is NOT the plain mean of the cells; on a constant map every box inside the
  # grid returns the constant
  const = np.full((1, 14, 14, 2), 3.0, np.float32)
  np.testing.assert_allclose(losses.roi_align(const, grid), 3.0, rtol=1e-6)


def test_gradient_finite_and_linear_in_features():
  fmap = np.random.default_rng(4).normal(size=(1, 6, 7, 3)).astype(np.float32)
  boxes = boxes_fixture()[None]

  def f(fm, bx):
    return np.float32(1) * losses.roi_align(fm, bx).sum()

  g_f, g_b = jax.jit(jax.grad(f, argnums=(0, 1)))(fmap, boxes)
  assert np.all(np.isfinite(np.asarray(g_f))) and np.all(np.isfinite(np.asarray(g_b)))
  # d(sum out)/d(fmap) = the summed sampling weights = roi_align of a ones map per box
  ones = np.ones((1, 6, 7, 1), np.float32)
  weights_sum = np.asarray(jax.jit(losses.roi_align)(ones, boxes)).sum()
  np.testing.assert_allclose(np.asarray(g_f).sum() / 3, weights_sum, rtol=1e-5)
