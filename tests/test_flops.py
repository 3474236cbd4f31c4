"""asg_jax.flops counts the step's model FLOPs from the architecture: it agrees with XLA's
own count of the real (lowered) train step within 10%; the benchmark path imports neither
TensorFlow nor tfds (the GPU machine has neither)."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from asg_jax import flops, parallel, train
from asg_jax import state as state_lib
from asg_jax.data.pipeline import random_batch

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import train_step as bench  # noqa: E402

BATCH = 8


def xla_flops_per_pair(config) -> float:
  """XLA's cost analysis of the lowered train step, per pair."""
  mesh = parallel.make_mesh(1)
  program = train.build_train_step(config, mesh, num_steps=10, dropout_rng=jax.random.PRNGKey(0))
  host = random_batch.random_batch(config, BATCH)
  constants = {}
  if config.model.tag_decoder.enabled:
    constants["tag_queries"] = np.zeros((40, config.model.text.hidden_size), np.float32)
  with jax.set_mesh(mesh):
    state = jax.eval_shape(lambda: state_lib.TrainState(
        step=jax.numpy.zeros((), jax.numpy.int32),
        **dict(zip(("params", "batch_stats"), _variables(program, host, constants))),
        opt_state=None))
    state = state.replace(opt_state=jax.eval_shape(program.tx.init, state.params))
    cost = program.step.lower(state, parallel.shard_batch(host, mesh), constants).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost["flops"] / BATCH


def _variables(program, host, constants):
  v = state_lib.abstract_variables(program.model, host, constants)
  return v["params"], v["batch_stats"]


@pytest.mark.parametrize("ablation", ["full", "ira"])
def test_flop_count_agrees_with_xla_cost_analysis(ablation):
  config = bench.make_config(size="tiny", ablation=ablation, batch=BATCH)
  counted = flops.train_flops_per_pair(config, BATCH)
  assert counted == pytest.approx(xla_flops_per_pair(config), rel=0.10)


def test_ira_counts_no_local_heads_and_base_is_the_issue_figure():
  tiny_full = flops.train_flops_per_pair(bench.make_config(size="tiny"), BATCH)
  tiny_ira = flops.train_flops_per_pair(bench.make_config(size="tiny", ablation="ira"), BATCH)
  assert tiny_ira < 0.7 * tiny_full          # no tag decoder, no local heads, no ARSA
  base = flops.train_flops_per_pair(bench.make_config(size="base", batch=288), 288)
  assert 130e9 < base < 160e9                 # the issue's ≈ 146 GFLOP per pair


def test_benchmark_path_imports_neither_tensorflow_nor_tfds():
  code = ("import sys, json; sys.path.insert(0, '.'); from benchmarks import train_step as b; "
          "import asg_jax.train, asg_jax.state, asg_jax.flops, asg_jax.data.pipeline.random_batch; "
          "b.make_config(size='tiny'); b.make_config(size='base', loss='reclf'); "
          "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'tensorflow_datasets', 'tensorboard'))))")
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"), check=True)
  assert json.loads(out.stdout.strip().splitlines()[-1]) == []
