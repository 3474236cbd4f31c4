"""BERT text encoder (post-norm, exactly Hugging Face `BertModel` without the pooler).

transformers v5 has no Flax models, so the encoder is written here:

    e = LN(word[ids] + pos[0..L) + type[0])                     # LayerNorm eps 1e-12
    per layer:  a = LN(x + Dense(Attn(x, mask)))                  # post-norm
                x = LN(a + Dense(GELU(Dense(a))))                 # exact (erf) GELU

The attention key bias gets an exactly-zero gradient (`KeyDense`; softmax cancels it).
Only the first `use_layers` layers exist and run (ASG uses 6 of Bio_ClinicalBERT's 12).
Parameter names follow the Hugging Face checkpoint layout (`embeddings/word_embeddings`,
`encoder/layer_0/attention/self/query`, `encoder/layer_0/attention/output/LayerNorm`, ...),
so `checkpoint_convert.load_bert` maps a BERT checkpoint (keys possibly prefixed `bert.`)
by name. With `scan=True` the layers are one `nn.scan` module, `encoder/layers/...` with a
leading [layers] axis on every leaf (asg_jax/models/remat.py; the loader restacks).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype

from asg_jax.models import attention
from asg_jax.models import remat as remat_lib

_LN_EPS = 1e-12
_INIT = nn.initializers.normal(stddev=0.02)  # HF BERT initializer_range
_TYPE_VOCAB = 2


class KeyDense(nn.Module):
  """`nn.Dense` (same `kernel` / `bias` parameters) whose bias gets an exactly-zero gradient.

  Used for the attention KEY projection: adding a bias b to every key adds q·b to all
  scores of a query, which the softmax cancels, so dL/db is mathematically 0. Autodiff
  returns float noise instead, which Adam would blow up into lr-sized random steps (making
  runs depend on the device count); stopping it changes no output.
  """
  features: int
  dtype: Any = jnp.float32
  kernel_init: Any = _INIT

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    x, kernel, bias = promote_dtype(x, kernel, jax.lax.stop_gradient(bias), dtype=self.dtype)
    return x @ kernel + bias


class SelfAttention(nn.Module):
  """HF `BertSelfAttention`: query/key/value projections and masked softmax attention."""
  hidden_size: int
  num_heads: int
  attention_dropout: float
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"    # asg_jax/models/attention.py

  @nn.compact
  def __call__(self, x: jax.Array, key_mask: jax.Array, *,
               train: bool) -> tuple[jax.Array, jax.Array]:
    """Args:
      x: `[B, L, D]`.
      key_mask: bool `[B, L]`, True for real tokens (padding gets HF's float32-min bias).
    Returns:
      (context `[B, L, D]`, float32 probabilities before dropout: `[B, heads, L, L]` with the
      "einsum" implementation, the [CLS] query row `[B, heads, 1, L]` with a fused one).
    """
    b, n, d = x.shape
    hd = d // self.num_heads

    def heads(name):
      cls = KeyDense if name == "key" else nn.Dense
      y = cls(self.hidden_size, dtype=self.dtype, kernel_init=_INIT, name=name)(x)
      return y.reshape(b, n, self.num_heads, hd)

    q, k, v = heads("query"), heads("key"), heads("value")
    dropout = None
    if self.attention_dropout > 0 and train:
      if self.attention_impl != "einsum":
        raise ValueError(f"BERT attention_impl={self.attention_impl!r} has no attention "
                         f"dropout: set config.model.text.attention_dropout = 0")
      dropout = nn.Dropout(self.attention_dropout, deterministic=False)
    ctx, probs = attention.attend(q, k, v, impl=self.attention_impl, key_mask=key_mask,
                                  want="all" if self.attention_impl == "einsum" else "cls",
                                  probs_dropout=dropout, dtype=self.dtype)
    return ctx.reshape(b, n, d), probs


class DenseLayerNorm(nn.Module):
  """HF `BertSelfOutput` / `BertOutput`: LN(residual + Dropout(Dense(x)))."""
  hidden_size: int
  hidden_dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, residual: jax.Array, *, train: bool) -> jax.Array:
    h = nn.Dense(self.hidden_size, dtype=self.dtype, kernel_init=_INIT, name="dense")(x)
    h = nn.Dropout(self.hidden_dropout, deterministic=not train)(h)
    return nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="LayerNorm")(h + residual)


class Attention(nn.Module):
  """HF `BertAttention`: `self` + `output`."""
  hidden_size: int
  num_heads: int
  hidden_dropout: float
  attention_dropout: float
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"

  @nn.compact
  def __call__(self, x, key_mask, *, train: bool) -> tuple[jax.Array, jax.Array]:
    ctx, probs = SelfAttention(self.hidden_size, self.num_heads, self.attention_dropout,
                               self.dtype, self.attention_impl, name="self")(
                                   x, key_mask, train=train)
    out = DenseLayerNorm(self.hidden_size, self.hidden_dropout, self.dtype,
                         name="output")(ctx, x, train=train)
    return out, probs


class Intermediate(nn.Module):
  """HF `BertIntermediate`: GELU(Dense(x))."""
  intermediate_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.Dense(self.intermediate_size, dtype=self.dtype, kernel_init=_INIT, name="dense")(x)
    return nn.gelu(h, approximate=False)


class Layer(nn.Module):
  """HF `BertLayer` (post-norm)."""
  hidden_size: int
  num_heads: int
  intermediate_size: int
  hidden_dropout: float
  attention_dropout: float
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"

  @nn.compact
  def __call__(self, x, key_mask, train: bool) -> tuple[jax.Array, jax.Array]:
    """`x [B, L, D]`, bool `key_mask [B, L]` -> (`[B, L, D]`, probabilities as
    `SelfAttention`). `train` may be passed positionally (`nn.remat` marks it static)."""
    a, probs = Attention(self.hidden_size, self.num_heads, self.hidden_dropout,
                         self.attention_dropout, self.dtype, self.attention_impl,
                         name="attention")(x, key_mask, train=train)
    h = Intermediate(self.intermediate_size, self.dtype, name="intermediate")(a)
    out = DenseLayerNorm(self.hidden_size, self.hidden_dropout, self.dtype,
                         name="output")(h, a, train=train)
    return out, probs


class Embeddings(nn.Module):
  """HF `BertEmbeddings` (absolute positions, token type 0)."""
  vocab_size: int
  hidden_size: int
  max_position_embeddings: int
  hidden_dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, input_ids: jax.Array, *, train: bool) -> jax.Array:
    embed = lambda n, name: nn.Embed(n, self.hidden_size, embedding_init=_INIT,
                                     dtype=self.dtype, name=name)
    length = input_ids.shape[1]
    x = embed(self.vocab_size, "word_embeddings")(input_ids)
    x = x + embed(self.max_position_embeddings, "position_embeddings")(
        jnp.arange(length)[None, :])
    x = x + embed(_TYPE_VOCAB, "token_type_embeddings")(jnp.zeros((1, length), jnp.int32))
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="LayerNorm")(x)
    return nn.Dropout(self.hidden_dropout, deterministic=not train)(x)


class Encoder(nn.Module):
  """`num_layers` BERT layers; returns `(x [B, L, D], the last layer's attention)`.

  Layers are named `layer_{i}`, or with `scan` one `nn.scan` module `layers` whose
  parameters carry a leading [num_layers] axis (`remat.stack_layers`); `remat` is a
  `remat.REMAT_OPTIONS` name applied to every layer (asg_jax/models/remat.py).
  """
  num_layers: int
  hidden_size: int
  num_heads: int
  intermediate_size: int
  hidden_dropout: float
  attention_dropout: float
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"
  remat: str = "none"
  scan: bool = False

  @nn.compact
  def __call__(self, x, key_mask, *, train: bool) -> tuple[jax.Array, jax.Array]:
    layer = remat_lib.layer_stack(Layer, self.remat, self.scan, self.num_layers, 2)
    args = (self.hidden_size, self.num_heads, self.intermediate_size, self.hidden_dropout,
            self.attention_dropout, self.dtype, self.attention_impl)
    if self.scan:
      b, n = x.shape[:2]   # the carry's probabilities: zeros of one layer's output shape
      rows = n if self.attention_impl == "einsum" else 1
      probs0 = jnp.zeros((b, self.num_heads, rows, n), jnp.float32)
      (x, probs), _ = layer(*args, name=remat_lib.SCANNED)((x, probs0), key_mask, train)
      return x, probs
    probs = None
    for i in range(self.num_layers):
      x, probs = layer(*args, name=f"layer_{i}")(x, key_mask, train)
    return x, probs


class BertEncoder(nn.Module):
  """BERT encoder, optionally truncated to its first `use_layers` layers.

  Attributes:
    vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size,
    max_position_embeddings: the Hugging Face `BertConfig` fields.
    hidden_dropout, attention_dropout: `hidden_dropout_prob`, `attention_probs_dropout_prob`.
    use_layers: run (and create parameters for) only the first `use_layers` layers;
      None = all `num_hidden_layers`.
    dtype: compute dtype (parameters stay float32; softmax in float32).
    attention_impl: asg_jax/models/attention.py ("einsum" | "auto" | "xla" | "cudnn"; the
      fused ones need attention_dropout = 0 when training).
    remat: rematerialisation of each layer, "none" | "block" | "dots_saveable"
      (asg_jax/models/remat.py; changes memory / compute of the backward pass, not values).
    scan: run the layers with `nn.scan` (one compiled layer; the parameters are
      `encoder/layers/...` with a leading [layers_run] axis instead of `encoder/layer_{i}`,
      see `remat.stack_layers` / `unstack_layers`; the HF loader handles both layouts).
  """
  vocab_size: int
  hidden_size: int
  num_hidden_layers: int
  num_attention_heads: int
  intermediate_size: int
  max_position_embeddings: int
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  use_layers: int | None = None
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"
  remat: str = "none"
  scan: bool = False

  @property
  def layers_run(self) -> int:
    """How many layers exist and run."""
    return self.num_hidden_layers if self.use_layers is None else self.use_layers

  @nn.compact
  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array, *,
               train: bool) -> dict[str, jax.Array]:
    """Args:
      input_ids: int `[B, L]` WordPiece ids (`[CLS] ... [SEP] [PAD]...`).
      attention_mask: `[B, L]`, 1 (or True) for real tokens.
      train: dropout on.
    Returns:
      `hidden [B, L, D]` (last layer run), `cls [B, D]` (= hidden[:, 0], no pooler) and
      `attention [B, heads, L, L]` (that layer's softmax probabilities, float32; with a fused
      attention_impl only the [CLS] query row, `[B, heads, 1, L]`). The same with any
      `remat` / `scan` setting.
    """
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError(f"BertEncoder: expected input_ids and attention_mask of the same shape "
                       f"[B, L], got {input_ids.shape} and {attention_mask.shape}")
    if input_ids.shape[1] > self.max_position_embeddings:
      raise ValueError(f"BertEncoder: sequence length {input_ids.shape[1]} exceeds "
                       f"max_position_embeddings = {self.max_position_embeddings}")
    if not 1 <= self.layers_run <= self.num_hidden_layers:
      raise ValueError(f"BertEncoder: use_layers = {self.use_layers} must be in "
                       f"[1, num_hidden_layers = {self.num_hidden_layers}]")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"BertEncoder: hidden_size = {self.hidden_size} is not divisible by "
                       f"num_attention_heads = {self.num_attention_heads}")
    x = Embeddings(self.vocab_size, self.hidden_size, self.max_position_embeddings,
                   self.hidden_dropout, self.dtype, name="embeddings")(input_ids, train=train)
    key_mask = jnp.asarray(attention_mask).astype(bool)
    x, probs = Encoder(self.layers_run, self.hidden_size, self.num_attention_heads,
                       self.intermediate_size, self.hidden_dropout, self.attention_dropout,
                       self.dtype, self.attention_impl, self.remat, self.scan,
                       name="encoder")(x, key_mask, train=train)
    return {"cls": x[:, 0], "hidden": x, "attention": probs}


# ------------------------------------------------------------------- text-tower interface
# (asg_jax/registry.py: every text tower module exposes build / load_pretrained)

def build(cfg, dtype, use_layers: int | None, name: str = "text_encoder") -> BertEncoder:
  """The Linen module for `config.model.text` (`use_layers`: first k layers; None = all;
  `remat` / `scan` default to "none" / False for configs that predate them)."""
  return BertEncoder(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
                     num_hidden_layers=cfg.num_hidden_layers,
                     num_attention_heads=cfg.num_attention_heads,
                     intermediate_size=cfg.intermediate_size,
                     max_position_embeddings=cfg.max_position_embeddings,
                     hidden_dropout=cfg.hidden_dropout, attention_dropout=cfg.attention_dropout,
                     use_layers=use_layers, dtype=dtype,
                     attention_impl=cfg.get("attention_impl", "einsum"),
                     remat=cfg.get("remat", "none"), scan=cfg.get("scan", False), name=name)


def load_pretrained(path: str, params):
  """Hugging Face BERT weights (local path or cached hub name) into `params` (either layout:
  a scanned tree is loaded through `remat.unstack_layers` and restacked)."""
  from asg_jax.models import checkpoint_convert  # pylint: disable=import-outside-toplevel
  return checkpoint_convert.load_bert(path, params)
