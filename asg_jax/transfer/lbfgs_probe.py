"""The converged linear probe (`linear_probe` with `solver="lbfgs"`; docs/transfer.md): CLIP's
protocol, full-batch L2-regularised logistic regression on the cached features.

For each run r (a label fraction × seed: `mask[r]` selects its n_r training rows) and each L2
strength C of a small grid it minimises, with `optax.lbfgs` (zoom line search),

    (1 / n_r) · Σ_i loss(x_i W + b, y_i)  +  ||W||² / (2 · C · n_r)

i.e. scikit-learn's `LogisticRegression(C=C)` objective `C · Σ loss + ||W||² / 2` divided by
C · n_r (same minimiser; the bias is not penalised). `loss` is the per-class sigmoid BCE
summed over classes (multi-label: one independent binary regression per class, as
`LogisticRegression` fitted per column) or the softmax cross-entropy (one-hot sets:
multinomial `LogisticRegression`). The optimiser works on centred, unit-variance features
(an exact reparametrisation: W = V / s, b = c − μ·W, the penalty kept on W), so raw features of
any scale converge; every run × strength is one `vmap`ped, jitted `while_loop`. The strength
of each run is the grid value with the lowest validation loss (mean, unregularised); seeds
vary only the (irrelevant for a convex problem) initial point.

With fewer training rows N than features D (a small own dataset, 2048-d ResNet features)
the fit runs in the rows' span: X = U S Vᵀ (thin SVD), W = V β, so X W = (U S) β and
||W|| = ||β||: an exact reduction to N coordinates (every run's rows are rows of X, and an
L2-penalised solution lies in the span of its rows), D / N times less work per iteration.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from asg_jax.transfer.classification import logits_loss

DEFAULT_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)   # C, as scikit-learn's


def _standardiser(x: jnp.ndarray, mask: jnp.ndarray):
  """(μ [D], s [D]) of the run's rows (s = 1 where a feature is constant)."""
  w = mask.astype(jnp.float32)
  n = jnp.maximum(w.sum(), 1.0)
  mu = (w[:, None] * x).sum(0) / n
  var = (w[:, None] * (x - mu) ** 2).sum(0) / n
  s = jnp.sqrt(var)
  return mu, jnp.where(s > 1e-6 * (1.0 + jnp.abs(mu)), s, 1.0)


@functools.partial(jax.jit, static_argnames=("multiclass", "max_iter"))
def fit_lbfgs(x_train, y_train, masks, run_keys, cs, *, multiclass: bool = False,
              max_iter: int = 500, tol: float = 1e-6) -> dict:
  """Fit R × L regularised logistic regressions (module docstring).

  Args:
    x_train, y_train: [N, D] features, [N, C] 0/1 labels of every training row.
    masks: bool [R, N], the rows of each run.
    run_keys: [R, 2] PRNG keys (the initial point of each run).
    cs: [L] inverse L2 strengths (scikit-learn's C).
    multiclass: softmax (one-hot labels) instead of per-class sigmoids.
    max_iter, tol: L-BFGS iterations at most; stop when the gradient norm (standardised
      coordinates, objective / (C·n)) is below tol.
  Returns:
    {"w" [R, L, D, C], "b" [R, L, C], "iterations" [R, L], "grad_norm" [R, L]}.
  """
  x_train = jnp.asarray(x_train, jnp.float32)
  y_train = jnp.asarray(y_train, jnp.float32)
  basis = None
  if x_train.shape[0] < x_train.shape[1]:   # fewer rows than features: their row space
    _, _, vt = jnp.linalg.svd(x_train, full_matrices=False)       # [N, D], orthonormal rows
    basis = vt.T
    x_train = x_train @ basis                                      # [N, N]
  dim, num_classes = x_train.shape[1], y_train.shape[1]

  def fit_one(mask, key, c):
    mu, s = _standardiser(x_train, mask)
    xs = (x_train - mu) / s
    weight = mask.astype(jnp.float32)
    n = jnp.maximum(weight.sum(), 1.0)
    lam = 1.0 / (c * n)

    def objective(p):
      data = logits_loss(xs @ p["v"] + p["c"], y_train, weight, multiclass)
      if not multiclass:
        data = data * num_classes       # logits_loss averages the classes: sum them
      return data + 0.5 * lam * jnp.sum((p["v"] / s[:, None]) ** 2)

    p0 = {"v": 1e-3 * jax.random.normal(key, (dim, num_classes), jnp.float32),
          "c": jnp.zeros((num_classes,), jnp.float32)}
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(objective)

    def step(carry):
      p, state = carry
      value, grad = value_and_grad(p, state=state)
      updates, state = opt.update(grad, state, p, value=value, grad=grad, value_fn=objective)
      return optax.apply_updates(p, updates), state

    def cond(carry):
      _, state = carry
      k = otu.tree_get(state, "count")
      g = otu.tree_norm(otu.tree_get(state, "grad"))
      return (k == 0) | ((k < max_iter) & (g >= tol))

    p, state = jax.lax.while_loop(cond, step, (p0, opt.init(p0)))
    w = p["v"] / s[:, None]
    b = p["c"] - mu @ w
    return w, b, otu.tree_get(state, "count"), otu.tree_norm(jax.grad(objective)(p))

  per_c = jax.vmap(fit_one, in_axes=(None, None, 0))
  w, b, it, g = jax.vmap(per_c, in_axes=(0, 0, None))(masks, run_keys, jnp.asarray(cs, jnp.float32))
  if basis is not None:                     # back to the features: W = basis · W_rows
    w = jnp.einsum("dk,rlkc->rldc", basis, w)
  return {"w": w, "b": b, "iterations": it, "grad_norm": g}


