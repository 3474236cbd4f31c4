"""benchmarks/torch_reference.py: the PyTorch mirror of the ASG step has the JAX model's
parameter count and trains (tiny, runlocal sizes; a few seconds)."""
import math
import os
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

BENCHMARKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks")
if BENCHMARKS not in sys.path:
  sys.path.insert(0, BENCHMARKS)

import torch_reference  # noqa: E402  pylint: disable=wrong-import-position
import train_step  # noqa: E402  pylint: disable=wrong-import-position


def _jax_num_params(config) -> int:
  """The JAX model's parameter count from `jax.eval_shape` of its init (nothing compiled)."""
  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax import inference  # pylint: disable=import-outside-toplevel
  from asg_jax import state as state_lib  # pylint: disable=import-outside-toplevel
  from asg_jax.models import vlp  # pylint: disable=import-outside-toplevel
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  constants = {}
  if config.model.tag_decoder.enabled:
    constants["tag_queries"] = np.zeros((40, config.model.text.hidden_size), np.float32)
  variables = state_lib.abstract_variables(model, inference.dummy_batch(config, 2), constants)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("ablation", ["full", "ira"])
def test_param_count_equals_jax(ablation):
  config = train_step.make_config(size="tiny", ablation=ablation, batch=4)
  torch_params = torch_reference.count_params(torch_reference.ModelAndLoss(config))
  assert torch_params == _jax_num_params(config)
  assert (config.model.tag_decoder.enabled) == (ablation == "full")


@pytest.fixture
def one_torch_thread():
  """One intra-op thread: on a loaded shared CPU, OpenMP barriers at 2+ threads make tiny
  steps 10x slower (benchmarks/compare_torch.py)."""
  before = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(before)


def test_step_trains_on_a_fixed_batch(one_torch_thread):  # pylint: disable=redefined-outer-name,unused-argument
  config = train_step.make_config(size="tiny", ablation="full", batch=8)
  with config.unlocked():   # a constant, large learning rate and no dropout: loss must fall
    config.train.lr = config.train.init_lr = config.train.end_lr = 1e-3
    config.train.warmup_frac = 0.0
    config.model.text.hidden_dropout = config.model.text.attention_dropout = 0.0
    config.model.tag_decoder.dropout = 0.0
  step, num_params = torch_reference.make_torch_step(config, 8, compile=False, device="cpu")
  assert num_params == step.runner.num_params > 0
  losses = [step() for _ in range(5)]
  assert all(math.isfinite(x) for x in losses), losses
  assert losses[-1] < losses[0], losses
  terms = step.runner.last_measurements
  assert {"ira", "erl", "arsa", "irl", "loss", "top1"} <= set(terms)
  assert math.isfinite(step.runner.grad_norm)


def test_roi_align_matches_jax():
  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax.losses import roi_align as jax_roi_align  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  fmap = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
  x1, y1 = rng.uniform(-1, 4, (2, 4)), rng.uniform(-1, 3, (2, 4))
  boxes = np.stack([x1, y1, x1 + rng.uniform(0.2, 3, (2, 4)), y1 + rng.uniform(0.2, 3, (2, 4))],
                   -1).astype(np.float32)
  want = np.asarray(jax.jit(jax_roi_align)(fmap, boxes))
  got = torch_reference.roi_align_1x1(torch.from_numpy(fmap), torch.from_numpy(boxes)).numpy()
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
