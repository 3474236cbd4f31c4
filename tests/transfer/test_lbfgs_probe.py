"""`linear_probe` with solver="lbfgs": every run × C in one fit equals scikit-learn's
LogisticRegression (same C, converged) to 1e-3 in predicted probabilities, multi-label
(per-class sigmoid = one regression per column) and one-hot (softmax = multinomial), on raw
features of very different scales; C is chosen on the validation loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.transfer import lbfgs_probe as lb

CS = (0.05, 5.0)


def _data(multiclass, n=120, d=8, c=3, seed=0):
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.2, 5.0, size=d)               # raw features: any scale, offsets
  z = rng.normal(size=(n, d))
  x = (z * scale + rng.normal(size=d) * 5).astype(np.float32)
  logits = z @ (0.7 * rng.normal(size=(d, c))) + rng.normal(size=(n, c))
  y = np.eye(c)[logits.argmax(1)] if multiclass else (logits > 0)
  return x, y.astype(np.float32)


@pytest.mark.parametrize("multiclass", [False, True])
def test_lbfgs_equals_scikit_learn_logistic_regression(multiclass):
  linear_model = pytest.importorskip("sklearn.linear_model")
  # multi-label: more features than rows (the fit runs in the rows' span)
  x, y = _data(multiclass, n=120 if multiclass else 60, d=8 if multiclass else 80)
  masks = np.zeros((2, len(x)), bool)
  masks[0, :30] = True                                  # a small fraction and all rows
  masks[1] = True
  keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])
  # tol 1e-7: the float32 floor (the default 1e-6 gave 7e-4 on a 40-row run separable in 150
  # dimensions: its weakly penalised directions are flat)
  fit = jax.device_get(lb.fit_lbfgs(x, y, jnp.asarray(masks), keys, CS, multiclass=multiclass,
                                    tol=1e-7, max_iter=300))
  worst = 0.0
  for r in range(2):
    xr, yr = x[masks[r]].astype(np.float64), y[masks[r]]
    for k, c in enumerate(CS):
      ours = lb.probabilities(fit["w"][r, k], fit["b"][r, k], x, multiclass)
      if multiclass:
        ref = linear_model.LogisticRegression(C=c, tol=1e-10, max_iter=20_000).fit(
            xr, yr.argmax(1)).predict_proba(x)
      else:
        ref = np.stack([linear_model.LogisticRegression(C=c, tol=1e-10, max_iter=20_000).fit(
            xr, yr[:, j]).predict_proba(x)[:, 1] for j in range(y.shape[1])], 1)
      worst = max(worst, float(np.abs(ours - ref).max()))
  assert worst < 1e-3, worst
  # the strength of each run is the grid value of lowest validation loss
  xv, yv = _data(multiclass, n=60, d=x.shape[1], seed=1)
  val = lb.validation_losses(fit, xv, yv, multiclass)
  chosen, best = lb.select(fit, val)
  assert val.shape == (2, len(CS)) and list(best) == list(np.argmin(val, 1))
  np.testing.assert_array_equal(chosen["w"][1], fit["w"][1, best[1]])


def test_fit_runs_fits_each_fraction_on_its_own_rows_and_equal_row_sets_once(monkeypatch):
  x, y = _data(False, n=90, d=6)
  rng = np.random.default_rng(3)
  masks = np.zeros((6, len(x)), bool)
  for s in range(3):                        # 3 seeds: 12-row subsets of their own, then all rows
    masks[s, rng.choice(len(x), 12, replace=False)] = True
    masks[3 + s] = True
  keys = jnp.stack([jax.random.PRNGKey(s) for s in range(6)])
  whole = jax.device_get(lb.fit_lbfgs(x, y, jnp.asarray(masks), keys, CS, tol=1e-7))
  calls = []
  fit_lbfgs = lb.fit_lbfgs

  def counting(x_rows, y_rows, run_masks, *args, **kwargs):
    calls.append((len(x_rows), len(run_masks)))
    return fit_lbfgs(x_rows, y_rows, run_masks, *args, **kwargs)

  monkeypatch.setattr(lb, "fit_lbfgs", counting)
  grouped = lb.fit_runs(x, y, masks, keys, CS, tol=1e-7)
  # one fit of the three subsets on their union (<= 36 rows), one of all rows for the 3 seeds
  assert sorted(calls) == sorted([(int(masks[:3].any(0).sum()), 3), (90, 1)]), calls
  assert grouped["w"].shape == whole["w"].shape == (6, len(CS), 6, 3)
  np.testing.assert_array_equal(grouped["w"][3], grouped["w"][5])
  for r in range(6):
    for k in range(len(CS)):
      np.testing.assert_allclose(
          lb.probabilities(grouped["w"][r, k], grouped["b"][r, k], x, False),
          lb.probabilities(whole["w"][r, k], whole["b"][r, k], x, False), atol=1e-4)