def fit_runs(x_train, y_train, masks, run_keys, cs, *, multiclass: bool = False,
             max_iter: int = 500, tol: float = 1e-6) -> dict:
  """`fit_lbfgs` of every run, each fitted on its own rows only: runs with equal row
  counts (one label fraction) form one vmapped fit over the union of their rows (at 1 % of
  a 1,700-film split: 69 rows, not 1,700 masked ones), and runs with the same rows (every
  seed at 100 %) are fitted once. The same minimisers as one `fit_lbfgs` over all rows
  (each run's objective reads its rows only; convex, so the initial point does not
  matter), at a fraction of the work.

  Args / returns: as `fit_lbfgs` (NumPy arrays on the host); masks bool [R, N].
  """
  x_train, y_train = np.asarray(x_train, np.float32), np.asarray(y_train, np.float32)
  masks = np.asarray(masks, bool)
  unique, first, inverse = np.unique(masks, axis=0, return_index=True, return_inverse=True)
  inverse = np.ravel(inverse)
  keys = np.asarray(run_keys)[first]
  out: dict | None = None
  counts = unique.sum(1)
  for count in np.unique(counts):
    group = np.flatnonzero(counts == count)                  # unique runs of this size
    rows = np.flatnonzero(unique[group].any(0))
    fit = jax.device_get(fit_lbfgs(x_train[rows], y_train[rows], unique[group][:, rows],
                                   keys[group], cs, multiclass=multiclass,
                                   max_iter=max_iter, tol=tol))
    if out is None:
      out = {k: np.zeros((len(unique),) + np.shape(v)[1:], np.asarray(v).dtype)
             for k, v in fit.items()}
    for k, v in fit.items():
      out[k][group] = v
  return {k: v[inverse] for k, v in out.items()}


def probabilities(w, b, x, multiclass: bool) -> np.ndarray:
  """[..., N, C] probabilities of weights w [..., D, C], b [..., C] on features x [N, D]."""
  logits = jnp.einsum("nd,...dc->...nc", jnp.asarray(x, jnp.float32), w) + b[..., None, :]
  return np.asarray(jax.nn.softmax(logits) if multiclass else jax.nn.sigmoid(logits))


def validation_losses(fit: dict, x_val, y_val, multiclass: bool) -> np.ndarray:
  """[R, L] mean unregularised validation loss of every run and strength."""
  p = np.clip(probabilities(fit["w"], fit["b"], x_val, multiclass), 1e-7, 1 - 1e-7)
  y = np.asarray(y_val, np.float32)
  if multiclass:
    per = -(y * np.log(p)).sum(-1)
  else:
    per = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(-1)
  return per.mean(-1)


def select(fit: dict, val_loss: np.ndarray) -> tuple[dict, np.ndarray]:
  """({"w" [R, D, C], "b" [R, C]} at each run's best strength, the chosen indices [R])."""
  best = np.nanargmin(np.where(np.isfinite(val_loss), val_loss, np.inf), axis=1)
  r = np.arange(len(best))
  w, b = np.asarray(fit["w"]), np.asarray(fit["b"])
  return {"w": w[r, best], "b": b[r, best]}, best
