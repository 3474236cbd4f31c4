"""ViT / ResNet / BERT encoders: output shapes, attention probabilities, layer truncation,
and parameter counts equal to the Hugging Face PyTorch models of the same configuration."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.models.bert import BertEncoder
from asg_jax.models.resnet import ResNet50
from asg_jax.models.vit import ViT

# RngBitGenerator keys: initialisers compile ~4x faster on CPU than with threefry
KEY = jax.random.key(0, impl="rbg")
TINY_BERT = dict(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                 intermediate_size=24, max_position_embeddings=20, hidden_dropout=0.1,
                 attention_dropout=0.1)


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _random_variables(model, *args, seed=0):
  """Variables with the shapes of `model.init` but NumPy-random values (compiling the
  initialisers costs seconds on CPU); BatchNorm statistics start at (0, 1)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(KEY, *args, train=False))
  fill = lambda path, s: (np.ones if path[-1].key == "var" else np.zeros)(s.shape, s.dtype) \
      if path[0].key == "batch_stats" else (0.2 * rng.normal(size=s.shape)).astype(s.dtype)
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _torch_param_count(model_cls, config, **kw) -> int:
  torch = pytest.importorskip("torch", reason="torch (the test extra) is needed for HF models")
  with torch.device("meta"):
    model = model_cls(config, **kw)
  return sum(p.numel() for p in model.parameters())


def test_vit_shapes_and_attention():
  model = ViT(patch_size=8, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32, dropout=0.1)
  images = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 48, 3)), jnp.float32)
  variables = jax.jit(lambda x: model.init(KEY, x, train=False))(images)
  out = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  m = (32 // 8) * (48 // 8)
  assert out["cls"].shape == (2, 16)
  assert out["patch_tokens"].shape == (2, m, 16)
  assert out["attention"].shape == (2, 2, 1 + m, 1 + m)
  np.testing.assert_allclose(np.asarray(out["attention"]).sum(-1), 1.0, rtol=1e-5)
  # position embeddings include CLS; final LayerNorm => per-token zero mean (scale 1, bias 0)
  assert variables["params"]["embeddings"]["position_embeddings"].shape == (1, 1 + m, 16)
  np.testing.assert_allclose(np.asarray(out["patch_tokens"]).mean(-1), 0.0, atol=1e-5)
  # dropout active in train mode only
  train = jax.jit(lambda v, x, r: model.apply(v, x, train=True, rngs={"dropout": r}))(
      variables, images, jax.random.key(1, impl="rbg"))
  assert not np.allclose(train["cls"], out["cls"])
  with pytest.raises(ValueError, match="divisible by patch_size"):
    jax.eval_shape(lambda v: model.apply(v, images[:, :30], train=False), variables)


def test_vit_b16_parameter_count_matches_hf():
  transformers = pytest.importorskip("transformers")
  model = ViT(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
  shapes = jax.eval_shape(lambda: model.init(KEY, jnp.zeros((1, 224, 224, 3)),
                                             train=False))
  ref = _torch_param_count(transformers.ViTModel, transformers.ViTConfig(),
                           add_pooling_layer=False)
  assert _count(shapes["params"]) == ref == 85_798_656


def test_resnet_shapes_and_batch_stats():
  model = ResNet50(stage_sizes=(1, 1, 1, 1), width=4)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 64, 3)), jnp.float32)
  variables = _random_variables(model, x)
  assert set(variables) == {"params", "batch_stats"}
  out, updates = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))(
      variables, x)
  assert out["pooled"].shape == (2, 32 * 4)
  assert out["layer3"].shape == (2, 4, 4, 16 * 4)
  assert np.all(np.asarray(out["pooled"]) >= 0)   # after the final ReLU
  changed = jax.tree.map(lambda a, b: not np.allclose(a, b), variables["batch_stats"],
                         updates["batch_stats"])
  assert all(jax.tree.leaves(changed))


def test_resnet50_at_299_gives_19x19_layer3_and_hf_parameter_count():
  transformers = pytest.importorskip("transformers")
  model = ResNet50()
  shapes = jax.eval_shape(lambda: model.init_with_output(
      KEY, jnp.zeros((2, 299, 299, 3)), train=False))
  out, variables = shapes
  assert out["layer3"].shape == (2, 19, 19, 1024)
  assert out["pooled"].shape == (2, 2048)
  at224 = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((1, 224, 224, 3)), train=False),
                         variables)
  assert at224["layer3"].shape == (1, 14, 14, 1024)
  ref = _torch_param_count(transformers.ResNetModel, transformers.ResNetConfig())
  assert _count(variables["params"]) == ref == 23_508_032


