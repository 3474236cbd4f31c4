"""benchmarks/lower.py: the tiny recipes' programs export for TPU and GPU from this CPU box.

The runlocal train steps of ASG and RECLF are exported (`jax.export`, no device) for `tpu`
and `cuda` on the 8 simulated devices of conftest.py: sharded for 8 devices with the batch
split over `data`, no host callback, no CPU-only custom call. The negative tests show the
check fails where it must: host callbacks (refused by the export, named by the jaxpr walk,
and flagged in a module's text), the wrong device count, and cuDNN attention, which cannot
lower without its GPU.
"""
import json
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import parallel

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import lower  # noqa: E402  pylint: disable=wrong-import-position

RECIPES = ("configs/asg_vit_b16.py:runlocal", "configs/reclf_vit_b16.py:runlocal")
REPORT_KEYS = {"platform", "config", "devices", "batch", "ok", "ops", "custom_calls",
               "seconds", "error"}


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "conftest.py simulates 8 CPU devices"
  return parallel.make_mesh(8)


@pytest.mark.parametrize("platform", lower.PLATFORMS)
@pytest.mark.parametrize("spec", RECIPES)
def test_train_step_exports_sharded_for_8_devices(mesh, spec, platform):
  config = lower.load_config(spec)
  out = lower.lower_recipe(config, platform=platform, devices=8)
  report = out["report"]
  assert set(report) == REPORT_KEYS
  assert report["ok"], report["error"]
  assert report["error"] is None and report["batch"] == config.train.batch_size == 16
  (result,) = out["programs"].values()
  exported = result["exported"]
  assert exported.nr_devices == 8 and exported.platforms == (platform,)
  # the batch (12 arrays) split over `data`, the state and constants replicated
  # the batch split over `data`, the state and constants replicated (None: an input the
  # program does not read, e.g. RECLF's region boxes, pruned from the module)
  (state, batch, constants), _ = jax.tree.unflatten(
      exported.in_tree, [None if s is None else s.spec for s in exported.in_shardings_jax(mesh)])
  assert batch["image"] == batch["input_ids"] == jax.P(parallel.DATA_AXIS)
  assert set(batch.values()) <= {jax.P(parallel.DATA_AXIS), None}
  assert set(jax.tree.leaves(state)) == {jax.P()} and set(jax.tree.leaves(constants)) <= {jax.P()}
  assert all(s.spec == jax.P() for s in exported.out_shardings_jax(mesh))
  text = exported.mlir_module()
  assert 'sdy.mesh @mesh = <["data"=8]>' in text
  assert result["ops"]["stablehlo.dot_general"] > 0 and report["ops"] > 1000
  assert not [t for t in result["custom_calls"] if lower.HOST_OR_CPU_TARGETS.search(t)]
  assert "callback" not in text and "stablehlo.send" not in text


def test_cli_eval_programs_last_line_is_the_report(capsys, monkeypatch):
  """`--what eval` through main(): the evaluation pass, encode_images and encode_text."""
  monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))   # main() rewrites them
  monkeypatch.setenv("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS", ""))
  rc = lower.main(["--platform", "cuda", "--config", RECIPES[0], "--what", "eval"])
  lines = capsys.readouterr().out.strip().splitlines()
  report = json.loads(lines[-1])
  assert rc == 0 and report["ok"], report["error"]
  assert set(report) == REPORT_KEYS and report["devices"] == 8 and report["batch"] == 16
  assert any(line.startswith("eval_pass[") and "loss" in line for line in lines)
  assert any(line.startswith("encode_images: ok=True") for line in lines)
  assert any(line.startswith("encode_text: ok=True") for line in lines)


def _debug_callback(x):
  jax.debug.callback(lambda v: None, x.sum())
  return x * 2


def _pure_callback(x):
  return jax.pure_callback(lambda v: np.asarray(v), jax.ShapeDtypeStruct(x.shape, x.dtype), x)


@pytest.mark.parametrize("platform", lower.PLATFORMS)
@pytest.mark.parametrize("fn, primitive", [(_debug_callback, "debug_callback"),
                                           (_pure_callback, "pure_callback")])
def test_host_callback_is_reported_not_ok(mesh, fn, primitive, platform):
  x = jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=parallel.batch_sharding(mesh))
  result = lower.export_and_check(jax.jit(fn), (x,), platform=platform, devices=8)
  assert not result["ok"] and result["exported"] is None
  assert f"host callback in the program ({primitive})" in result["error"]
  # the same function without the callback exports
  clean = lower.export_and_check(jax.jit(lambda v: v * 2), (x,), platform=platform, devices=8)
  assert clean["ok"] and clean["error"] is None


def test_callback_in_module_text_is_flagged(mesh):
  """The text scan alone (e.g. a module exported with the safety checks disabled): the CPU
  lowering of a pure_callback holds the host custom call, and it is flagged."""
  x = jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=parallel.batch_sharding(mesh))
  ops, calls = lower.count_ops(jax.jit(_pure_callback).lower(x).as_text())
  assert ops["stablehlo.custom_call"] == 1
  problems = lower.problems_of(ops, calls)
  assert len(problems) == 1 and "host/CPU-only custom call" in problems[0]
  assert "callback" in problems[0]
  assert lower.problems_of(*lower.count_ops("%0 = stablehlo.add %a, %b : tensor<f32>")) == []


def test_wrong_device_count_is_reported(mesh):
  x = jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=parallel.batch_sharding(mesh))
  result = lower.export_and_check(jax.jit(lambda v: v * 2), (x,), platform="tpu", devices=4)
  assert not result["ok"] and result["error"] == "exported for 8 devices, not 4"


@pytest.mark.parametrize("platform", lower.PLATFORMS)
def test_cudnn_attention_is_named_not_raised(platform):
  config = lower.load_config(RECIPES[0], attention="cudnn")
  report = lower.lower_recipe(config, platform=platform, devices=8)["report"]
  assert set(report) == REPORT_KEYS and not report["ok"]
  assert "config.model.image.attention_impl='cudnn'" in report["error"]
  assert "config.model.text.attention_impl='cudnn'" in report["error"]
