"""RECLF / GLoRIA local-matching head: the parameters of SRM and IRM (reclf.md §2–3).

The computation is the pure code of `asg_jax.models.local_matching`; this module only owns
the learned weights and decides the mode. It is called by the model on the GLOBAL arrays inside
the jitted step; under `jax.set_mesh` with a `data` axis the pairwise matching is a
`shard_map` by image rows (see `local_matching.pairwise_local_similarity`).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asg_jax.models import local_matching


class ImportanceCorrection(nn.Module):
  """IRM correction g(w): Dense(hidden) → GELU → Dense(1) with a ZERO-initialised output
  layer, so g ≡ 0 and ω = π at initialisation. `[B, N, E]` -> `[B, N]`."""
  hidden: int = 128

  @nn.compact
  def __call__(self, word_emb: jax.Array) -> jax.Array:
    x = nn.Dense(self.hidden, name="hidden")(word_emb.astype(jnp.float32))
    x = nn.gelu(x)
    x = nn.Dense(1, kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
                 name="out")(x)
    return x[..., 0]


class LocalMatchingHead(nn.Module):
  """Local similarity R `[B, B]` between every image and every report of the batch.

  mode 'reclf' (reconstruction, docs/reclf.md): attention at τ_a = `attn_temperature`,
    matching features, SRM (`use_srm`: `srm_layers` residual relation layers with `srm_heads`
    heads, W_v zero-initialised ⇒ identity at init; `srm_visual_context` lets the relation
    see the attended visual context), then IRM pooling (`use_irm`: ω = masked softmax of
    log π + g(w), g zero-initialised ⇒ ω = π at init; `importance_source` 'attention' uses
    the text encoder's [CLS]→word attention as π — detached unless `detach_importance` is
    False —, 'uniform' a uniform prior) or, with IRM
    off, `pooling` ('lse' with γ2 — GLoRIA's — or 'mean').
  mode 'gloria' (baseline): attention softmax_m(γ1·w·p) (with `word_softmax_first`, GLoRIA
    code's extra softmax over words first), cosine scores, LSE pooling with γ2; no
    parameters; `use_srm` / `use_irm` are ignored.

  `block_size` reports per `lax.map` block (None = one block), `remat` rematerialises each
  block in the backward pass; `shard` uses the `data` mesh axis when one is active.
  """
  mode: str = "reclf"
  use_srm: bool = True
  use_irm: bool = True
  srm_layers: int = 1
  srm_heads: int = 1
  srm_qk_dim: int | None = None       # per-layer query/key width (default E)
  srm_visual_context: bool = False
  irm_hidden: int = 128
  importance_source: str = "attention"  # 'attention' | 'uniform'
  detach_importance: bool = True      # no gradient from IRM into the text encoder's attention
  attn_temperature: float = 0.1       # τ_a ('reclf')
  gamma1: float = 4.0                 # 'gloria' attention scale (τ_a = 1/γ1)
  gamma2: float = 5.0                 # LSE pooling
  pooling: str = "lse"                # 'reclf' without IRM: 'lse' | 'mean'
  word_softmax_first: bool = False
  block_size: int | None = 32
  remat: bool = True
  shard: bool = True
  dtype: Any = jnp.float32            # word–patch matmul operands (bf16: `config.model.dtype`)

  @nn.compact
  def __call__(self, patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
               word_importance: jax.Array | None = None) -> jax.Array:
    """Args:
      patch_emb: `[B, M, E]` L2-normalised patch embeddings.
      word_emb: `[B, N, E]` L2-normalised word embeddings (values at padding are ignored).
      word_mask: bool `[B, N]` valid word slots.
      word_importance: `[B, N]` [CLS]→word attention (needed for IRM with 'attention').
    Returns:
      `[B, B]` float32 local similarity, rows images, columns reports.
    """
    word_mask = word_mask.astype(bool)
    common = dict(block_size=self.block_size, remat=self.remat, shard=self.shard,
                  word_softmax_first=self.word_softmax_first, gamma2=self.gamma2,
                  compute_dtype=self.dtype)
    if self.mode == "gloria":
      return local_matching.pairwise_local_similarity(patch_emb, word_emb, word_mask, None,
                                             attn_temperature=1.0 / self.gamma1,
                                             pooling="lse", **common)
    if self.mode != "reclf":
      raise ValueError(f"LocalMatchingHead.mode = {self.mode!r}; expected 'reclf' or 'gloria'")

    embed = word_emb.shape[-1]
    layers = []
    if self.use_srm:
      qk_dim = self.srm_qk_dim or embed
      if qk_dim % self.srm_heads or embed % self.srm_heads:
        raise ValueError(f"srm_heads = {self.srm_heads} must divide the query/key width "
                         f"{qk_dim} and the embedding size {embed}")
      d_in = 2 * embed if self.srm_visual_context else embed
      for index in range(self.srm_layers):
        init = nn.initializers.lecun_normal()
        layers.append({
            "query": self.param(f"srm_{index}_query", init, (d_in, qk_dim), jnp.float32),
            "key": self.param(f"srm_{index}_key", init, (d_in, qk_dim), jnp.float32),
            "value": self.param(f"srm_{index}_value", nn.initializers.zeros,
                                (embed, embed), jnp.float32),
        })

    weights = None
    if self.use_irm:
      if self.importance_source == "attention":
        if word_importance is None:
          raise ValueError("IRM with importance_source='attention' needs word_importance")
        prior = (jax.lax.stop_gradient(word_importance) if self.detach_importance
                 else word_importance)
      elif self.importance_source == "uniform":
        prior = None
      else:
        raise ValueError(f"importance_source = {self.importance_source!r}; expected "
                         "'attention' or 'uniform'")
      correction = ImportanceCorrection(self.irm_hidden, name="irm")(
          local_matching.mask_words(word_emb, word_mask))
      weights = local_matching.importance_weights(prior, word_mask, correction)

    return local_matching.pairwise_local_similarity(
        patch_emb, word_emb, word_mask, weights, srm_layers=layers, srm_heads=self.srm_heads,
        srm_visual_context=self.srm_visual_context, attn_temperature=self.attn_temperature,
        pooling=self.pooling, **common)
