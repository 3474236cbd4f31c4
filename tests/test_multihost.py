"""Multi-host: 2 local CPU processes × 4 devices (`jax.distributed`, a localhost
coordinator) train, evaluate and checkpoint exactly as 1 process × 8 devices
(tests/multihost_worker.py: the same losses, evaluation metrics and final parameters).
Also: where `asg_jax.distributed` takes its arguments from."""
import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from asg_jax import distributed, inference
from tests.fakes import FakeTokenizer

REPO = pathlib.Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "multihost_worker.py"
TIMEOUT_S = 420


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def launch(workdir, processes, devices, port=0):
  env = dict(os.environ)   # the worker sets its own device count in XLA_FLAGS
  return [subprocess.Popen(
      [sys.executable, str(WORKER), "--processes", str(processes), "--process_id", str(i),
       "--port", str(port), "--devices", str(devices), "--workdir", str(workdir)],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
      for i in range(processes)]


def finish(procs) -> list[str]:
  outs = []
  for p in procs:
    try:
      out, _ = p.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, out[-3000:]
    outs.append(out)
  return outs


def train_losses(out: str) -> list[float]:
  return [float(x) for x in re.findall(r"^step \d+/\d+ \| loss ([0-9.]+)", out, re.M)]


def test_two_processes_of_four_devices_equal_one_process_of_eight(tmp_path):
  multi, single = tmp_path / "2x4", tmp_path / "1x8"
  procs = launch(multi, 2, 4, free_port()) + launch(single, 1, 8)
  outs = finish(procs)
  out_multi0, out_single = outs[0], outs[2]
  assert "worker 1 done: 4 steps" in outs[1]
  losses = train_losses(out_multi0)                 # printed to 4 decimals
  assert len(losses) == 4
  np.testing.assert_allclose(losses, train_losses(out_single), rtol=1e-4, atol=5e-4)
  s_multi = json.loads((multi / "summary.json").read_text())
  s_single = json.loads((single / "summary.json").read_text())
  assert s_multi["devices"].startswith("8 x") and s_multi["steps"] == 4
  assert set(s_multi["metrics"]) == set(s_single["metrics"]) and "val_loss" in s_multi["metrics"]
  for k, v in s_single["metrics"].items():
    # retrieval ranks of near-tied pairs may swap on rounding: one example of 40 at most
    tol = 1.01 / 40 if "top" in k else 1e-5
    assert s_multi["metrics"][k] == pytest.approx(v, rel=1e-4, abs=tol), k
  assert s_multi["num_eval_examples"] == s_single["num_eval_examples"] == 40
  # the checkpoints the 2 processes wrote together restore here, equal to the 1-process run
  tok = FakeTokenizer(64, 8)                  # the fake data's (no tokenizer.json written)
  a = inference.Pretrained.from_workdir(str(multi), tokenizer=tok).variables
  b = inference.Pretrained.from_workdir(str(single), tokenizer=tok).variables
  # as tests/test_train_devices.py: Adam moves a parameter whose true gradient is ~0 by up
  # to lr per step on rounding noise (another reduction order): every leaf within that
  # bound, all but a few tightly; BatchNorm running statistics to 1e-3
  lr, loose = 5e-4, []                       # configs/demo.py
  flat_a = jax.tree_util.tree_leaves_with_path(a["params"])
  flat_b = jax.tree.leaves(b["params"])
  assert len(flat_a) == len(flat_b) > 50
  for (path, x), y in zip(flat_a, flat_b):
    np.testing.assert_allclose(x, y, rtol=0, atol=2 * 4 * lr, err_msg=jax.tree_util.keystr(path))
    if not np.allclose(x, y, rtol=1e-3, atol=2e-5):
      loose.append(jax.tree_util.keystr(path))
  assert len(loose) <= max(3, len(flat_b) // 25), loose
  for x, y in zip(jax.tree.leaves(a["batch_stats"]), jax.tree.leaves(b["batch_stats"])):
    np.testing.assert_allclose(x, y, rtol=1e-2, atol=1e-3)
  assert (multi / "first_process_marker").read_text() == "0"


def test_distributed_arguments_come_from_flags_then_environment_then_cluster():
  env = {"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
  assert distributed.resolve("a:9", 2, 0, env=env) == {
      "coordinator_address": "a:9", "num_processes": 2, "process_id": 0}
  assert distributed.resolve(env=env) == {
      "coordinator_address": "h:1", "num_processes": 4, "process_id": 3}
  assert distributed.resolve(env={"SLURM_NTASKS": "8"}) == {}          # JAX detects it
  assert distributed.resolve(env={"OMPI_COMM_WORLD_SIZE": "2"}) == {}
  assert distributed.resolve(env={"TPU_WORKER_HOSTNAMES": "w0,w1"}) == {}
  assert distributed.resolve(env={"SLURM_NTASKS": "1"}) is None        # one process
  assert distributed.resolve(env={}) is None
  with pytest.raises(ValueError, match="process_id"):
    distributed.resolve("a:9", 2, None, env={})
