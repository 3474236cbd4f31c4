"""IRA / ERL / retrieval vs independent float64 NumPy references and asg.md's sanity values."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import losses
from asg_jax.losses import contrastive

TAU = 0.07


# ------------------------------------------------------------------ NumPy references


def np_lse(x, axis):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def np_ira(img, txt, tau=TAU):
  s = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T / tau
  d = np.diag(s)
  return np.mean(np_lse(s, 1) - d) + np.mean(np_lse(s, 0) - d)


def np_soft_targets(tags, mix=0.2):
  y = (np.asarray(tags) == 1).astype(np.float64)
  y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
  q = (1 - mix) * np.eye(len(y)) + mix * y @ y.T + 1e-6
  return q / q.sum(1, keepdims=True)


def np_kl(p, q):  # sum over columns, mean over rows
  return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))


def np_softmax(x):
  e = np.exp(x - x.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def np_soft(img, txt, tags, tau=TAU, mix=0.2):
  s = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T / tau
  q = np_soft_targets(tags, mix)
  p_i2t, p_t2i = np_softmax(s), np_softmax(s.T)
  return 0.5 * (0.5 * (np_kl(q, p_i2t) + np_kl(p_i2t, q))
                + 0.5 * (np_kl(q, p_t2i) + np_kl(p_t2i, q)))


def np_retrieval(img, txt):
  s = np.asarray(img, np.float32) @ np.asarray(txt, np.float32).T
  d = np.diag(s)
  r_i2t = np.sum(s > d[:, None], 1)
  r_t2i = np.sum(s > d[None, :], 0)
  out = {}
  for k in (1, 5):
    if k <= len(s):
      out[f"i2t_top{k}"], out[f"t2i_top{k}"] = np.mean(r_i2t < k), np.mean(r_t2i < k)
      out[f"top{k}"] = 0.5 * (out[f"i2t_top{k}"] + out[f"t2i_top{k}"])
  return out


def random_inputs(b, d=16, t=40, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.normal(size=(b, d))
  txt = img + 0.8 * rng.normal(size=(b, d))   # correlated pairs -> non-trivial ranks
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  txt /= np.linalg.norm(txt, axis=1, keepdims=True)
  tags = rng.choice([-1, 0, 1], size=(b, t), p=[0.5, 0.3, 0.2]).astype(np.int32)
  tags[0] = -1                                 # a study with no positive tag
  return img.astype(np.float32), txt.astype(np.float32), tags


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
