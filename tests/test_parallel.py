"""asg_jax/parallel.py on the suite's 8 simulated devices: trees committed anywhere meet the
mesh through `replicate` (what the 8-device transfer crash lacked), and the two ways a host
batch becomes a global array agree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import parallel


def test_replicate_takes_trees_committed_to_one_device_or_another_mesh():
  mesh8 = parallel.make_mesh(8)
  on_one = jax.device_put(np.arange(6.0, dtype=np.float32).reshape(2, 3), jax.devices()[0])
  on_other_mesh = jax.device_put(np.ones(4, np.float32),
                                 parallel.replicated(parallel.make_mesh(2)))
  tree = {"a": on_one, "b": on_other_mesh, "c": np.float32(2.0)}

  double = jax.jit(lambda t: jax.tree.map(lambda x: 2 * x, t))
  with jax.set_mesh(mesh8):
    with pytest.raises(ValueError, match="incompatible devices"):
      double(tree)                        # the crash on a many-device host, without it
    placed = parallel.replicate(tree, mesh8)
    out = double(placed)
  for key, value in placed.items():
    assert value.sharding.is_equivalent_to(parallel.replicated(mesh8), value.ndim), key
    assert len(value.devices()) == 8
  np.testing.assert_array_equal(out["a"], 2 * np.arange(6.0).reshape(2, 3))
  np.testing.assert_array_equal(out["b"], 2 * np.ones(4))
  assert parallel.replicate(placed, mesh8)["a"] is placed["a"]   # already there: kept


def test_a_global_host_batch_is_sharded_as_a_per_process_one_and_comes_back():
  mesh = parallel.make_mesh(8)
  batch = {"image": np.random.RandomState(0).rand(16, 4, 4, 1).astype(np.float32),
           "labels": np.arange(16, dtype=np.int32)}
  a = parallel.shard_global_batch(batch, mesh)
  b = parallel.shard_batch(batch, mesh)      # one process: its rows are all the rows
  for key in batch:
    assert a[key].sharding.is_equivalent_to(b[key].sharding, a[key].ndim)
    assert [s.data.shape[0] for s in a[key].addressable_shards] == [2] * 8
    np.testing.assert_array_equal(a[key], b[key])
  host = parallel.to_host({"sum": jnp.sum(a["image"]), "rows": a["labels"] * 2})
  assert isinstance(host["rows"], np.ndarray)
  np.testing.assert_array_equal(host["rows"], 2 * batch["labels"])
  np.testing.assert_allclose(host["sum"], batch["image"].sum(), rtol=1e-6)
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    parallel.shard_global_batch({"x": np.zeros(12)}, mesh)
