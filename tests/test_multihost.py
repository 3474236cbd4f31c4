"""Multi-host: where `asg_jax.distributed` takes its arguments from. (2 local processes × 4
devices running the whole main job as 1 process × 8 devices does, on the real input pipeline:
tests/test_main_job_devices.py.)"""
import pytest

from asg_jax import distributed


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
