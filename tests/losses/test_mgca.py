"""MGCA losses against a PyTorch re-creation of the released `mgca/models/mgca/mgca_module.py`
(HKU-MedAI/MGCA: `MGCA.forward`, `sinkhorn`), hand-derived percentile clips, and sharded ==
single device on the 8 simulated CPU devices of tests/conftest.py."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from asg_jax import losses, parallel
from asg_jax.losses import mgca

B, W, P, H, D, K = 6, 9, 16, 3, 8, 20
LENGTHS = [9, 5, 2, 7, 3, 6]       # real words per report (the rest is padding)


def _unit(x):
  return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_inputs(b=B, seed=0, lengths=LENGTHS):
  rng = np.random.default_rng(seed)
  lengths = np.resize(np.asarray(lengths), b)
  mask = np.arange(W)[None] < lengths[:, None]
  attn = np.where(mask, rng.uniform(0.01, 1.0, (b, W)), 0.0).astype(np.float32)
  attn[1, lengths[1] - 1] = 0.0    # a real word with zero attention (the release's [SEP])
  img_map = rng.dirichlet(np.ones(1 + P), size=(b, H, 1 + P)).astype(np.float32)
  return {
      # padded word slots are NOT zero: the release's padding goes through the local
      # embedding (BatchNorm bias) and is then normalised
      "word_emb": _unit(rng.normal(size=(b, W, D))),
      "patch_emb": _unit(rng.normal(size=(b, P, D))),
      "image_emb": _unit(rng.normal(size=(b, D))),
      "text_emb": _unit(rng.normal(size=(b, D))),
      "prototypes": rng.normal(size=(K, D)).astype(np.float32),   # raw, not normalised
      "word_mask": mask, "word_importance": attn,
      "patch_importance": img_map[:, :, 0, 1:], "image_attention_map": img_map,
  }


# ------------------------------------------------- PyTorch re-creation of the release


def _t(x, grad=False):
  return torch.tensor(np.asarray(x), requires_grad=grad)


def torch_word_weights(word_attn_q):
  with torch.no_grad():
    atten_weights = word_attn_q.detach().clone()
    out = []
    for i in range(atten_weights.size(0)):
      atten_weight = atten_weights[i]
      nonzero = atten_weight.nonzero().squeeze()
      low = torch.quantile(atten_weight[nonzero], 0.1)
      high = torch.quantile(atten_weight[nonzero], 0.9)
      atten_weight[nonzero] = atten_weight[nonzero].clip(low, high)
      out.append(atten_weight.clone())
    out = torch.stack(out)
  return out / out.sum(dim=1, keepdims=True)


def torch_patch_weights(img_attn_map):
  with torch.no_grad():
    atten_weights = img_attn_map[:, :, 0, 1:].mean(dim=1)
    out = []
    for i in range(atten_weights.size(0)):
      w = atten_weights[i]
      out.append(w.clip(torch.quantile(w, 0.1), torch.quantile(w, 0.9)).clone())
    out = torch.stack(out)
  return out / out.sum(dim=1, keepdims=True)


def _weighted_ce_both_ways(sim, weights):
  bz, n = sim.shape[:2]
  targets = torch.arange(n).long().repeat(bz)
  l1 = torch.sum(F.cross_entropy(sim.reshape(bz * n, n), targets, reduction="none")
                 * weights.reshape(-1)) / bz                       # "b n1 n2 -> (b n1) n2"
  l2 = torch.sum(F.cross_entropy(sim.permute(0, 2, 1).reshape(bz * n, n), targets,
                                 reduction="none") * weights.reshape(-1)) / bz
  return (l1 + l2) / 2.0


def torch_local(word_emb, patch_emb, word_attn_q, pad_mask, img_attn_map, t=0.1):
  """MGCA.forward's token-level part (use_local_atten False, bidirectional True);
  `img_attn_map` None: the CNN ("resnet") path."""
  bz = word_emb.size(0)
  atten_scores = F.softmax(torch.bmm(word_emb, patch_emb.permute(0, 2, 1)) / t, dim=-1)
  word_atten_output = F.normalize(torch.bmm(atten_scores, patch_emb), dim=-1)
  word_sim = torch.bmm(word_emb, word_atten_output.permute(0, 2, 1)) / t
  loss_word = _weighted_ce_both_ways(word_sim, torch_word_weights(word_attn_q))

  atten_sim = torch.bmm(patch_emb, word_emb.permute(0, 2, 1))
  patch_num = patch_emb.size(1)
  atten_sim[pad_mask.unsqueeze(1).repeat(1, patch_num, 1)] = float("-inf")
  atten_scores = F.softmax(atten_sim / t, dim=-1)
  patch_atten_output = torch.bmm(atten_scores, word_emb)
  if img_attn_map is None:
    patch_atten_output = F.normalize(patch_atten_output, dim=-1)
    patch_atten_weights = torch.ones(bz, patch_num) / patch_num
  else:
    patch_atten_weights = torch_patch_weights(img_attn_map)
  patch_sim = torch.bmm(patch_emb, patch_atten_output.permute(0, 2, 1)) / t
  return loss_word + _weighted_ce_both_ways(patch_sim, patch_atten_weights)


def torch_sinkhorn(q, nmb_iters):
  with torch.no_grad():
    q = q / torch.sum(q)
    k, b = q.shape
    r, c = torch.ones(k) / k, torch.ones(b) / b
    for _ in range(nmb_iters):
      u = torch.sum(q, dim=1)
      q *= (r / u).unsqueeze(1)
      q *= (c / torch.sum(q, dim=0)).unsqueeze(0)
    return (q / torch.sum(q, dim=0, keepdim=True)).t().float()


def torch_proto(img_emb, report_emb, weight, eps=0.05, t=0.2, iters=3):
  with torch.no_grad():                     # the release's per-step renormalisation
    weight.copy_(F.normalize(weight.data.clone(), dim=1, p=2))
  img_out, rep_out = img_emb @ weight.t(), report_emb @ weight.t()
  with torch.no_grad():
    img_code = torch_sinkhorn(torch.exp(img_out / eps).t(), iters)
    rep_code = torch_sinkhorn(torch.exp(rep_out / eps).t(), iters)
  img_prob, rep_prob = F.softmax(img_out / t, dim=1), F.softmax(rep_out / t, dim=1)
  i2t = -torch.mean(torch.sum(img_code * torch.log(rep_prob), dim=1))
  t2i = -torch.mean(torch.sum(rep_code * torch.log(img_prob), dim=1))
  return (i2t + t2i) / 2.0


def torch_ita(img_emb, report_emb, t=0.07):
  scores = img_emb.mm(report_emb.t()) / t
  labels = torch.arange(img_emb.size(0)).long()
  return F.cross_entropy(scores, labels) + F.cross_entropy(scores.transpose(0, 1), labels)


def torch_reference(x):
  """Values and gradients (w.r.t. the embeddings and the raw prototypes) of the release."""
  out = {}
  for name, vit in (("vit", True), ("cnn", False)):
    w, p = _t(x["word_emb"], True), _t(x["patch_emb"], True)
    loss = torch_local(w, p, _t(x["word_importance"]), _t(~x["word_mask"]),
                       _t(x["image_attention_map"]) if vit else None)
    loss.backward()
    out[name] = (loss.item(), w.grad.numpy(), p.grad.numpy())
  i, r, c = _t(x["image_emb"], True), _t(x["text_emb"], True), _t(x["prototypes"], True)
  loss = torch_proto(i, r, c)
  loss.backward()
  out["proto"] = (loss.item(), i.grad.numpy(), r.grad.numpy(), c.grad.numpy())
  i, r = _t(x["image_emb"], True), _t(x["text_emb"], True)
  loss = torch_ita(i, r)
  loss.backward()
  out["ita"] = (loss.item(), i.grad.numpy(), r.grad.numpy())
  out["word_weights"] = torch_word_weights(_t(x["word_importance"])).numpy()
  out["patch_weights"] = torch_patch_weights(_t(x["image_attention_map"])).numpy()
  with torch.no_grad():
    c = F.normalize(_t(x["prototypes"]), dim=1)
    out["codes"] = torch_sinkhorn(torch.exp(_t(x["image_emb"]) @ c.t() / 0.05).t(), 3).numpy()
  return out


@jax.jit
def jax_all(x):
  word_w = losses.mgca_word_weights(x["word_importance"], x["word_mask"])
  patch_w = losses.mgca_patch_weights(x["patch_importance"])      # [B, H, P]: head mean

  def local(w, p, pw):
    return losses.mgca_local_loss(w, p, word_w, x["word_mask"], pw, 0.1)

  out = {"word_weights": word_w, "patch_weights": patch_w}
  out["vit"] = jax.value_and_grad(local, argnums=(0, 1))(x["word_emb"], x["patch_emb"], patch_w)
  out["cnn"] = jax.value_and_grad(local, argnums=(0, 1))(x["word_emb"], x["patch_emb"], None)
  out["proto"] = jax.value_and_grad(losses.mgca_prototype_loss, argnums=(0, 1, 2))(
      x["image_emb"], x["text_emb"], x["prototypes"], 0.05, 0.2, 3)
  out["ita"] = jax.value_and_grad(losses.ira_loss, argnums=(0, 1))(x["image_emb"], x["text_emb"])
  out["codes"] = losses.sinkhorn_knopp(
      x["image_emb"] @ mgca._normalised_prototypes(x["prototypes"]).T, 0.05, 3)
  # padded words moved (they stay candidates of the word-level CE, as released) and a
  # batch without any real word (masked attention logits are finite: no NaN)
  mask = x["word_mask"][..., None]
  out["moved"] = local(jnp.where(mask, x["word_emb"], x["word_emb"][:, ::-1]), x["patch_emb"],
                       None)
  out["no_words"] = losses.mgca_local_loss(x["word_emb"], x["patch_emb"], word_w * 0,
                                           jnp.zeros_like(x["word_mask"]), None, 0.1)
  return out


def max_differences(x):
  """{term: max |JAX − PyTorch|} over the value and every gradient (also used for the report)."""
  ref, got = torch_reference(x), jax_all(x)
  diffs = {}
  for k in ("vit", "cnn", "proto", "ita"):
    value, grads = got[k]
    diffs[k] = abs(float(value) - ref[k][0])
    diffs[k + "_grad"] = max(float(np.abs(np.asarray(g) - r).max())
                             for g, r in zip(grads, ref[k][1:]))
  for k in ("word_weights", "patch_weights", "codes"):
    diffs[k] = float(np.abs(np.asarray(got[k]) - ref[k]).max())
  return diffs, ref, got


def test_equals_the_released_pytorch_code():
  x = random_inputs()
  diffs, ref, got = max_differences(x)
  assert all(d <= 1e-5 for d in diffs.values()), diffs
  # the two paths differ (the unnormalised ViT context), the inputs were not degenerate
  assert abs(ref["vit"][0] - ref["cnn"][0]) > 1e-2
  assert all(np.abs(g).max() > 1e-3 for g in ref["proto"][1:] + ref["vit"][1:])
  np.testing.assert_allclose(np.asarray(got["codes"]).sum(1), 1.0, rtol=1e-5)
  assert abs(float(got["moved"]) - float(got["cnn"][0])) > 1e-4
  assert np.isfinite(float(got["no_words"]))


def test_clip_hand_derived():
  # 5 real words 0.3, 0.1, 1.0, 0.2, 0.4: sorted 0.1 0.2 0.3 0.4 1.0; q0.1 at rank 0.4 →
  # 0.1 + 0.4·0.1 = 0.14; q0.9 at rank 3.6 → 0.4 + 0.6·0.6 = 0.76; clipped sum 1.8.
  attn = np.array([[0.3, 0.1, 1.0, 0.2, 0.4, 0.0, 0.0],
                   [0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # one real word
                   [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],      # none
                   [0.3, 0.0, 1.0, 0.2, 0.4, 0.1, 9.0]],     # 0 at a real slot; 9 is padding
                  np.float32)
  mask = np.array([[1] * 5 + [0] * 2, [1] + [0] * 6, [0] * 7, [1] * 6 + [0]], bool)
  # patches 5|3 1 3 2 (two heads, averaged first: 4 1 3 2): q0.1 at rank 0.3 → 1.3,
  # q0.9 at rank 2.7 → 3.7
  heads = np.array([[[5, 1, 3, 2], [3, 1, 3, 2]]], np.float32)
  # the interpolation is torch.quantile's (= NumPy's "linear") over the masked entries
  x = np.random.default_rng(1).normal(size=(3, 11)).astype(np.float32)
  m = np.arange(11)[None] < np.array([[11], [4], [7]])
  words, patches, quantiles = jax.jit(lambda a, k, h, x, m: (
      losses.mgca_word_weights(a, k), losses.mgca_patch_weights(h),
      mgca.masked_quantile(x, m, 0.9)))(attn, mask, heads, x, m)
  got = np.asarray(words)
  first = np.array([0.3, 0.14, 0.76, 0.2, 0.4, 0, 0]) / 1.8
  np.testing.assert_allclose(got[0], first, atol=1e-7)
  np.testing.assert_allclose(got[1], [1, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(got[2], 0.0)
  np.testing.assert_allclose(got[3], [first[0], 0, *first[2:5], first[1], 0], atol=1e-7)
  np.testing.assert_allclose(patches[0], np.array([3.7, 1.3, 3, 2]) / 10, atol=1e-7)
  np.testing.assert_allclose(quantiles, [np.quantile(r[k], 0.9) for r, k in zip(x, m)],
                             rtol=1e-6)


# ---------------------------------------------------------------- 8 simulated devices

sharded = pytest.mark.skipif(jax.device_count() < 8, reason="needs 8 (simulated) devices")


def _objective_and_grads(diff, rest):
  return jax.value_and_grad(lambda d: losses.mgca_objective({**rest, **d}), has_aux=True)(diff)


def _sharded_program(diff, rest):
  """The objective, the per-device prototype loss and Sinkhorn inside a user's shard_map."""
  out = _objective_and_grads(diff, rest)
  per_device = losses.mgca_prototype_loss(diff["image_emb"], diff["text_emb"],
                                          diff["prototypes"], global_batch=False)
  scores = diff["image_emb"] @ mgca._normalised_prototypes(diff["prototypes"]).T
  codes = jax.shard_map(losses.sinkhorn_knopp, in_specs=jax.P("data"),
                        out_specs=jax.P("data"))(scores)
  return out, per_device, codes