def test_bert_shapes_mask_and_use_layers():
  rng = np.random.default_rng(0)
  ids = jnp.asarray(rng.integers(1, 50, size=(2, 7)), jnp.int32)
  mask = jnp.asarray([[1] * 7, [1] * 4 + [0] * 3], jnp.int32)
  full = BertEncoder(**TINY_BERT)
  v = _random_variables(full, ids, mask)
  assert sorted(v["params"]["encoder"]) == ["layer_0", "layer_1", "layer_2"]
  apply = jax.jit(lambda v, i, m: full.apply(v, i, m, train=False))
  out = apply(v, ids, mask)
  assert out["hidden"].shape == (2, 7, 16) and out["cls"].shape == (2, 16)
  assert out["attention"].shape == (2, 2, 7, 7)
  np.testing.assert_array_equal(out["cls"], out["hidden"][:, 0])
  att = np.asarray(out["attention"])
  np.testing.assert_allclose(att.sum(-1), 1.0, rtol=1e-5)
  assert np.all(att[1, :, :, 4:] == 0)      # padded keys get no attention
  # padding tokens never change the real tokens' states
  ids2 = ids.at[1, 4:].set(3)
  out2 = apply(v, ids2, mask)
  np.testing.assert_allclose(out2["hidden"][1, :4], out["hidden"][1, :4], atol=1e-5)

  short = BertEncoder(**TINY_BERT, use_layers=2)
  v2 = jax.eval_shape(lambda: short.init(KEY, ids, mask, train=False))
  assert sorted(v2["params"]["encoder"]) == ["layer_0", "layer_1"]
  with pytest.raises(ValueError, match="use_layers"):
    jax.eval_shape(lambda: BertEncoder(**TINY_BERT, use_layers=4).init(KEY, ids, mask,
                                                                       train=False))
  with pytest.raises(ValueError, match="max_position_embeddings"):
    jax.eval_shape(lambda: full.apply(v, jnp.zeros((1, 21), jnp.int32),
                                      jnp.ones((1, 21), jnp.int32), train=False))


def test_bert_base_parameter_count_matches_hf():
  transformers = pytest.importorskip("transformers")
  model = BertEncoder(vocab_size=28996, hidden_size=768, num_hidden_layers=12,
                      num_attention_heads=12, intermediate_size=3072,
                      max_position_embeddings=512)
  ids = jnp.zeros((1, 8), jnp.int32)
  shapes = jax.eval_shape(lambda: model.init(KEY, ids, ids, train=False))
  ref = _torch_param_count(transformers.BertModel, transformers.BertConfig(vocab_size=28996),
                           add_pooling_layer=False)
  assert _count(shapes["params"]) == ref


def test_bf16_compute_dtype_runs():
  model = ViT(patch_size=8, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32,
              dtype=jnp.bfloat16)
  x = jnp.ones((1, 16, 16, 3))
  v = jax.eval_shape(lambda: model.init(KEY, x, train=False))
  out = jax.eval_shape(lambda v: model.apply(v, x, train=False), v)
  assert out["cls"].dtype == jnp.bfloat16
  assert jax.tree.leaves(v)[0].dtype == jnp.float32
  assert out["attention"].dtype == jnp.float32


def test_attention_key_bias_has_exactly_zero_gradient_and_no_effect():
  ids = jnp.asarray([[2, 7, 9, 3, 0]], jnp.int32)
  mask = (ids > 0).astype(jnp.int32)
  model = BertEncoder(**TINY_BERT)
  v = _random_variables(model, ids, mask)
  loss = jax.jit(lambda p: jnp.sum(model.apply({"params": p}, ids, mask,
                                                train=False)["hidden"] ** 2))
  g = jax.grad(loss)(v["params"])
  key = g["encoder"]["layer_0"]["attention"]["self"]["key"]
  assert np.all(np.asarray(key["bias"]) == 0) and np.any(np.asarray(key["kernel"]) != 0)
  assert np.any(np.asarray(g["encoder"]["layer_0"]["attention"]["self"]["query"]["bias"]) != 0)
  p2 = jax.tree.map(lambda a: a, v["params"])
  layer = p2["encoder"]["layer_0"]["attention"]["self"]
  layer["key"] = dict(layer["key"], bias=layer["key"]["bias"] + 1.0)
  np.testing.assert_allclose(loss(p2), loss(v["params"]), rtol=1e-5)
