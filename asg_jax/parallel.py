"""Device mesh and shardings: one 1-D `data` axis, from one device to a pod.

Every jitted function of the project runs on the mesh made here (a single device is a mesh
of one), with the batch sharded over `data` and the train state replicated.
"""
from __future__ import annotations

import collections
from typing import Any, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh named `data` over the first `num_devices` devices (all by default).

  The axis is `AxisType.Auto`, so ordinary jnp code (e.g. `a @ b.T` on batch-sharded
  inputs) is partitioned by XLA; hand-written collectives use `jax.shard_map`.
  """
  devices = jax.devices()
  n = len(devices) if num_devices is None else int(num_devices)
  if not 1 <= n <= len(devices):
    raise ValueError(f"num_devices={num_devices} but {len(devices)} devices are available")
  return jax.make_mesh((n,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                       devices=devices[:n])


def batch_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Leading (batch) axis split over `data`, the rest replicated."""
  return NamedSharding(mesh, jax.P(DATA_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, jax.P())


def shard_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
  """Host batch (this process's rows) -> global `jax.Array`s sharded over `data`.

  Args:
    batch: dict of NumPy arrays `[B_process, ...]`; `B_process` must be divisible by the
      number of this process's devices in the mesh.
  Returns:
    dict of global arrays `[B_process * num_processes, ...]`.
  """
  sharding = batch_sharding(mesh)
  n_local = len([d for d in mesh.devices.flat if d.process_index == jax.process_index()])
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.shape[0] % n_local:
      raise ValueError(f"batch['{key}'] has {value.shape[0]} rows, not divisible by the "
                       f"{n_local} local devices of the mesh")
    out[key] = jax.make_array_from_process_local_data(sharding, value)
  return out


def shard_global_batch(batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh
                       ) -> dict[str, jax.Array]:
  """A host batch that every process holds whole (`[B, ...]`, the same on each: the
  transfer protocols' in-memory splits) -> global `jax.Array`s sharded over `data`; each
  process places its own devices' rows. One process: the same as `shard_batch`."""
  sharding = batch_sharding(mesh)
  out = {}
  for key, value in batch.items():
    value = np.asarray(value)
    if value.shape[0] % mesh.size:
      raise ValueError(f"batch['{key}'] has {value.shape[0]} rows, not divisible by the "
                       f"{mesh.size} devices of the mesh")
    out[key] = jax.make_array_from_callback(value.shape, sharding,
                                            lambda index, v=value: v[index])
  return out


def to_host(tree: Any) -> Any:
  """`jax.device_get` that also fetches arrays spread over several processes (every
  process gets the whole value; all processes must call it together)."""
  leaves = jax.tree.leaves(tree)
  if all(not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated
         for x in leaves):
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return jax.tree.map(np.asarray, multihost_utils.process_allgather(tree, tiled=True))


def replicate(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """Place a pytree replicated on every device of the mesh, wherever its leaves are now.

  Leaves may be NumPy arrays, scalars or `jax.Array`s committed anywhere: on one device
  (what `Pretrained.from_workdir` restores, what an un-meshed `jax.jit` returns), on
  another mesh, or already replicated here (kept as they are). A jitted function whose
  context mesh is `mesh` rejects arguments committed to other devices, so every restored
  or freshly initialised tree goes through here before it meets the mesh. With several
  processes every process must pass the same values (each places its own devices' copies).
  """
  target = replicated(mesh)

  def place(x):
    if isinstance(x, jax.Array):
      if x.sharding.is_equivalent_to(target, x.ndim):
        return x
      if x.is_fully_addressable:   # this process holds all of it: one hop through the host
        x = np.asarray(jax.device_get(x))
      elif x.is_fully_replicated:  # another process-spanning mesh: the local copy
        x = np.asarray(x.addressable_data(0))
    return jax.device_put(x, target)
  return jax.tree.map(place, tree)


def prefetch_to_mesh(batches: Iterator[Mapping[str, np.ndarray]], mesh: jax.sharding.Mesh,
                     depth: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Host batches -> sharded global batches (`shard_batch`), `depth` batches ahead.

  The transfers are asynchronous, so while the device runs step t the next `depth`
  batches are already on their way (0 = no prefetch: shard each batch when asked)."""
  queue: collections.deque = collections.deque()
  batches = iter(batches)
  while True:
    while len(queue) < max(depth, 0) + 1:   # the one returned now + `depth` ahead
      try:
        queue.append(shard_batch(next(batches), mesh))
      except StopIteration:
        break
    if not queue:
      return
    yield queue.popleft()
