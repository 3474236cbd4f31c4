"""The optimizer's per-subtree learning-rate multipliers (`config.train.lr_multipliers`)."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from asg_jax import config as config_lib
from asg_jax.errors import ConfigError
from asg_jax import state as state_lib

LR, WD = 1e-2, 0.05


def _train_cfg(multipliers=None):
  c = config_lib.base_config()
  c.train.lr = LR
  c.train.init_lr = LR
  c.train.end_lr = LR              # a constant schedule: step 0 uses lr exactly
  c.train.warmup_frac = 0.0
  c.train.weight_decay = WD
  if multipliers is not None:
    c.train.lr_multipliers = multipliers
  return c.train


def _tree():
  params = {"a": {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array([0.5])},
            "b": {"w": jnp.array([[0.25, -1.0]])}}
  grads = {"a": {"w": jnp.array([0.1, 0.2, -0.3]), "b": jnp.array([-1.0])},
           "b": {"w": jnp.array([[2.0, -0.5]])}}
  return params, grads


def _one_step(train_cfg):
  tx, _ = state_lib.make_optimizer(train_cfg, 100)
  params, grads = _tree()
  updates, _ = tx.update(grads, tx.init(params), params)
  return jax.tree.map(np.asarray, updates), params, grads


def test_lr_multiplier_scales_only_its_subtree():
  m = 5.0
  plain, params, grads = _one_step(_train_cfg())
  scaled, _, _ = _one_step(_train_cfg({"a": m}))
  # known answer of AdamW's first step (bias-corrected moments: m̂ = g, v̂ = g²)
  expected = jax.tree.map(
      lambda g, p: -LR * (np.asarray(g) / (np.abs(np.asarray(g)) + 1e-8) + WD * np.asarray(p)),
      grads, params)
  jax.tree.map(lambda u, e: np.testing.assert_allclose(u, e, rtol=1e-5), plain, expected)  # float32 rounding
  # subtree a moves exactly m× as far; subtree b's update is unchanged, bit for bit
  jax.tree.map(lambda u, p: np.testing.assert_allclose(u, m * p, rtol=1e-6),
               scaled["a"], plain["a"])
  jax.tree.map(np.testing.assert_array_equal, scaled["b"], plain["b"])


def test_no_multipliers_is_the_plain_adamw():
  params, _ = _tree()
  tx, _ = state_lib.make_optimizer(_train_cfg(), 100)
  ref = optax.adamw(optax.constant_schedule(LR), weight_decay=WD)   # today's optimizer
  assert (jax.tree_util.tree_structure(tx.init(params))
          == jax.tree_util.tree_structure(ref.init(params)))


def test_unknown_multiplier_name_is_an_error_naming_it():
  tx, _ = state_lib.make_optimizer(_train_cfg({"tag_decodr": 5.0}), 100)
  params, _ = _tree()
  with pytest.raises(ConfigError, match=r"'tag_decodr'.*\['a', 'b'\]"):
    tx.init(params)


def test_multiplier_must_be_positive():
  c = config_lib.base_config()
  c.train.lr_multipliers = {"tag_decoder": -1.0}
  with pytest.raises(ConfigError, match="tag_decoder"):
    config_lib.check_overrides_applied(c)
