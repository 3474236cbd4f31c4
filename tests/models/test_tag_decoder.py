"""IRL TagDecoder: shapes, parameters, init, dropout, and equality with PyTorch's pre-norm
`nn.TransformerDecoder` carrying the same weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.models.tag_decoder import TagDecoder, tag_queries

SMALL = dict(num_layers=2, d_model=16, num_heads=4, mlp_dim=24, dropout=0.1)


def _init(model, patches, queries):
  init = jax.jit(lambda p, q: model.init({"params": jax.random.key(0)}, p, q, train=False))
  return init(patches, queries)["params"]


def _apply(model):
  """Jitted `model.apply` (eager Flax op-by-op dispatch is slow on a shared CPU)."""
  return jax.jit(model.apply, static_argnames=("train",))


def _inputs(b=3, m=6, dv=16, t=5, dq=16, seed=0):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=(b, m, dv)).astype(np.float32),
          rng.normal(size=(t, dq)).astype(np.float32))


def test_shapes_params_and_init():
  patches, queries = _inputs()
  model = TagDecoder(**SMALL)
  params = _init(model, patches, queries)
  logits = _apply(model)({"params": params}, patches, queries, train=False)
  assert logits.shape == (3, 5) and logits.dtype == jnp.float32
  # queries are constants, not parameters; no projections when the widths match
  assert set(params) == {"layer0", "layer1", "final_norm", "head_kernel", "head_bias"}
  # one Linear(d, 1) per query
  assert params["head_kernel"].shape == (5, 16) and params["head_bias"].shape == (5,)
  assert set(params["layer0"]) == {"norm1", "norm2", "norm3", "self_attn", "cross_attn",
                                   "linear1", "linear2"}
  big = _init(TagDecoder(num_layers=1), *_inputs(b=1, m=4, dv=768, t=40, dq=768))
  kernels = np.concatenate([np.ravel(big["layer0"]["linear1"]["kernel"]),
                            np.ravel(big["layer0"]["self_attn"]["query"]["kernel"]),
                            np.ravel(big["head_kernel"])])
  assert abs(kernels.std() - 0.02) < 1e-3 and abs(kernels.mean()) < 1e-3


def test_width_projections_when_dims_differ():
  patches, queries = _inputs(dv=10, dq=7)
  model = TagDecoder(**SMALL)
  params = _init(model, patches, queries)
  assert params["memory_proj"]["kernel"].shape == (10, 16)
  assert params["query_proj"]["kernel"].shape == (7, 16)
  assert _apply(model)({"params": params}, patches, queries).shape == (3, 5)


def test_dropout_only_in_training_and_no_gradient_to_queries():
  patches, queries = _inputs()
  model = TagDecoder(**SMALL)
  params = _init(model, patches, queries)
  apply = _apply(model)
  a = apply({"params": params}, patches, queries, train=False)
  b = apply({"params": params}, patches, queries, train=False)
  np.testing.assert_array_equal(a, b)
  c = apply({"params": params}, patches, queries, train=True,
            rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(a, c)

  def loss(p, q):
    return model.apply({"params": p}, patches, q, train=False).sum()

  gp, gq = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, queries)
  assert np.all(np.asarray(gq) == 0)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(gp))
  assert np.any(np.asarray(gp["layer0"]["cross_attn"]["query"]["kernel"]) != 0)


def test_batch_elements_are_independent():
  patches, queries = _inputs(b=4)
  model = TagDecoder(**SMALL)
  params = _init(model, patches, queries)
  full = _apply(model)({"params": params}, patches, queries)
  one = _apply(model)({"params": params}, patches[2:3], queries)
  np.testing.assert_allclose(full[2:3], one, rtol=1e-5, atol=1e-6)


def test_equals_pytorch_pre_norm_decoder():
  torch = pytest.importorskip("torch")
  nn = torch.nn
  d, h, f, layers = SMALL["d_model"], SMALL["num_heads"], SMALL["mlp_dim"], SMALL["num_layers"]
  patches, queries = _inputs(b=2, m=7, t=5)
  torch.manual_seed(0)
  layer = nn.TransformerDecoderLayer(d, h, f, dropout=0.0, activation="relu", batch_first=True,
                                     norm_first=True)
  dec = nn.TransformerDecoder(layer, layers, norm=nn.LayerNorm(d)).eval()
  with torch.no_grad():
    for p in dec.parameters():                     # non-trivial norms and biases too
      p.add_(0.1 * torch.randn_like(p))
  head_w = torch.randn(5, d) * 0.3
  head_b = torch.randn(5)
  with torch.no_grad():
    tgt = torch.from_numpy(queries)[None].expand(2, -1, -1)
    out = dec(tgt, torch.from_numpy(patches))
    want = ((out * head_w[None]).sum(-1) + head_b).numpy()

  def t(x):
    return x.detach().numpy().astype(np.float32)

  def mha(m):
    w_q, w_k, w_v = t(m.in_proj_weight).reshape(3, d, d)
    b_q, b_k, b_v = t(m.in_proj_bias).reshape(3, d)
    proj = lambda w, b: {"kernel": w.T.reshape(d, h, d // h), "bias": b.reshape(h, d // h)}
    return {"query": proj(w_q, b_q), "key": proj(w_k, b_k), "value": proj(w_v, b_v),
            "out": {"kernel": t(m.out_proj.weight).T.reshape(h, d // h, d),
                    "bias": t(m.out_proj.bias)}}

  def ln(m):
    return {"scale": t(m.weight), "bias": t(m.bias)}

  def dense(m):
    return {"kernel": t(m.weight).T, "bias": t(m.bias)}

  params = {f"layer{i}": {"norm1": ln(l.norm1), "norm2": ln(l.norm2), "norm3": ln(l.norm3),
                          "self_attn": mha(l.self_attn), "cross_attn": mha(l.multihead_attn),
                          "linear1": dense(l.linear1), "linear2": dense(l.linear2)}
            for i, l in enumerate(dec.layers)}
  params.update(final_norm=ln(dec.norm), head_kernel=t(head_w), head_bias=t(head_b))
  model = TagDecoder(**SMALL)
  ref = _init(model, patches, queries)
  assert jax.tree.structure(ref) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(ref), jax.tree.leaves(params)):
    assert a.shape == b.shape
  got = _apply(model)({"params": params}, patches, queries, train=False)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_tag_queries_helper():
  phrases = ["pleural effusion", "cardiomegaly", "pneumothorax"]
  calls = []

  def tokenize(strings):
    calls.append(list(strings))
    return {"input_ids": np.arange(len(strings))[:, None]}

  def encoder(tokens):
    return {"cls": jnp.tile(tokens["input_ids"].astype(jnp.float32), (1, 8))}

  q = tag_queries(encoder, tokenize, phrases)
  assert isinstance(q, np.ndarray) and q.shape == (3, 8) and q.dtype == np.float32
  assert calls == [phrases]
  np.testing.assert_array_equal(q[:, 0], [0, 1, 2])
  with pytest.raises(ValueError):
    tag_queries(lambda tok: np.zeros((2, 8)), tokenize, phrases)
