"""IRL image-tag recognition decoder (asg.md, Architecture: "Image-tag recognition decoder").

T tag queries attend to the raw (pre-projection) patch tokens through a stack of pre-norm
transformer decoder layers (as PyTorch's `nn.TransformerDecoderLayer(norm_first=True,
activation="relu")`):

    x = x + Dropout(SelfAttn(LN(x)))            # over the T queries
    x = x + Dropout(CrossAttn(LN(x), patches))  # keys/values: the patch tokens (not normed)
    x = x + Dropout(Linear(Dropout(ReLU(Linear(LN(x))))))

followed by a final LayerNorm + Dropout and "a Linear(768, 1) per query": each query t has
its OWN weight vector w_t ∈ R^d and bias b_t (a group-wise linear, as Query2Label's
`GroupWiseLinear`), logit_t = w_t·x_t + b_t. We read "per query" as one classifier per tag
(not one Linear shared by all queries): tags differ in difficulty and prevalence, and a shared
head would make the per-tag bias identical. No positional encodings anywhere.

The queries are NOT parameters: they are the [CLS] features of the T tag phrases from a frozen,
full-depth text tower, computed once outside the train step (`tag_queries`) and passed to
`__call__` as a constant (gradient-stopped). Queries of width Dq ≠ d_model, and patch tokens of
width Dv ≠ d_model (e.g. ResNet layer3, 1024), are projected by a Linear. All Linear kernels
(attention projections included) are initialised N(0, 0.02), biases 0.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_INIT = nn.initializers.normal(stddev=0.02)
_LN_EPS = 1e-5  # PyTorch LayerNorm default


class DecoderLayer(nn.Module):
  """One pre-norm decoder layer: self-attn over queries, cross-attn to memory, ReLU FFN."""
  d_model: int
  num_heads: int
  mlp_dim: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, *, train: bool) -> jax.Array:
    """`x [B, T, d]`, `memory [B, M, d]` -> `[B, T, d]`."""
    det = not train

    def attention(name):
      return nn.MultiHeadDotProductAttention(
          num_heads=self.num_heads, qkv_features=self.d_model, out_features=self.d_model,
          dropout_rate=self.dropout, kernel_init=_INIT, bias_init=nn.initializers.zeros,
          dtype=self.dtype, force_fp32_for_softmax=True, name=name)

    h = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm1")(x)
    h = attention("self_attn")(h, h, deterministic=det)
    x = x + nn.Dropout(self.dropout)(h, deterministic=det)
    h = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm2")(x)
    h = attention("cross_attn")(h, memory, deterministic=det)
    x = x + nn.Dropout(self.dropout)(h, deterministic=det)
    h = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="norm3")(x)
    h = nn.Dense(self.mlp_dim, kernel_init=_INIT, dtype=self.dtype, name="linear1")(h)
    h = nn.Dropout(self.dropout)(nn.relu(h), deterministic=det)
    h = nn.Dense(self.d_model, kernel_init=_INIT, dtype=self.dtype, name="linear2")(h)
    return x + nn.Dropout(self.dropout)(h, deterministic=det)


class TagDecoder(nn.Module):
  """Tag queries × patch tokens -> one logit per tag (asg.md IRL decoder).

  Attributes:
    num_layers: decoder layers (4).
    d_model: width (768).
    num_heads: attention heads (4).
    mlp_dim: FFN hidden width (1024).
    dropout: dropout rate of attention weights, residual branches, FFN and the final output
      (0.1).
    dtype: computation dtype (parameters stay float32).
  """
  num_layers: int = 4
  d_model: int = 768
  num_heads: int = 4
  mlp_dim: int = 1024
  dropout: float = 0.1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, patch_tokens: jax.Array, queries: jax.Array, train: bool = False
               ) -> jax.Array:
    """Args:
      patch_tokens: `[B, M, Dv]` raw patch tokens (ViT patch tokens / ResNet layer3).
      queries: `[T, Dq]` constant tag-phrase [CLS] features (`tag_queries`), not trained.
      train: dropout on (needs the 'dropout' rng).
    Returns:
      `[B, T]` float32 tag logits.
    """
    if queries.ndim != 2:
      raise ValueError(f"queries must be [T, Dq], got {queries.shape}")
    num_tags = queries.shape[0]
    queries = jax.lax.stop_gradient(jnp.asarray(queries, jnp.float32))
    memory = patch_tokens.astype(self.dtype)
    if memory.shape[-1] != self.d_model:
      memory = nn.Dense(self.d_model, kernel_init=_INIT, dtype=self.dtype,
                        name="memory_proj")(memory)
    if queries.shape[-1] != self.d_model:
      queries = nn.Dense(self.d_model, kernel_init=_INIT, dtype=self.dtype,
                         name="query_proj")(queries)
    x = jnp.broadcast_to(queries.astype(self.dtype),
                         (patch_tokens.shape[0], num_tags, self.d_model))
    for i in range(self.num_layers):
      x = DecoderLayer(self.d_model, self.num_heads, self.mlp_dim, self.dropout, self.dtype,
                       name=f"layer{i}")(x, memory, train=train)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="final_norm")(x)
    x = nn.Dropout(self.dropout)(x, deterministic=not train)
    # "a Linear(768, 1) per query": group-wise linear, one (w_t, b_t) per tag
    w = self.param("head_kernel", _INIT, (num_tags, self.d_model))
    b = self.param("head_bias", nn.initializers.zeros, (num_tags,))
    logits = jnp.einsum("btd,td->bt", x.astype(jnp.float32), w) + b
    return logits.astype(jnp.float32)


def tag_queries(text_encoder_apply: Callable[[Any], Any], tokenize: Callable[[list[str]], Any],
                phrases: Sequence[str]) -> np.ndarray:
  """The constant IRL queries: [CLS] features of the tag phrases from a frozen text tower.

  Call it ONCE, outside the train step, and pass the result to `TagDecoder.__call__`.

  Args:
    text_encoder_apply: `tokens -> [T, D]` [CLS] features (or a dict with a `cls` entry), e.g.
      `lambda t: bert.apply({"params": frozen}, t["input_ids"], t["attention_mask"],
      train=False)["cls"]` of a full-depth (12-layer) encoder.
    tokenize: `list[str] -> tokens` (whatever `text_encoder_apply` takes).
    phrases: the T tag phrases in label order (vocab.json `asg_tags_40`).
  Returns:
    `[T, D]` float32 NumPy array (a constant: no gradient, not a parameter).
  """
  phrases = list(phrases)
  feats = text_encoder_apply(tokenize(phrases))
  if isinstance(feats, dict):
    feats = feats["cls"]
  feats = np.asarray(jax.device_get(feats), np.float32)
  if feats.ndim != 2 or feats.shape[0] != len(phrases):
    raise ValueError(f"the text encoder returned {feats.shape} for {len(phrases)} phrases; "
                     "expected [T, D] [CLS] features")
  return feats
