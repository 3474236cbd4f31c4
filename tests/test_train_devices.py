"""The train step on 1 and 8 simulated devices: one compilation, the same losses,
measurements and parameters (its own file so that the two xdist workers of the README's
test command share the train-loop tests evenly)."""
import jax
import numpy as np
import pytest

from asg_jax import parallel
from tests.helpers import demo_config, run_steps


# ASG only: RECLF's sharded local matching (the shard_map over image rows) is checked
# against one device, values and gradients, in tests/losses/test_reclf_sharded.py; the
# whole main job across 2 processes x 4 devices in tests/test_main_job_devices.py.
@pytest.mark.parametrize("objective,image", [("asg", "vit")])
@pytest.mark.slow
def test_step_compiles_once_and_one_device_equals_eight(objective, image):
  config = demo_config(f"runlocal,objective={objective},image={image}")
  jitted8, state8, hist8 = run_steps(config, parallel.make_mesh(8), 3)
  assert jitted8._cache_size() == 1          # pylint: disable=protected-access
  _, state1, hist1 = run_steps(config, parallel.make_mesh(1), 3)
  for h1, h8 in zip(hist1, hist8):
    assert set(h1) == set(h8) and bool(h1["finite"])
    for k in h1:
      np.testing.assert_allclose(h1[k], h8[k], rtol=2e-4, atol=2e-5, err_msg=k)
  # Parameters: Adam divides by sqrt(v), so a parameter whose true gradient is ~0 (e.g. a
  # LayerNorm bias feeding a BatchNorm, the bias of a logit under a softmax) moves by up to
  # lr per step on rounding noise, which
  # differs with the reduction order. Every leaf must agree within that bound, and all but a
  # few leaves tightly.
  flat1 = jax.tree_util.tree_leaves_with_path(jax.device_get(state1.params))
  flat8 = jax.tree.leaves(jax.device_get(state8.params))
  bound = 2 * 3 * config.train.lr
  loose = []
  for (path, a), b in zip(flat1, flat8):
    np.testing.assert_allclose(a, b, rtol=0, atol=bound, err_msg=jax.tree_util.keystr(path))
    if not np.allclose(a, b, rtol=1e-3, atol=2e-5):
      loose.append(jax.tree_util.keystr(path))
  assert len(loose) <= max(3, len(flat8) // 25), loose
  assert int(state8.step) == 3
  # the measurements the step returns, and a schedule that starts at init_lr
  for key in ("loss", "lr", "grad_norm", "top1", "top5", "i2t_top1", "t2i_top5"):
    assert key in hist8[0], key
  np.testing.assert_allclose(hist8[0]["lr"], 1e-8, rtol=1e-5)
  assert hist8[1]["lr"] > hist8[0]["lr"]