@sharded
def test_sharded_equals_single_device():
  """ITA, the local term and the prototype term (Sinkhorn sums over the global batch): values
  and gradients; the per-device option is the release as run (its `sinkhorn` on each GPU's
  batch, averaged); Sinkhorn inside a caller's shard_map all-reduces its sums."""
  x = random_inputs(b=16, seed=2)
  diff = {k: x[k] for k in ("image_emb", "text_emb", "word_emb", "patch_emb", "prototypes")}
  rest = {k: x[k] for k in ("word_mask", "word_importance", "patch_importance")}
  (l0, m0), g0 = jax.jit(_objective_and_grads)(diff, rest)
  mesh = parallel.make_mesh()
  with jax.set_mesh(mesh):
    sh, rep = parallel.batch_sharding(mesh), parallel.replicated(mesh)
    diff_s = {k: jax.device_put(v, rep if k == "prototypes" else sh) for k, v in diff.items()}
    ((l1, m1), g1), per_device, codes = jax.jit(_sharded_program)(
        diff_s, jax.device_put(rest, sh))
  assert set(m0) >= {"loss", "ita", "local", "local_word", "local_patch", "proto", "top1"}
  np.testing.assert_allclose(l1, l0, rtol=1e-5)
  for k in m0:
    np.testing.assert_allclose(m1[k], m0[k], rtol=1e-5, atol=1e-6, err_msg=k)
  np.testing.assert_allclose(
      l0, m0["ita"] + 0.7 * (m0["local_word"] + m0["local_patch"]) + 0.5 * m0["proto"],
      rtol=1e-6)
  for k in g0:
    np.testing.assert_allclose(g1[k], g0[k], rtol=1e-4, atol=1e-6, err_msg=k)

  img, txt, protos = x["image_emb"], x["text_emb"], x["prototypes"]
  np.testing.assert_allclose(m0["proto"], torch_proto(_t(img), _t(txt), _t(protos)).item(),
                             rtol=1e-5)
  blocks = [torch_proto(_t(img[s]), _t(txt[s]), _t(protos)).item()
            for s in (slice(2 * d, 2 * d + 2) for d in range(8))]
  np.testing.assert_allclose(per_device, np.mean(blocks), rtol=1e-5)
  assert abs(float(per_device) - float(m0["proto"])) > 1e-3      # the two options differ
  c = F.normalize(_t(protos), dim=1)
  want = torch_sinkhorn(torch.exp(_t(img) @ c.t() / 0.05).t(), 3).numpy()
  np.testing.assert_allclose(codes, want, atol=1e-6)
