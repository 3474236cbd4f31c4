"""LocalMatchingHead: parameters, zero initialisation, configuration errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.models import local_matching
from asg_jax.models.relation import LocalMatchingHead


def _inputs(b=4, m=5, n=6, e=8, seed=0):
  rng = np.random.default_rng(seed)
  unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  mask = np.arange(n)[None] < np.array([6, 2, 4, 1])[:b, None]
  words = np.where(mask[..., None], unit(rng.normal(size=(b, n, e))), 0).astype(np.float32)
  return (unit(rng.normal(size=(b, m, e))), words, mask,
          rng.uniform(0.1, 1, (b, n)).astype(np.float32))


def test_parameters_and_zero_initialisation():
  x = _inputs()
  head = LocalMatchingHead(srm_layers=2, srm_heads=2, srm_visual_context=True, irm_hidden=16)
  params = jax.jit(head.init)(jax.random.key(0), *x)["params"]
  shapes = jax.tree.map(jnp.shape, params)
  assert shapes["srm_0_query"] == (16, 8) and shapes["srm_1_key"] == (16, 8)
  assert shapes["srm_0_value"] == (8, 8) and shapes["irm"]["hidden"]["kernel"] == (8, 16)
  for name in ("srm_0_value", "srm_1_value"):
    assert np.all(params[name] == 0)
  assert np.all(params["irm"]["out"]["kernel"] == 0) and np.all(params["irm"]["out"]["bias"] == 0)
  assert np.any(params["srm_0_query"] != 0)


def test_srm_and_irm_are_identity_at_init_and_learn_afterwards():
  x = _inputs()
  full = LocalMatchingHead(use_srm=True, use_irm=True, block_size=3)
  params = jax.jit(full.init)(jax.random.key(0), *x)
  no_srm = LocalMatchingHead(use_srm=False, use_irm=True)
  no_srm_params = {"params": {"irm": params["params"]["irm"]}}
  apply = jax.jit(full.apply)
  np.testing.assert_allclose(apply(params, *x), jax.jit(no_srm.apply)(no_srm_params, *x),
                             atol=1e-6)
  # Gradients reach W_v and g's output layer (so SRM / IRM can move off the identity).
  grads = jax.jit(jax.grad(lambda p: jnp.sum(jnp.diagonal(full.apply(p, *x)))))(params)
  grads = grads["params"]
  assert np.abs(grads["srm_0_value"]).max() > 0
  assert np.abs(grads["irm"]["out"]["kernel"]).max() > 0
  moved = jax.tree.map(lambda p, g: p + 0.5 * g, params, {"params": grads})
  assert np.abs(apply(moved, *x) - apply(params, *x)).max() > 1e-4


def test_uniform_importance_source_and_gloria_ignores_flags():
  patch, words, mask, importance = _inputs()
  head = LocalMatchingHead(use_srm=False, importance_source="uniform")
  params = jax.jit(head.init)(jax.random.key(0), patch, words, mask)
  r = jax.jit(local_matching.local_matching_scores)(patch, words, mask, 0.1)
  mean = jnp.sum(r, -1) / mask.sum(-1)
  np.testing.assert_allclose(jax.jit(head.apply)(params, patch, words, mask), mean, atol=1e-6)
  gloria = LocalMatchingHead(mode="gloria", use_srm=True, use_irm=True)
  assert not jax.tree.leaves(jax.eval_shape(gloria.init, jax.random.key(0), patch, words,
                                            mask, importance))


def test_configuration_errors():
  x = _inputs()
  with pytest.raises(ValueError, match="srm_heads"):
    LocalMatchingHead(srm_heads=3).init(jax.random.key(0), *x)
  with pytest.raises(ValueError, match="word_importance"):
    LocalMatchingHead(use_srm=False).init(jax.random.key(0), *x[:3])
  with pytest.raises(ValueError, match="mode"):
    LocalMatchingHead(mode="mgca").init(jax.random.key(0), *x)
  with pytest.raises(ValueError, match="pooling"):
    LocalMatchingHead(use_irm=False, use_srm=False, pooling="max").init(jax.random.key(0), *x)


@pytest.mark.parametrize("detach", [True, False])
def test_importance_prior_gradient_switch(detach):
  patch, words, mask, importance = _inputs()
  head = LocalMatchingHead(use_srm=False, detach_importance=detach)
  params = head.init(jax.random.key(0), patch, words, mask, importance)
  g = jax.jit(jax.grad(lambda imp: jnp.sum(head.apply(params, patch, words, mask, imp) ** 2)))(
      importance)
  assert (np.abs(g).max() > 0) != detach
