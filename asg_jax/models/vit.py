"""Vision Transformer (ViT / DeiT, e.g. ViT-B/16) image encoder.

Semantics of Hugging Face `ViTModel` (= timm DeiT-base without distillation token):

    x = [CLS; PatchConv(images)] + pos           # learned position embeddings incl. CLS
    x = x + Attn(LN(x))                          # pre-norm blocks, qkv bias
    x = x + FC2(GELU(FC1(LN(x))))                # exact (erf) GELU
    out = LN(x)                                  # final norm, LayerNorm eps 1e-6

Parameter names follow the Hugging Face checkpoint layout, so `checkpoint_convert.load_vit`
maps a `ViTModel` / `ViTForImageClassification` checkpoint (keys possibly prefixed `vit.`)
by name (the key bias gets an exactly-zero gradient, see `bert.KeyDense`):
`embeddings/{cls_token,position_embeddings,patch_embeddings/projection}`,
`encoder/layer_{i}/{layernorm_before,attention/attention/{query,key,value},
attention/output/dense,layernorm_after,intermediate/dense,output/dense}`, `layernorm`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asg_jax.models import attention
from asg_jax.models import remat as remat_lib
from asg_jax.models.bert import KeyDense

_LN_EPS = 1e-6
_INIT = nn.initializers.truncated_normal(stddev=0.02)  # HF ViT initializer_range


class SelfAttention(nn.Module):
  """Multi-head self-attention projections + attention (HF `ViTSelfAttention`)."""
  hidden_size: int
  num_heads: int
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"    # asg_jax/models/attention.py
  cls_attention: bool = False       # a fused impl also returns the [CLS] row

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    """`x [B, N, D]` -> (context `[B, N, D]`, probabilities `[B, heads, N, N]` float32 with
    the "einsum" implementation; with another, the [CLS] row `[B, heads, 1, N]` if
    `cls_attention` (MGCA's patch weights), else None)."""
    b, n = x.shape[:2]
    heads = lambda name, cls=nn.Dense: cls(self.hidden_size, dtype=self.dtype, kernel_init=_INIT,
                                           name=name)(x).reshape(b, n, self.num_heads, -1)
    q, k, v = heads("query"), heads("key", KeyDense), heads("value")  # key bias: zero gradient
    ctx, probs = attention.attend(q, k, v, impl=self.attention_impl, dtype=self.dtype,
                                  want=_want(self.attention_impl, self.cls_attention))
    return ctx.reshape(b, n, self.hidden_size), probs


def _want(impl: str, cls_attention: bool) -> str:
  """The probabilities `attention.attend` returns: all ("einsum"), the [CLS] row or none."""
  return "all" if impl == "einsum" else ("cls" if cls_attention else "none")


class _Dense(nn.Module):
  """A module holding one `dense` Linear (HF `*.output.dense`, `intermediate.dense`)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, dtype=self.dtype, kernel_init=_INIT, name="dense")(x)


class Attention(nn.Module):
  """HF `ViTAttention`: `attention` (q/k/v) + `output/dense`."""
  hidden_size: int
  num_heads: int
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"
  cls_attention: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array | None]:
    ctx, probs = SelfAttention(self.hidden_size, self.num_heads, self.dtype,
                               self.attention_impl, self.cls_attention, name="attention")(x)
    return _Dense(self.hidden_size, self.dtype, name="output")(ctx), probs


class EncoderBlock(nn.Module):
  """One pre-norm ViT block (HF `ViTLayer`)."""
  hidden_size: int
  num_heads: int
  mlp_dim: int
  dropout: float
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"
  cls_attention: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array | None]:
    """`x [B, N, D]` -> (`[B, N, D]`, attention probabilities `[B, heads, N, N]`, the [CLS]
    row `[B, heads, 1, N]` or None: `SelfAttention`).

    `train` (dropout on) may be passed positionally: `nn.remat` marks it static by position.
    """
    drop = nn.Dropout(self.dropout, deterministic=not train)
    h = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="layernorm_before")(x)
    h, probs = Attention(self.hidden_size, self.num_heads, self.dtype, self.attention_impl,
                         self.cls_attention, name="attention")(h)
    x = x + drop(h)
    h = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="layernorm_after")(x)
    h = _Dense(self.mlp_dim, self.dtype, name="intermediate")(h)
    h = nn.gelu(h, approximate=False)
    h = _Dense(self.hidden_size, self.dtype, name="output")(h)
    return x + drop(h), probs


class PatchEmbeddings(nn.Module):
  """Non-overlapping p x p patches -> `[B, gh*gw, D]` (row-major), HF `projection` conv."""
  patch_size: int
  hidden_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = self.patch_size
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                kernel_init=_INIT, name="projection")(images)
    return x.reshape(x.shape[0], -1, self.hidden_size)


class Embeddings(nn.Module):
  """CLS token + patch embeddings + learned position embeddings (HF `ViTEmbeddings`)."""
  patch_size: int
  hidden_size: int
  dropout: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> jax.Array:
    patches = PatchEmbeddings(self.patch_size, self.hidden_size, self.dtype,
                              name="patch_embeddings")(images)
    b, m, d = patches.shape
    cls = self.param("cls_token", _INIT, (1, 1, d))
    pos = self.param("position_embeddings", _INIT, (1, 1 + m, d))
    x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)).astype(patches.dtype), patches], 1)
    x = x + pos.astype(patches.dtype)
    return nn.Dropout(self.dropout, deterministic=not train)(x)


class Encoder(nn.Module):
  """`num_layers` blocks; returns `(x [B, N, D], the last block's attention)`.

  Blocks are named `layer_{i}`, or with `scan` one `nn.scan` module `layers` whose
  parameters carry a leading [num_layers] axis (`remat.stack_layers`); `remat` is a
  `remat.REMAT_OPTIONS` name applied to every block (asg_jax/models/remat.py).
  """
  num_layers: int
  hidden_size: int
  num_heads: int
  mlp_dim: int
  dropout: float
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"
  remat: str = "none"
  scan: bool = False
  cls_attention: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array | None]:
    block = remat_lib.layer_stack(EncoderBlock, self.remat, self.scan, self.num_layers, 1)
    args = (self.hidden_size, self.num_heads, self.mlp_dim, self.dropout, self.dtype,
            self.attention_impl, self.cls_attention)
    if self.scan:
      b, n = x.shape[:2]   # the carry's probabilities: zeros of one block's output shape
      rows = {"all": n, "cls": 1}.get(_want(self.attention_impl, self.cls_attention))
      probs0 = None if rows is None else jnp.zeros((b, self.num_heads, rows, n), jnp.float32)
      (x, probs), _ = block(*args, name=remat_lib.SCANNED)((x, probs0), train)
      return x, probs
    probs = None
    for i in range(self.num_layers):
      x, probs = block(*args, name=f"layer_{i}")(x, train)
    return x, probs


class ViT(nn.Module):
  """ViT image encoder (ViT-B/16: patch 16, hidden 768, 12 layers, 12 heads, MLP 3072).

  Attributes:
    patch_size, hidden_size, num_layers, num_heads, mlp_dim: architecture.
    dropout: dropout rate on the embeddings, attention output and MLP output (DeiT: 0).
    dtype: compute dtype (parameters stay float32; softmax in float32).
    attention_impl: asg_jax/models/attention.py ("einsum" | "auto" | "xla" | "cudnn").
    remat: rematerialisation of each encoder block, "none" | "block" | "dots_saveable"
      (asg_jax/models/remat.py; changes memory / compute of the backward pass, not values).
    cls_attention: with a fused `attention_impl`, still return the last block's [CLS] row
      of the probabilities (`config.model.image.patch_importance`: MGCA's patch weights).
    scan: run the `num_layers` blocks with `nn.scan` (one compiled block; the parameters are
      `encoder/layers/...` with a leading [num_layers] axis instead of `encoder/layer_{i}`,
      see `remat.stack_layers` / `unstack_layers`; the HF loader handles both layouts).
  """
  patch_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32
  attention_impl: str = "einsum"
  remat: str = "none"
  scan: bool = False
  cls_attention: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Args:
      images: `[B, H, W, 3]`, H and W divisible by `patch_size`.
      train: dropout on.
    Returns:
      `cls [B, D]` (CLS after the final LayerNorm), `patch_tokens [B, M, D]` (after the final
      norm, M = (H/p)*(W/p), row-major over the patch grid), `attention [B, heads, 1+M, 1+M]`
      (the last block's softmax probabilities, float32; only with attention_impl "einsum"; with
      another impl and `cls_attention`, only their [CLS] row `[B, heads, 1, 1+M]`).
      The same with any `remat` / `scan` setting.
    """
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"ViT images: expected [B, H, W, 3], got shape {images.shape}")
    h, w = images.shape[1:3]
    if h % self.patch_size or w % self.patch_size:
      raise ValueError(f"ViT images: H, W = {h}, {w} must be divisible by patch_size = "
                       f"{self.patch_size}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"ViT hidden_size = {self.hidden_size} is not divisible by num_heads = "
                       f"{self.num_heads}")
    x = Embeddings(self.patch_size, self.hidden_size, self.dropout, self.dtype,
                   name="embeddings")(images.astype(self.dtype), train=train)
    x, probs = Encoder(self.num_layers, self.hidden_size, self.num_heads, self.mlp_dim,
                       self.dropout, self.dtype, self.attention_impl, self.remat, self.scan,
                       self.cls_attention, name="encoder")(x, train=train)
    x = nn.LayerNorm(epsilon=_LN_EPS, dtype=self.dtype, name="layernorm")(x)
    out = {"cls": x[:, 0], "patch_tokens": x[:, 1:]}
    if probs is not None:
      out["attention"] = probs
    return out


# ------------------------------------------------------------------ image-tower interface
# (asg_jax/registry.py: every image tower module exposes build / features / patch_grid /
# load_pretrained)

def build(cfg, dtype, name: str = "image_encoder") -> ViT:
  """The Linen module for `config.model.image` (`remat` / `scan` default to "none" / False
  for configs that predate them)."""
  return ViT(patch_size=cfg.patch_size, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers,
             num_heads=cfg.num_heads, mlp_dim=cfg.mlp_dim, dropout=cfg.dropout, dtype=dtype,
             attention_impl=cfg.get("attention_impl", "einsum"), remat=cfg.get("remat", "none"),
             scan=cfg.get("scan", False), cls_attention=cfg.get("patch_importance", False),
             name=name)


def features(out: dict) -> tuple[jax.Array, jax.Array]:
  """(global feature `[B, D]` = CLS after the final norm, local tokens `[B, M, D]`)."""
  return out["cls"], out["patch_tokens"]


def patch_grid(cfg, image_size: int) -> tuple[int, int]:
  """The static patch grid for a square input of `image_size`."""
  side = image_size // cfg.patch_size
  return side, side


def load_pretrained(path: str, params, batch_stats):
  """Hugging Face ViT/DeiT weights (local path or cached hub name) into `params` (either
  layout: a scanned tree is loaded through `remat.unstack_layers` and restacked)."""
  from asg_jax.models import checkpoint_convert  # pylint: disable=import-outside-toplevel
  return checkpoint_convert.load_vit(path, params), batch_stats
