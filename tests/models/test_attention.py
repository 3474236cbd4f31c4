"""models/attention.py: the fused `jax.nn.dot_product_attention` path equals the explicit
einsum + softmax (HF eager) path in float32 — per call, and through whole ViT / BERT towers
with padding — and a fused BERT returns exactly the [CLS] row RECLF's importance reads."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax import config as config_lib
from asg_jax.errors import ConfigError
from asg_jax.models import aggregation, attention, bert, vit
from tests.helpers import demo_config


def test_fused_equals_einsum_with_padding_and_cls_row():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(3, 7, 2, 8)), jnp.float32) for _ in range(3))
  key_mask = jnp.asarray(np.arange(7)[None, :] < np.array([[7], [4], [1]]))
  ref, probs = attention.attend(q, k, v, impl="einsum", key_mask=key_mask)
  # a NumPy reference of HF's eager attention (float32-min bias on padded keys)
  s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(8)
  s = s + (~np.asarray(key_mask))[:, None, None, :] * np.finfo(np.float32).min
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  np.testing.assert_allclose(probs, p, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ref, np.einsum("bhqk,bkhd->bqhd", p, v), rtol=1e-5, atol=1e-6)
  for impl in ("auto", "xla"):
    ctx, cls = attention.attend(q, k, v, impl=impl, key_mask=key_mask, want="cls")
    np.testing.assert_allclose(ctx, ref, rtol=1e-5, atol=1e-5, err_msg=impl)
    np.testing.assert_allclose(cls, p[:, :, :1], rtol=1e-5, atol=1e-6, err_msg=impl)
  with pytest.raises(ValueError, match="attention_dropout = 0"):
    attention.attend(q, k, v, impl="xla", probs_dropout=lambda x: x)


def test_towers_with_the_fused_path_equal_the_einsum_path():
  c = demo_config("runlocal,image=vit")
  images = jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float32)
  ref_vit = vit.build(c.model.image, jnp.float32)
  params = jax.jit(lambda x: ref_vit.init(jax.random.PRNGKey(0), x, train=False))(images)
  c.unlock()
  c.model.image.attention_impl = "xla"
  fused_vit = vit.build(c.model.image, jnp.float32)
  a, b = (jax.jit(lambda p, x, m=m: m.apply(p, x, train=False))(params, images)
          for m in (ref_vit, fused_vit))
  assert "attention" in a and "attention" not in b     # nobody reads the ViT's probabilities
  for key in ("cls", "patch_tokens"):
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-5, err_msg=key)
  ids = jnp.asarray([[2, 9, 11, 13, 3, 0, 0], [2, 7, 3, 0, 0, 0, 0]], jnp.int32)
  mask = (ids > 0).astype(jnp.int32)
  ref_bert = bert.build(c.model.text, jnp.float32, c.model.text.use_layers)
  tparams = jax.jit(lambda i, k: ref_bert.init(jax.random.PRNGKey(1), i, k, train=False))(ids, mask)
  c.model.text.attention_impl = "xla"
  fused_bert = bert.build(c.model.text, jnp.float32, c.model.text.use_layers)
  a, b = (jax.jit(lambda p, i, k, m=m: m.apply(p, i, k, train=False))(tparams, ids, mask)
          for m in (ref_bert, fused_bert))
  np.testing.assert_allclose(a["hidden"], b["hidden"], rtol=1e-5, atol=1e-5)
  assert b["attention"].shape == (2, c.model.text.num_attention_heads, 1, 7)
  word_ids = jnp.asarray([[-1, 0, 1, 2, 3, -1, -1], [-1, 0, 1, -1, -1, -1, -1]], jnp.int32)
  word_mask = jnp.asarray(np.arange(6)[None] < np.array([[4], [2]]))
  np.testing.assert_allclose(aggregation.aggregate_importance(a["attention"], word_ids, word_mask),
                             aggregation.aggregate_importance(b["attention"], word_ids, word_mask),
                             rtol=1e-5, atol=1e-6)
  # training with attention dropout needs the einsum path: a clear config error
  c.model.text.attention_dropout = 0.1
  with pytest.raises(ConfigError, match="attention_dropout = 0"):
    config_lib.finalize(c)
