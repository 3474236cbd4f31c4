"""IRA / ERL / retrieval vs independent float64 NumPy references and asg.md's sanity values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import losses
from asg_jax.losses import contrastive
from tests.losses.reference import np_ira, np_retrieval, np_soft, np_soft_targets, random_inputs


# ---------------------------------------------------------------------------- tests


@pytest.mark.parametrize("b", [1, 7, 32])
def test_ira_and_soft_match_numpy(b):
  img, txt, tags = random_inputs(b, seed=b)
  np.testing.assert_allclose(jax.jit(losses.ira_loss)(img, txt), np_ira(img, txt),
                             rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(jax.jit(losses.soft_label_loss)(img, txt, tags),
                             np_soft(img, txt, tags), rtol=2e-5, atol=2e-5)


def test_temperature_and_mix_arguments():
  img, txt, tags = random_inputs(9, seed=3)
  np.testing.assert_allclose(losses.ira_loss(img, txt, temperature=0.2),
                             np_ira(img, txt, 0.2), rtol=2e-5)
  np.testing.assert_allclose(losses.soft_label_loss(img, txt, tags, temperature=0.5, mix=0.6),
                             np_soft(img, txt, tags, 0.5, 0.6), rtol=2e-5, atol=1e-6)


def test_soft_targets_match_numpy_and_rows_sum_to_one():
  _, _, tags = random_inputs(12, seed=5)
  q = np.asarray(losses.soft_targets(tags))
  np.testing.assert_allclose(q, np_soft_targets(tags), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-6)
  # no positive tag -> ≈ one-hot row (0.8 + 1e-6) / (0.8 + B·1e-6)
  assert q[0, 0] > 0.9999 and np.all(q[0, 1:] < 1e-5)


def test_sanity_values():
  for b in (1, 3, 16):
    same = np.tile(np.eye(8, dtype=np.float32)[:1], (b, 1))
    np.testing.assert_allclose(losses.ira_loss(same, same), 2 * np.log(b), atol=1e-5)
  img, txt, tags = random_inputs(1)
  np.testing.assert_allclose(losses.soft_targets(tags), [[1.0]])
  np.testing.assert_allclose(losses.soft_label_loss(img, txt, tags), 0.0, atol=1e-6)
  np.testing.assert_allclose(losses.ira_loss(img, txt), 0.0, atol=1e-6)


def test_retrieval_matches_numpy():
  for b in (3, 20):
    img, txt, _ = random_inputs(b, seed=b)
    got = contrastive.contrastive_terms(img, txt, retrieval=True)
    want = np_retrieval(img, txt)
    assert set(got) == set(want)
    for k, v in want.items():
      np.testing.assert_allclose(got[k], v, err_msg=k)


def test_per_device_option_without_mesh_is_global():
  img, txt, tags = random_inputs(10, seed=1)
  np.testing.assert_allclose(losses.ira_loss(img, txt, global_batch=False),
                             losses.ira_loss(img, txt), rtol=1e-6)
  np.testing.assert_allclose(losses.soft_label_loss(img, txt, tags, global_batch=False),
                             losses.soft_label_loss(img, txt, tags), rtol=1e-6)


@pytest.mark.parametrize("b", [1, 4])
def test_gradients_finite_on_edge_cases(b):
  img, txt, tags = random_inputs(b, seed=2)
  tags[:] = -1                                  # no positive tag anywhere
  same = np.tile(img[:1], (b, 1))               # all logits equal

  def total(i, t):
    return losses.ira_loss(i, t) + losses.soft_label_loss(i, t, tags)

  for i, t in ((img, txt), (same, same)):
    grads = jax.jit(jax.grad(total, argnums=(0, 1)))(i, t)
    for g in grads:
      assert np.all(np.isfinite(np.asarray(g)))


def test_gradient_matches_finite_differences():
  img, txt, tags = random_inputs(5, d=6, seed=4)
  img, txt = img.astype(np.float64), txt.astype(np.float64)
  g = np.asarray(jax.grad(lambda i: losses.ira_loss(i, txt) + losses.soft_label_loss(
      i, txt, tags))(jnp.asarray(img, jnp.float32)))
  eps, (r, c) = 1e-4, (2, 3)
  plus, minus = img.copy(), img.copy()
  plus[r, c] += eps
  minus[r, c] -= eps
  fd = ((np_ira(plus, txt) + np_soft(plus, txt, tags))
        - (np_ira(minus, txt) + np_soft(minus, txt, tags))) / (2 * eps)
  np.testing.assert_allclose(g[r, c], fd, rtol=2e-3, atol=2e-3)
