"""RECLF local loss on 8 simulated CPU devices (tests/conftest.py) equals one device."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import parallel
from asg_jax.losses import reclf
from asg_jax.models.relation import LocalMatchingHead


def _inputs(b=16, m=6, n=7, e=8, seed=0):
  rng = np.random.default_rng(seed)
  unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  mask = np.arange(n)[None] < rng.integers(1, n + 1, size=b)[:, None]
  words = np.where(mask[..., None], unit(rng.normal(size=(b, n, e))), 0).astype(np.float32)
  return {"patch_emb": unit(rng.normal(size=(b, m, e))), "word_emb": words,
          "word_mask": mask, "word_importance": rng.uniform(0.1, 1, (b, n)).astype(np.float32),
          "image_emb": unit(rng.normal(size=(b, e))), "text_emb": unit(rng.normal(size=(b, e))),
          "tags": rng.integers(-1, 2, size=(b, 40)).astype(np.int32)}


def _random_params(params):
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(3), len(leaves))
  return jax.tree.unflatten(tree, [0.3 * jax.random.normal(k, x.shape)
                                   for k, x in zip(keys, leaves)])


def _loss_fn(head, gloria):
  def loss(params, floats, data):
    data = {**data, **floats}
    outputs = dict(data)
    outputs["local_logits"] = head.apply(params, data["patch_emb"], data["word_emb"],
                                         data["word_mask"], data["word_importance"])
    loss, meas = reclf.reclf_objective(outputs, {"tags": data["tags"]},
                                       beta=0.0 if gloria else 0.2, gloria=gloria)
    return loss, (meas, outputs["local_logits"])
  grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)

  def fn(params, data):
    floats = {k: data[k] for k in ("patch_emb", "word_emb", "image_emb", "text_emb",
                                   "word_importance")}
    return grad(params, floats, data)
  return fn


@pytest.mark.parametrize("mode,kwargs", [
    ("reclf", dict(srm_layers=2, srm_heads=2, srm_visual_context=True)),
    ("gloria", dict())])
def test_sharded_local_loss_and_gradients_equal_single_device(mode, kwargs):
  data = _inputs()
  head = LocalMatchingHead(mode=mode, block_size=6, **kwargs)
  params = _random_params(head.init(jax.random.key(0), data["patch_emb"], data["word_emb"],
                                    data["word_mask"], data["word_importance"]))
  fn = _loss_fn(head, mode == "gloria")
  (loss_ref, (meas_ref, _)), grads_ref = jax.jit(fn)(params, data)

  mesh = parallel.make_mesh(8)
  assert mesh.size == 8, "tests/conftest.py should give 8 CPU devices"
  with jax.set_mesh(mesh):
    sharded = parallel.shard_batch(data, mesh)
    params_r = parallel.replicate(params, mesh)
    jaxpr = str(jax.make_jaxpr(fn)(params_r, sharded))
    assert "shard_map" in jaxpr and "all_gather" in jaxpr
    (loss, (meas, sim)), grads = jax.jit(fn)(params_r, sharded)

  assert sim.shape == (16, 16)
  assert sim.sharding.spec[0] == parallel.DATA_AXIS and len(sim.addressable_shards) == 8
  assert sim.addressable_shards[0].data.shape == (2, 16)      # rows sharded, all columns
  np.testing.assert_allclose(loss, loss_ref, rtol=1e-5)
  for key in meas_ref:
    np.testing.assert_allclose(meas[key], meas_ref[key], rtol=1e-5, atol=1e-6)
  flat, flat_ref = jax.tree.leaves(grads), jax.tree.leaves(grads_ref)
  assert len(flat) == len(flat_ref)
  for a, b in zip(flat, flat_ref):
    assert np.all(np.isfinite(np.asarray(a)))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  for key in ("word_emb", "patch_emb"):
    assert np.abs(np.asarray(grads[1][key])).max() > 0


def test_unsharded_when_batch_not_divisible_or_disabled():
  data = _inputs(b=12)
  head = LocalMatchingHead(mode="gloria", block_size=5)
  ref = head.apply({}, data["patch_emb"], data["word_emb"], data["word_mask"])
  mesh = parallel.make_mesh(8)
  with jax.set_mesh(mesh):   # 12 rows on 8 devices: falls back to the unsharded path
    got = jax.jit(lambda p, w, mk: head.apply({}, p, w, mk))(
        data["patch_emb"], data["word_emb"], data["word_mask"])
    off = LocalMatchingHead(mode="gloria", block_size=5, shard=False)
    jaxpr = str(jax.make_jaxpr(lambda p, w, mk: off.apply({}, p, w, mk))(
        data["patch_emb"], data["word_emb"], data["word_mask"]))
  np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  assert "shard_map" not in jaxpr
