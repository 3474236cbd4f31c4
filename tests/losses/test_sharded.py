"""Global-batch IRA / ERL (and the total) on 8 simulated CPU devices (tests/conftest.py):
values AND gradients equal the single-device ones; the per-device option is the released
code's local-batch loss; per-device compiled memory is a fraction of the dense one."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import losses, parallel
from tests.losses.reference import fake_batch, np_ira, np_soft, random_inputs

pytestmark = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


def _terms(img, txt, tags):
  out = losses.contrastive_terms(img, txt, tags, ira=True, soft=True, retrieval=True)
  return out["ira"] + out["soft"], out


def _value_and_grads(fn, args, mesh=None):
  f = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))
  if mesh is None:
    return f(*args)
  with jax.set_mesh(mesh):
    sharded = [jax.device_put(a, parallel.batch_sharding(mesh)) for a in args]
    return f(*sharded)


@pytest.mark.parametrize("b", [24])
def test_sharded_losses_and_gradients_equal_single_device(b):
  args = random_inputs(b, seed=b)
  (v0, d0), g0 = _value_and_grads(_terms, args)
  (v1, d1), g1 = _value_and_grads(_terms, args, parallel.make_mesh())
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  for k in d0:
    np.testing.assert_allclose(d1[k], d0[k], rtol=1e-5, atol=1e-6, err_msg=k)
  np.testing.assert_allclose(d1["ira"], np_ira(*args[:2]), rtol=2e-5)
  np.testing.assert_allclose(d1["soft"], np_soft(*args), rtol=2e-5)
  for a, c in zip(g0, g1):
    np.testing.assert_allclose(c, a, rtol=1e-4, atol=1e-6)


def test_public_functions_under_a_mesh():
  img, txt, tags = random_inputs(16, seed=3)
  mesh = parallel.make_mesh()
  with jax.set_mesh(mesh):
    sh = parallel.batch_sharding(mesh)
    img_s, txt_s, tags_s = (jax.device_put(a, sh) for a in (img, txt, tags))
    ira = jax.jit(losses.ira_loss)(img_s, txt_s)
    soft = jax.jit(losses.soft_label_loss)(img_s, txt_s, tags_s)
    # replicated (unsharded) inputs under the mesh give the same global value too
    ira_rep = jax.jit(losses.ira_loss)(img, txt)
  np.testing.assert_allclose(ira, np_ira(img, txt), rtol=2e-5)
  np.testing.assert_allclose(ira_rep, np_ira(img, txt), rtol=2e-5)
  np.testing.assert_allclose(soft, np_soft(img, txt, tags), rtol=2e-5)


def test_per_device_option_is_the_local_batch_loss():
  img, txt, tags = random_inputs(16, seed=4)
  mesh = parallel.make_mesh()
  with jax.set_mesh(mesh):
    sh = parallel.batch_sharding(mesh)
    args = [jax.device_put(a, sh) for a in (img, txt, tags)]
    ira = jax.jit(lambda i, t: losses.ira_loss(i, t, global_batch=False))(*args[:2])
    soft = jax.jit(lambda i, t, y: losses.soft_label_loss(i, t, y, global_batch=False))(*args)
  blocks = [slice(2 * d, 2 * d + 2) for d in range(8)]
  np.testing.assert_allclose(ira, np.mean([np_ira(img[s], txt[s]) for s in blocks]), rtol=2e-5)
  np.testing.assert_allclose(soft, np.mean([np_soft(img[s], txt[s], tags[s]) for s in blocks]),
                             rtol=2e-5, atol=1e-6)


def test_one_device_mesh_and_indivisible_batch_fall_back_to_dense():
  img, txt, _ = random_inputs(12, seed=5)
  want = np_ira(img, txt)
  with jax.set_mesh(parallel.make_mesh(1)):
    np.testing.assert_allclose(jax.jit(losses.ira_loss)(img, txt), want, rtol=2e-5)
  with jax.set_mesh(parallel.make_mesh()):                # 12 rows on 8 devices
    np.testing.assert_allclose(jax.jit(losses.ira_loss)(img, txt), want, rtol=2e-5)


def test_inside_a_user_shard_map():
  img, txt, _ = random_inputs(16, seed=6)
  mesh = parallel.make_mesh()
  with jax.set_mesh(mesh):
    f = jax.jit(jax.shard_map(losses.ira_loss, in_specs=(jax.P("data"), jax.P("data")),
                              out_specs=jax.P()))
    got = f(img, txt)
  np.testing.assert_allclose(got, np_ira(img, txt), rtol=2e-5)


def test_asg_objective_sharded_equals_single_device():
  outputs, batch = fake_batch(b=16, seed=7)
  keys = ("image_emb", "text_emb", "patch_emb", "word_emb", "tag_logits")

  def f(diff, batch):
    return losses.asg_objective({**outputs, **diff}, batch, grid=(4, 4), input_size=64)

  diff = {k: outputs[k] for k in keys}
  step = jax.jit(jax.value_and_grad(f, has_aux=True))
  (l0, m0), g0 = step(diff, batch)
  mesh = parallel.make_mesh()
  with jax.set_mesh(mesh):
    sh = parallel.batch_sharding(mesh)
    (l1, m1), g1 = step(jax.device_put(diff, sh), jax.device_put(batch, sh))
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for k in m0:
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, atol=1e-6, err_msg=k)
  for k in keys:
    np.testing.assert_allclose(g1[k], g0[k], rtol=1e-4, atol=1e-6, err_msg=k)


def _temp_bytes(fn, b, d, mesh=None):
  if mesh is None:
    x = jax.ShapeDtypeStruct((b, d), jnp.float32)
    return jax.jit(fn).lower(x, x).compile().memory_analysis().temp_size_in_bytes
  with jax.set_mesh(mesh):
    x = jax.ShapeDtypeStruct((b, d), jnp.float32, sharding=parallel.batch_sharding(mesh))
    return jax.jit(fn).lower(x, x).compile().memory_analysis().temp_size_in_bytes


def test_sharded_ira_memory_is_a_fraction_of_dense():
  """B = 8192, D = 128: per-device temp memory of the sharded loss (and of its gradient) is
  ≤ 1/4 of the single-device one (the dense B×B is 256 MiB)."""
  b, d = 8192, 128
  mesh = parallel.make_mesh()
  for fn in (losses.ira_loss, jax.value_and_grad(losses.ira_loss, argnums=(0, 1))):
    dense = _temp_bytes(fn, b, d)
    sharded = _temp_bytes(fn, b, d, mesh)
    assert dense >= b * b * 4, dense                     # sanity: the dense one holds B×B
    assert sharded <= dense / 4, (sharded, dense)
