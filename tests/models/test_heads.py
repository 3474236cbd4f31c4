"""ProjectionHead: unit-norm outputs, masked BatchNorm statistics vs NumPy, padding
invariance, equality with the PyTorch MGCA head, global-batch statistics when sharded."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from asg_jax.models.heads import ProjectionHead

KEY = jax.random.key(0, impl="rbg")
HEAD = ProjectionHead(hidden=16, out=8)


@pytest.fixture(scope="module")
def variables():
  x = jnp.zeros((2, 3, 12))
  return jax.jit(lambda x: HEAD.init(KEY, x, train=False))(x)


_train = jax.jit(lambda v, x, m: HEAD.apply(v, x, train=True, mask=m, mutable=["batch_stats"]))
_eval = jax.jit(lambda v, x: HEAD.apply(v, x, train=False))


def _np_head(p, stats, x, valid, train):
  """NumPy forward; BatchNorm statistics over the rows of x[valid] in train mode."""
  def bn(h, name, affine):
    if train:
      mean, var = h[valid].mean(0), h[valid].var(0)
    else:
      mean, var = np.asarray(stats[name]["mean"]), np.asarray(stats[name]["var"])
    y = (h - mean) / np.sqrt(var + 1e-5)
    if affine:
      y = y * np.asarray(p[name]["scale"]) + np.asarray(p[name]["bias"])
    return y, mean, var
  h = x @ np.asarray(p["dense_0"]["kernel"]) + np.asarray(p["dense_0"]["bias"])
  h, m0, v0 = bn(h, "bn_0", True)
  h = np.maximum(h, 0) @ np.asarray(p["dense_1"]["kernel"]) + np.asarray(p["dense_1"]["bias"])
  h, m1, v1 = bn(h, "bn_1", False)
  return h / np.linalg.norm(h, axis=-1, keepdims=True), (m0, v0, m1, v1)


def test_parameters_and_unit_norm(variables):
  p = variables["params"]
  # the last BatchNorm has no affine parameters, only statistics
  assert set(p) == {"dense_0", "bn_0", "dense_1"}
  assert set(variables["batch_stats"]) == {"bn_0", "bn_1"}
  assert p["dense_0"]["kernel"].shape == (12, 16) and p["dense_1"]["kernel"].shape == (16, 8)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 12)), jnp.float32)
  for out in (_train(variables, x, None)[0], _eval(variables, x)):
    assert out.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=1e-5)


def test_masked_batch_statistics_match_numpy(variables):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(3, 5, 12)).astype(np.float32)
  valid = np.array([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]], bool)
  out, upd = _train(variables, jnp.asarray(x), jnp.asarray(valid))
  ref, (m0, v0, m1, v1) = _np_head(variables["params"], None, x.astype(np.float64), valid, True)
  np.testing.assert_allclose(np.asarray(out)[valid], ref[valid], atol=1e-4)
  s = upd["batch_stats"]
  # torch momentum 0.1: running = 0.9 * running + 0.1 * batch, from (0, 1)
  np.testing.assert_allclose(s["bn_0"]["mean"], 0.1 * m0, atol=1e-5)
  np.testing.assert_allclose(s["bn_0"]["var"], 0.9 + 0.1 * v0, atol=1e-5)
  np.testing.assert_allclose(s["bn_1"]["mean"], 0.1 * m1, atol=1e-5)
  np.testing.assert_allclose(s["bn_1"]["var"], 0.9 + 0.1 * v1, atol=1e-5)
  # eval mode uses the running statistics
  v2 = {"params": variables["params"], "batch_stats": s}
  ref_eval, _ = _np_head(variables["params"], s, x.astype(np.float64), valid, False)
  np.testing.assert_allclose(_eval(v2, jnp.asarray(x)), ref_eval, atol=1e-4)


def test_padding_never_changes_valid_outputs_in_train_mode(variables):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(2, 6, 12)).astype(np.float32)
  valid = np.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]], bool)
  x2 = x.copy()
  x2[~valid] = rng.normal(size=((~valid).sum(), 12)) * 100
  a, sa = _train(variables, jnp.asarray(x), jnp.asarray(valid))
  b, sb = _train(variables, jnp.asarray(x2), jnp.asarray(valid))
  np.testing.assert_allclose(np.asarray(a)[valid], np.asarray(b)[valid], atol=1e-5)
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, atol=1e-5), sa, sb)
  # without the mask, padding does change them (the mask is what protects them)
  c, _ = _train(variables, jnp.asarray(x2), None)
  assert not np.allclose(np.asarray(c)[valid], np.asarray(a)[valid], atol=1e-3)
  with pytest.raises(ValueError, match="mask"):
    HEAD.apply(variables, jnp.asarray(x), train=False, mask=jnp.ones((2, 5), bool))


def test_matches_torch_mgca_global_head(variables):
  torch = pytest.importorskip("torch", reason="torch (the test extra) is the parity oracle")
  p = variables["params"]
  head = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.BatchNorm1d(16),
                             torch.nn.ReLU(inplace=True), torch.nn.Linear(16, 8),
                             torch.nn.BatchNorm1d(8, affine=False))
  with torch.no_grad():
    head[0].weight.copy_(torch.tensor(np.asarray(p["dense_0"]["kernel"]).T))
    head[0].bias.copy_(torch.tensor(np.asarray(p["dense_0"]["bias"])))
    head[1].weight.copy_(torch.tensor(np.asarray(p["bn_0"]["scale"])) + 0.5)
    head[1].bias.copy_(torch.tensor(np.asarray(p["bn_0"]["bias"])) + 0.1)
    head[3].weight.copy_(torch.tensor(np.asarray(p["dense_1"]["kernel"]).T))
    head[3].bias.copy_(torch.tensor(np.asarray(p["dense_1"]["bias"])))
  params = jax.tree.map(lambda a: a, p)
  params["bn_0"] = {"scale": p["bn_0"]["scale"] + 0.5, "bias": p["bn_0"]["bias"] + 0.1}
  v = {"params": params, "batch_stats": variables["batch_stats"]}
  x = np.random.default_rng(3).normal(size=(6, 12)).astype(np.float32)
  head.train()
  ref = torch.nn.functional.normalize(head(torch.from_numpy(x)), dim=-1).detach().numpy()
  out, upd = _train(v, jnp.asarray(x), None)
  np.testing.assert_allclose(out, ref, atol=1e-5)
  np.testing.assert_allclose(upd["batch_stats"]["bn_0"]["mean"], head[1].running_mean.numpy(),
                             atol=1e-6)


def test_sharded_batch_gives_global_statistics(variables):
  devices = np.array(jax.devices())
  if len(devices) < 2:
    pytest.skip("needs several (simulated) devices; tests/conftest.py sets 8")
  mesh = Mesh(devices, ("data",))
  n = len(devices)
  rng = np.random.default_rng(4)
  x = rng.normal(size=(n, 3, 12)).astype(np.float32) + np.arange(n)[:, None, None]
  valid = rng.random((n, 3)) < 0.7
  valid[:, 0] = True
  xs = jax.device_put(jnp.asarray(x), NamedSharding(mesh, P("data")))
  ms = jax.device_put(jnp.asarray(valid), NamedSharding(mesh, P("data")))
  out, upd = _train(variables, xs, ms)
  ref, (m0, _, _, _) = _np_head(variables["params"], None, x.astype(np.float64), valid, True)
  np.testing.assert_allclose(np.asarray(out)[valid], ref[valid], atol=1e-4)
  np.testing.assert_allclose(upd["batch_stats"]["bn_0"]["mean"], 0.1 * m0, atol=1e-5)


def test_biases_before_batchnorm_get_exactly_zero_gradient_in_train_mode(variables):
  x = jnp.asarray(np.random.default_rng(5).normal(size=(5, 12)), jnp.float32)
  t = jnp.asarray(np.random.default_rng(6).normal(size=(5, 8)), jnp.float32)

  def loss(p, train):
    out = HEAD.apply({"params": p, "batch_stats": variables["batch_stats"]}, x, train=train,
                     mutable=["batch_stats"])[0]
    return jnp.sum((out - t) ** 2)

  g = jax.jit(jax.grad(loss), static_argnums=1)(variables["params"], True)
  assert np.all(np.asarray(g["dense_0"]["bias"]) == 0)
  assert np.all(np.asarray(g["dense_1"]["bias"]) == 0)
  assert np.any(np.asarray(g["dense_0"]["kernel"]) != 0)
  # the true gradient is zero: a finite difference on the bias does not move the loss
  p2 = jax.tree.map(lambda a: a, variables["params"])
  p2["dense_0"] = dict(p2["dense_0"], bias=p2["dense_0"]["bias"] + 0.5)
  np.testing.assert_allclose(loss(p2, True), loss(variables["params"], True), rtol=1e-5)
  # eval mode (running statistics) keeps the ordinary bias gradient
  g_eval = jax.grad(loss)(variables["params"], False)
  assert np.any(np.asarray(g_eval["dense_0"]["bias"]) != 0)
