"""MGCA and ConVIRT gradients on a tiny case: finite, and equal to central finite differences
(directional derivatives along random directions; the losses compute in float32, so the step
is 1e-3 and the tolerance 1e-3 relative). The parts the release computes
without gradient (the [CLS]-attention weights, the Sinkhorn codes) are held at their values
at the base point, as autodiff does; the prototypes move along the tangent of their unit
sphere, where the straight-through normalisation's gradient is the true one."""
import jax
import jax.numpy as jnp
import numpy as np

from asg_jax import losses
from asg_jax.losses import mgca

B, W, P, D, K = 3, 5, 4, 6, 7
EPS = 4e-3


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  mask = np.arange(W)[None] < np.array([[5], [3], [2]])
  return {
      "image_emb": unit(rng.normal(size=(B, D))), "text_emb": unit(rng.normal(size=(B, D))),
      "word_emb": unit(rng.normal(size=(B, W, D))), "patch_emb": unit(rng.normal(size=(B, P, D))),
      "prototypes": unit(rng.normal(size=(K, D))), "word_mask": mask,
      "word_importance": np.where(mask, rng.uniform(0.1, 1.0, (B, W)), 0.0),
      "patch_importance": rng.dirichlet(np.ones(P), size=B),
  }


def _surrogates(x0):
  """Loss functions of the differentiated arrays with the no-gradient parts fixed at x0."""
  word_w = mgca.mgca_word_weights(x0["word_importance"], x0["word_mask"])
  patch_w = mgca.mgca_patch_weights(x0["patch_importance"])
  c0 = mgca.l2_normalize(x0["prototypes"])
  codes = {k: losses.sinkhorn_knopp(x0[k] @ c0.T) for k in ("image_emb", "text_emb")}

  def proto(d):
    c = mgca.l2_normalize(d["prototypes"])      # the true normalisation (no straight-through)
    s_v, s_t = d["image_emb"] @ c.T, d["text_emb"] @ c.T
    return 0.5 * (-jnp.sum(codes["image_emb"] * jax.nn.log_softmax(s_t / 0.2, axis=1))
                  - jnp.sum(codes["text_emb"] * jax.nn.log_softmax(s_v / 0.2, axis=1))) / B

  def local(d, vit):
    return losses.mgca_local_loss(d["word_emb"], d["patch_emb"], word_w, x0["word_mask"],
                                  patch_w if vit else None, 0.1)

  def objective(d):
    return losses.mgca_objective({**x0, **d}, vit=True)[0]

  return {"proto": proto, "vit": lambda d: local(d, True), "cnn": lambda d: local(d, False),
          "objective": objective,
          "convirt": lambda d: losses.convirt_loss(d["image_emb"], d["text_emb"], 0.1, 0.75)}


def _directional(f, x, v, h):
  """Central difference of f at x along v, Richardson-extrapolated: error O(h⁴)."""
  d = lambda t: (f({k: x[k] + t * v[k] for k in x}) - f({k: x[k] - t * v[k] for k in x})) / (
      2 * t)  # noqa: E731
  return (4 * d(h / 2) - d(h)) / 3


def test_gradients_are_finite_and_equal_finite_differences():
  x0 = jax.tree.map(lambda a: jnp.asarray(a, a.dtype if a.dtype == bool else jnp.float32),
                    _inputs())
  diff = {k: x0[k] for k in ("image_emb", "text_emb", "word_emb", "patch_emb", "prototypes")}
  rng = np.random.default_rng(1)
  directions = []
  for _ in range(3):
    v = {k: rng.normal(size=a.shape).astype(np.float32) for k, a in diff.items()}
    c = np.asarray(diff["prototypes"])   # tangent of each prototype's unit sphere
    v["prototypes"] = v["prototypes"] - np.sum(v["prototypes"] * c, 1, keepdims=True) * c
    directions.append(v)

  @jax.jit
  def program(diff, directions):
    fns = _surrogates(x0)
    # autodiff of the public functions; FD of the surrogates (the objective: λ-weighted sum)
    grads = {
        "proto": jax.grad(lambda d: losses.mgca_prototype_loss(
            d["image_emb"], d["text_emb"], d["prototypes"]))(diff),
        "vit": jax.grad(fns["vit"])(diff), "cnn": jax.grad(fns["cnn"])(diff),
        "objective": jax.grad(fns["objective"])(diff), "convirt": jax.grad(fns["convirt"])(diff),
    }
    fns["objective"] = lambda d: (losses.ira_loss(d["image_emb"], d["text_emb"])
                                  + 0.7 * fns["vit"](d) + 0.5 * fns["proto"](d))
    out = {}
    for name, g in grads.items():
      out[name] = (jnp.stack([sum(jnp.sum(g[k] * v[k]) for k in diff) for v in directions]),
                   jnp.stack([_directional(fns[name], diff, v, EPS) for v in directions]),
                   jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in g.values()])))
    out["value"] = (_surrogates(x0)["objective"](diff), fns["objective"](diff))
    return out

  out = program(diff, directions)
  for name in ("proto", "vit", "cnn", "objective", "convirt"):
    analytic, numeric, finite = out[name]
    assert bool(finite), name
    assert np.abs(np.asarray(analytic)).min() > 1e-2, name      # not a vacuous check
    np.testing.assert_allclose(analytic, numeric, rtol=1e-3, atol=2e-4, err_msg=name)
  # the objective is λ1·ITA + λ2·local + λ3·proto of the surrogates at the base point
  np.testing.assert_allclose(*out["value"], rtol=1e-6)
