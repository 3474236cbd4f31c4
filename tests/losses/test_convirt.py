"""ConVIRT against PyTorch (the paper's λ-weighted loss, and MGCA's released
`convirt_module.info_nce_loss`), and sharded == single device on 8 simulated CPU devices."""
import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asg_jax import losses, parallel

B, D = 16, 8


def _inputs(b=B, seed=0):
  rng = np.random.default_rng(seed)
  unit = lambda x: (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
  return unit(rng.normal(size=(b, D))), unit(rng.normal(size=(b, D)))


def torch_convirt(img, txt, temperature, lam):
  """Zhang et al. 2020: (1/N)·Σ_i λ·ℓ_i(v→u) + (1−λ)·ℓ_i(u→v)."""
  scores = img.mm(txt.t()) / temperature
  labels = torch.arange(img.size(0)).long()
  return (lam * F.cross_entropy(scores, labels)
          + (1 - lam) * F.cross_entropy(scores.t(), labels))


def torch_mgca_convirt(out_1, out_2, temperature=0.07):
  """MGCA's `ConVIRT.info_nce_loss`: the plain sum of the two directions."""
  labels = torch.arange(out_1.size(0)).long()
  scores = out_1.mm(out_2.t()) / temperature
  return (torch.nn.CrossEntropyLoss()(scores, labels)
          + torch.nn.CrossEntropyLoss()(scores.transpose(0, 1), labels))


def _torch_value_and_grads(fn, img, txt, *args):
  i = torch.tensor(img, requires_grad=True)
  t = torch.tensor(txt, requires_grad=True)
  loss = fn(i, t, *args)
  loss.backward()
  return loss.item(), i.grad.numpy(), t.grad.numpy()


@jax.jit
def _jax_programs(img, txt):
  paper = jax.value_and_grad(losses.convirt_loss, argnums=(0, 1))(img, txt, 0.1, 0.75)
  released = jax.value_and_grad(
      lambda i, t: losses.convirt_objective({"image_emb": i, "text_emb": t}, None,
                                            temperature=0.07, lam=0.5, scale=2.0)[0],
      argnums=(0, 1))(img, txt)
  swapped = losses.convirt_loss(txt, img)
  measurements = losses.convirt_objective({"image_emb": img, "text_emb": txt})[1]
  return paper, released, swapped, measurements


def test_equals_pytorch_paper_and_release():
  img, txt = _inputs()
  paper, released, swapped, m = _jax_programs(img, txt)
  for got, want in ((paper, _torch_value_and_grads(torch_convirt, img, txt, 0.1, 0.75)),
                    (released, _torch_value_and_grads(torch_mgca_convirt, img, txt))):
    assert abs(float(got[0]) - want[0]) <= 1e-5, (float(got[0]), want[0])
    for g, w in zip(got[1], want[1:]):
      assert np.abs(np.asarray(g) - w).max() <= 1e-5
  # the two directions are weighted differently: swapping image and text changes the loss
  assert abs(float(swapped) - float(paper[0])) > 1e-3
  assert set(m) >= {"loss", "i2t", "t2i", "top1", "top5"}
  np.testing.assert_allclose(m["loss"], 0.75 * m["i2t"] + 0.25 * m["t2i"], rtol=1e-6)


@pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")
def test_sharded_equals_single_device():
  """Global batch: values and gradients equal one device; per device: the mean of the
  local-batch losses (the released code under DDP); inside a caller's shard_map: global."""
  img, txt = _inputs(seed=1)
  grad = jax.value_and_grad(losses.convirt_loss, argnums=(0, 1))
  v0, g0 = jax.jit(grad)(img, txt)
  mesh = parallel.make_mesh()

  def program(i, t):
    per_device = losses.convirt_loss(i, t, global_batch=False)
    inside = jax.shard_map(losses.convirt_loss, in_specs=(jax.P("data"),) * 2,
                           out_specs=jax.P())(i, t)
    return grad(i, t), per_device, inside

  with jax.set_mesh(mesh):
    sh = parallel.batch_sharding(mesh)
    (v1, g1), per_device, inside = jax.jit(program)(jax.device_put(img, sh),
                                                    jax.device_put(txt, sh))
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  np.testing.assert_allclose(inside, v0, rtol=1e-5)
  for a, b in zip(g1, g0):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  blocks = [torch_convirt(torch.tensor(img[s]), torch.tensor(txt[s]), 0.1, 0.75).item()
            for s in (slice(2 * d, 2 * d + 2) for d in range(8))]
  np.testing.assert_allclose(per_device, np.mean(blocks), rtol=1e-5)
  np.testing.assert_allclose(v0, torch_convirt(torch.tensor(img), torch.tensor(txt), 0.1,
                                               0.75).item(), rtol=1e-5)
