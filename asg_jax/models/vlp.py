"""The vision–language model: encoders + projection heads + optional IRL / local heads.

One Linen module whose `__call__` returns the named outputs of docs/interfaces.md §3. No
loss is computed here; every parameter of the method (tag decoder, SRM/IRM) lives here.
"""
from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from asg_jax import registry
from asg_jax.models import aggregation, heads

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class VisionLanguageModel(nn.Module):
  """ASG / RECLF dual encoder.

  Attributes:
    config: the `config.model` section (a FrozenConfigDict, see `frozen_model_config`).
  """
  config: Any

  def setup(self):
    cfg = self.config
    dtype = _DTYPES[cfg.dtype]
    self.image_encoder = registry.image_tower(cfg.image.name).build(cfg.image, dtype,
                                                                    name="image_encoder")
    self.text_encoder = registry.text_tower(cfg.text.name).build(
        cfg.text, dtype, use_layers=cfg.text.use_layers, name="text_encoder")
    self.image_global_head = heads.ProjectionHead(cfg.head_hidden, cfg.embed_dim)
    self.image_local_head = heads.ProjectionHead(cfg.head_hidden, cfg.embed_dim)
    self.text_global_head = heads.ProjectionHead(cfg.head_hidden, cfg.embed_dim)
    self.text_local_head = heads.ProjectionHead(cfg.head_hidden, cfg.embed_dim)
    if cfg.tag_decoder.enabled:
      from asg_jax.models import tag_decoder  # pylint: disable=import-outside-toplevel
      self.tag_decoder = tag_decoder.TagDecoder(
          num_layers=cfg.tag_decoder.num_layers, d_model=cfg.tag_decoder.d_model,
          num_heads=cfg.tag_decoder.num_heads, mlp_dim=cfg.tag_decoder.mlp_dim,
          dropout=cfg.tag_decoder.dropout)
    if cfg.local_head.mode:
      self.local_head = local_head_from_config(cfg.local_head)

  def encode_image(self, images: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """`images [B,S,S,3]` -> image_feature, patch_tokens, image_emb, patch_emb."""
    cfg = self.config
    if cfg.image.input_resize:
      size = cfg.image.input_resize
      images = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]),
                                method="bilinear")
    image_feature, patch_tokens = registry.image_tower(cfg.image.name).features(
        self.image_encoder(images, train=train))
    out = {"image_feature": image_feature.astype(jnp.float32),
           "patch_tokens": patch_tokens.astype(jnp.float32)}
    out["image_emb"] = self.image_global_head(out["image_feature"], train=train)
    out["patch_emb"] = self.image_local_head(out["patch_tokens"], train=train)
    return out

  def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array, word_ids: jax.Array,
                  *, train: bool) -> dict[str, jax.Array]:
    """`[B,L]` token ids/mask/word ids -> text_feature, text_emb, word_emb, word_mask,
    word_importance (interfaces.md §3)."""
    txt = self.text_encoder(input_ids, attention_mask, train=train)
    out = {"text_feature": txt["cls"].astype(jnp.float32)}
    out["text_emb"] = self.text_global_head(out["text_feature"], train=train)
    word_hidden, word_mask = aggregation.aggregate_words(txt["hidden"].astype(jnp.float32),
                                                         word_ids)
    word_emb = self.text_local_head(word_hidden, train=train, mask=word_mask)
    out["word_emb"] = word_emb * word_mask[..., None]
    out["word_mask"] = word_mask
    out["word_importance"] = aggregation.aggregate_importance(
        txt["attention"].astype(jnp.float32), word_ids, word_mask)
    return out

  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
               tag_queries: jax.Array | None = None) -> dict[str, jax.Array]:
    """Args:
      batch: `image [B,S,S,3]`, `input_ids/attention_mask/word_ids [B,L]` (interfaces.md §2).
      train: dropout on, BatchNorm in batch-statistics mode.
      tag_queries: `[T, Dq]` constant tag-phrase features (needed if the tag decoder is on).
    Returns:
      dict of named outputs (interfaces.md §3).
    """
    out = self.encode_image(batch["image"], train=train)
    out.update(self.encode_text(batch["input_ids"], batch["attention_mask"], batch["word_ids"],
                                train=train))
    if self.config.tag_decoder.enabled:
      if tag_queries is None:
        raise ValueError("the tag decoder is enabled but no tag_queries [T, D] were given")
      out["tag_logits"] = self.tag_decoder(out["patch_tokens"], tag_queries,
                                           train=train).astype(jnp.float32)
    if self.config.local_head.mode:
      out["local_logits"] = self.local_head(out["patch_emb"], out["word_emb"], out["word_mask"],
                                            out["word_importance"])
    return out


def local_head_from_config(cfg: ml_collections.ConfigDict) -> nn.Module:
  """The RECLF / GLoRIA local-matching head named by `config.model.local_head`."""
  from asg_jax.models import relation  # pylint: disable=import-outside-toplevel
  return relation.LocalMatchingHead(
      mode=cfg.mode, use_srm=cfg.use_srm, use_irm=cfg.use_irm, srm_layers=cfg.srm_layers,
      srm_heads=cfg.srm_heads, srm_visual_context=cfg.srm_visual_context,
      srm_qk_dim=cfg.srm_qk_dim or None, irm_hidden=cfg.irm_hidden,
      importance_source=cfg.importance_source, detach_importance=cfg.detach_importance,
      attn_temperature=cfg.attn_temperature, gamma1=cfg.gamma1, gamma2=cfg.gamma2,
      pooling=cfg.pooling, word_softmax_first=cfg.word_softmax_first,
      block_size=cfg.block_size or None, remat=cfg.remat, shard=cfg.shard)


def frozen_model_config(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """`config.model` as a hashable FrozenConfigDict (a module attribute)."""
  return ml_collections.FrozenConfigDict(config.model)
