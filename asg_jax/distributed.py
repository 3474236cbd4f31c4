"""Multi-host set-up: `jax.distributed` from flags or the launcher's environment, and the
"process 0 does it, the others wait" helper.

    distributed.initialize(coordinator, num_processes, process_id)   # before any device use
    with distributed.first_process_only("build the dataset") as mine:
      if mine:
        build()

Where the arguments come from, first match wins:
1. the flags `--jax_coordinator_address`, `--jax_num_processes`, `--jax_process_id`;
2. the environment variables `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
   `JAX_PROCESS_ID` (what a hand-written launcher exports);
3. a cluster JAX detects by itself (Slurm `SLURM_JOB_ID` with several tasks, Open MPI
   `OMPI_COMM_WORLD_SIZE`, a multi-host Cloud TPU slice `TPU_WORKER_HOSTNAMES`):
   `jax.distributed.initialize()` without arguments;
otherwise one process, nothing is initialised.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Mapping

import jax

ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def resolve(coordinator: str | None = None, num_processes: int | None = None,
            process_id: int | None = None, env: Mapping[str, str] | None = None
            ) -> dict | None:
  """The keyword arguments of `jax.distributed.initialize` (see the module docstring):
  a dict (empty = let JAX detect the cluster), or None for a single process."""
  env = os.environ if env is None else env
  if coordinator or num_processes or process_id is not None:
    given = {"coordinator_address": coordinator, "num_processes": num_processes,
             "process_id": process_id}
    missing = [k for k, v in given.items() if v is None or v == ""]
    if missing:
      raise ValueError(f"multi-host: --jax_coordinator_address, --jax_num_processes and "
                       f"--jax_process_id go together; missing {', '.join(missing)}")
    return given
  if all(env.get(k) for k in ENV):
    return {"coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(env["JAX_NUM_PROCESSES"]),
            "process_id": int(env["JAX_PROCESS_ID"])}
  if int(env.get("SLURM_NTASKS", "1") or 1) > 1 or int(env.get("OMPI_COMM_WORLD_SIZE", "1")
                                                        or 1) > 1:
    return {}
  if "," in env.get("TPU_WORKER_HOSTNAMES", ""):
    return {}
  return None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
  """`jax.distributed.initialize` when several processes are configured; True if it ran."""
  kwargs = resolve(coordinator, num_processes, process_id)
  if kwargs is None:
    return False
  jax.distributed.initialize(**{k: v for k, v in kwargs.items() if v is not None})
  return True


def barrier(name: str) -> None:
  """Every process waits here until all have arrived (a no-op with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


@contextlib.contextmanager
def first_process_only(name: str) -> Iterator[bool]:
  """Yields True on process 0 (which does the work inside) and False elsewhere; every
  process leaves the block only once process 0 has finished it."""
  try:
    yield jax.process_index() == 0
  finally:
    barrier(f"asg_jax:{name}")
