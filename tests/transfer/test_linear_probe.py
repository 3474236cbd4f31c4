"""The batched linear probe: equal to independent per-run fits, early stopping at the best
validation epoch, known-answer AUROC (separable -> 1, shuffled -> ~0.5)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.transfer import linear_probe as lp
from asg_jax.transfer import classification


def _data(n=120, d=6, c=2, seed=0, separable=True):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  w = rng.normal(size=(d, c))
  y = (x @ w > 0).astype(np.float32) if separable else (rng.random((n, c)) < 0.5).astype(np.float32)
  return x, y


def test_batched_fit_equals_independent_per_run_loops():
  x, y = _data(n=100)
  xv, yv = _data(n=30, seed=1)
  masks = np.zeros((3, 100), bool)
  masks[0, :7] = True                   # runs of different sizes, one with a partial batch
  masks[1, ::2] = True
  masks[2] = True
  keys = jnp.stack([jax.random.PRNGKey(s) for s in (0, 1, 2)])
  kw = dict(lr=1e-2, weight_decay=1e-4, batch_size=16, max_epochs=6, patience=3, dropout=0.2)
  fit = jax.device_get(lp.fit_probes(jnp.asarray(x), jnp.asarray(y), jnp.asarray(masks), keys,
                                     jnp.asarray(xv), jnp.asarray(yv), **kw))
  for r in range(3):
    ref = lp.fit_one_reference(x, y, masks[r], keys[r], xv, yv, **kw)
    np.testing.assert_allclose(fit["params"]["w"][r], ref["params"]["w"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(fit["params"]["b"][r], ref["params"]["b"], rtol=2e-5, atol=2e-6)
    assert fit["best_epoch"][r] == ref["best_epoch"]
    hist = fit["val_loss"][r][np.isfinite(fit["val_loss"][r])]
    np.testing.assert_allclose(hist, ref["val_loss"], rtol=1e-5)


def test_early_stopping_keeps_the_best_validation_epoch():
  # training labels are noise, so the validation loss turns up and the run must stop
  x, y = _data(n=60, separable=False, seed=3)
  xv, yv = _data(n=40, seed=4)
  masks = np.ones((2, 60), bool)
  keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
  fit = jax.device_get(lp.fit_probes(jnp.asarray(x), jnp.asarray(y), jnp.asarray(masks), keys,
                                     jnp.asarray(xv), jnp.asarray(yv), lr=5e-2, batch_size=8,
                                     max_epochs=60, patience=4))
  for r in range(2):
    hist = fit["val_loss"][r]
    ran = int(fit["epochs"][r])
    assert ran < 60                                   # stopped early
    assert int(fit["best_epoch"][r]) == int(np.nanargmin(hist))
    assert ran == int(fit["best_epoch"][r]) + 1 + 4   # patience epochs after the best
    # the returned parameters are the best epoch's: their validation loss is the minimum
    params = jax.tree.map(lambda a: a[r], fit["params"])
    val = float(lp.loss_fn(params, xv, yv, jnp.ones(len(xv)), False))
    np.testing.assert_allclose(val, np.nanmin(hist), rtol=1e-5)


def test_separable_features_give_auroc_one_and_shuffled_labels_chance():
  x, y = _data(n=400, d=4, c=3, seed=5)
  xt, yt = _data(n=200, d=4, c=3, seed=5)
  xt, yt = x[200:], y[200:]
  x, y = x[:200], y[:200]
  keys = jnp.stack([jax.random.PRNGKey(s) for s in range(2)])
  fit = jax.device_get(lp.fit_probes(jnp.asarray(x), jnp.asarray(y), jnp.ones((2, 200), bool),
                                     keys, jnp.asarray(xt), jnp.asarray(yt), lr=5e-2,
                                     max_epochs=30))
  scores = lp.scores_of(fit["params"], xt, False)
  for r in range(2):
    macro, per = classification.macro_auroc(scores[r], yt)
    assert macro > 0.99 and min(per) > 0.98
  rng = np.random.default_rng(0)
  shuffled = y[rng.permutation(200)]
  fit = jax.device_get(lp.fit_probes(jnp.asarray(x), jnp.asarray(shuffled), jnp.ones((2, 200), bool),
                                     keys, jnp.asarray(xt), jnp.asarray(yt), lr=5e-2,
                                     max_epochs=30))
  aucs = [classification.macro_auroc(s, yt)[0] for s in lp.scores_of(fit["params"], xt, False)]
  assert abs(np.mean(aucs) - 0.5) < 0.12


def test_multiclass_detection_and_softmax_fit():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(3, 5)) * 4
  cls = rng.integers(0, 3, 150)
  x = (centers[cls] + rng.normal(size=(150, 5))).astype(np.float32)
  y = np.eye(3, dtype=np.float32)[cls]
  assert classification.is_multiclass(y, "auto") and not classification.is_multiclass(y, "multilabel")
  assert not classification.is_multiclass(np.array([[1, 1, 0], [0, 0, 1]], np.float32), "auto")
  fit = jax.device_get(lp.fit_probes(jnp.asarray(x), jnp.asarray(y), jnp.ones((1, 150), bool),
                                     jnp.stack([jax.random.PRNGKey(0)]), jnp.asarray(x),
                                     jnp.asarray(y), lr=5e-2, max_epochs=20, multiclass=True))
  probs = lp.scores_of(fit["params"], x, True)[0]
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  assert np.mean(probs.argmax(-1) == cls) > 0.95


def test_against_sklearn_logistic_regression_oracle():
  sklearn = pytest.importorskip("sklearn.linear_model")
  metrics = pytest.importorskip("sklearn.metrics")
  x, y = _data(n=300, d=5, c=1, seed=9, separable=False)
  w = np.random.default_rng(1).normal(size=5)
  p = 1 / (1 + np.exp(-(x @ w)))
  y = (np.random.default_rng(2).random(300) < p).astype(np.float32)[:, None]
  fit = jax.device_get(lp.fit_probes(jnp.asarray(x), jnp.asarray(y), jnp.ones((1, 300), bool),
                                     jnp.stack([jax.random.PRNGKey(0)]), jnp.asarray(x),
                                     jnp.asarray(y), lr=2e-2, weight_decay=0.0, max_epochs=200,
                                     patience=200, batch_size=300))
  ours = lp.scores_of(fit["params"], x, False)[0, :, 0]
  ref = sklearn.LogisticRegression(C=1e6, max_iter=2000).fit(x, y[:, 0]).predict_proba(x)[:, 1]
  np.testing.assert_allclose(ours, ref, atol=0.03)
  assert abs(classification.macro_auroc(ours[:, None], y)[0] - metrics.roc_auc_score(y[:, 0], ref)) < 0.01
