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
from asg_jax.data import normalization
from asg_jax.models import aggregation, heads

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class VisionLanguageModel(nn.Module):
  """ASG / RECLF / MGCA / ConVIRT dual encoder.

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
    head = lambda: heads.ProjectionHead(cfg.head_hidden, cfg.embed_dim, dtype)  # noqa: E731
    self.image_global_head, self.image_local_head = head(), head()
    self.text_global_head, self.text_local_head = head(), head()
    if cfg.tag_decoder.enabled:
      from asg_jax.models import tag_decoder  # pylint: disable=import-outside-toplevel
      self.tag_decoder = tag_decoder.TagDecoder(
          num_layers=cfg.tag_decoder.num_layers, d_model=cfg.tag_decoder.d_model,
          num_heads=cfg.tag_decoder.num_heads, mlp_dim=cfg.tag_decoder.mlp_dim,
          dropout=cfg.tag_decoder.dropout, dtype=dtype)
    if cfg.local_head.mode:
      self.local_head = local_head_from_config(cfg.local_head, dtype)
    if cfg.get("num_prototypes", 0):   # MGCA's prototype layer (PyTorch Linear init, no bias)
      bound = cfg.embed_dim ** -0.5
      self.prototypes = self.param(
          "prototypes", lambda key, shape: jax.random.uniform(key, shape, jnp.float32, -bound,
                                                              bound),
          (cfg.num_prototypes, cfg.embed_dim))

  def encode_image(self, images: jax.Array, *, train: bool, local: bool = True
                   ) -> dict[str, jax.Array]:
    """`images` -> image_feature, patch_tokens, image_emb, patch_emb (`local=False`: no
    patch_emb, the local head does not run), and with `config.image.patch_importance` (a ViT)
    patch_importance `[B, M]`: the last block's [CLS]→patch attention, mean over heads.

    `images`: uint8 `[B,S,S,1|3]` pixels (the pre-training feed), normalised here on device
    with `config.input_normalization` (exactly the host's numbers, data/normalization.py),
    or float `[B,S,S,3]` already normalised (inference, transfer evaluators)."""
    cfg = self.config
    images = normalization.normalize_jax(images, cfg.get("input_normalization", "imagenet"))
    if cfg.image.input_resize:
      size = cfg.image.input_resize
      images = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]),
                                method="bilinear")
    encoded = self.image_encoder(images, train=train)
    image_feature, patch_tokens = registry.image_tower(cfg.image.name).features(encoded)
    out = {"image_feature": image_feature.astype(jnp.float32),
           "patch_tokens": patch_tokens.astype(jnp.float32)}
    out["image_emb"] = self.image_global_head(out["image_feature"], train=train)
    if local:
      out["patch_emb"] = self.image_local_head(out["patch_tokens"], train=train)
      if cfg.image.get("patch_importance", False):
        out["patch_importance"] = jnp.mean(encoded["attention"][:, :, 0, 1:], axis=1)
    return out

  def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array, word_ids: jax.Array,
                  *, train: bool, local: bool = True) -> dict[str, jax.Array]:
    """`[B,L]` token ids/mask/word ids -> text_feature, text_emb, word_emb, word_mask,
    word_importance (interfaces.md §3; `local=False`: only text_feature and text_emb)."""
    txt = self.text_encoder(input_ids, attention_mask, train=train)
    out = {"text_feature": txt["cls"].astype(jnp.float32)}
    out["text_emb"] = self.text_global_head(out["text_feature"], train=train)
    if not local:
      return out
    word_hidden, word_mask = aggregation.aggregate_words(txt["hidden"].astype(jnp.float32),
                                                         word_ids)
    word_emb = self.text_local_head(word_hidden, train=train, mask=word_mask)
    out["word_emb"] = word_emb * word_mask[..., None]
    out["word_mask"] = word_mask
    out["word_importance"] = aggregation.aggregate_importance(
        txt["attention"].astype(jnp.float32), word_ids, word_mask)
    return out

  def __call__(self, batch: Mapping[str, jax.Array], *, train: bool,
               tag_queries: jax.Array | None = None, local: bool = True
               ) -> dict[str, jax.Array]:
    """Args:
      batch: `image` (uint8 `[B,S,S,1]` or normalised float `[B,S,S,3]`),
        `input_ids/attention_mask/word_ids [B,L]` (interfaces.md §2).
      train: dropout on, BatchNorm in batch-statistics mode.
      tag_queries: `[T, Dq]` constant tag-phrase features (needed if the tag decoder is on).
      local: run the local heads (patch_emb, word_emb, word_mask, word_importance,
        patch_importance). The train step passes False when its objective reads none of them
        (ASG without ARSA, IRA alone: `objectives.needs_local_outputs`); their parameters
        exist either way.
    Returns:
      dict of named outputs (interfaces.md §3); with `config.num_prototypes` also the raw
      prototype weights `prototypes [K, E]` (MGCA; normalised by the loss and the train step).
    """
    if self.config.local_head.mode and not local:
      raise ValueError("the local-matching head needs the local outputs (local=True)")
    out = self.encode_image(batch["image"], train=train, local=local)
    out.update(self.encode_text(batch["input_ids"], batch["attention_mask"], batch["word_ids"],
                                train=train, local=local))
    if self.config.tag_decoder.enabled:
      if tag_queries is None:
        raise ValueError("the tag decoder is enabled but no tag_queries [T, D] were given")
      out["tag_logits"] = self.tag_decoder(out["patch_tokens"], tag_queries,
                                           train=train).astype(jnp.float32)
    if self.config.local_head.mode:
      out["local_logits"] = self.local_head(out["patch_emb"], out["word_emb"], out["word_mask"],
                                            out["word_importance"])
    if self.config.get("num_prototypes", 0):
      out["prototypes"] = self.prototypes
    return out


def local_head_from_config(cfg: ml_collections.ConfigDict, dtype=jnp.float32) -> nn.Module:
  """The RECLF / GLoRIA local-matching head named by `config.model.local_head`; `dtype`
  (the model's compute dtype) is its word–patch matmuls' operand dtype."""
  from asg_jax.models import relation  # pylint: disable=import-outside-toplevel
  return relation.LocalMatchingHead(
      mode=cfg.mode, use_srm=cfg.use_srm, use_irm=cfg.use_irm, srm_layers=cfg.srm_layers,
      srm_heads=cfg.srm_heads, srm_visual_context=cfg.srm_visual_context,
      srm_qk_dim=cfg.srm_qk_dim or None, irm_hidden=cfg.irm_hidden,
      importance_source=cfg.importance_source, detach_importance=cfg.detach_importance,
      attn_temperature=cfg.attn_temperature, gamma1=cfg.gamma1, gamma2=cfg.gamma2,
      pooling=cfg.pooling, word_softmax_first=cfg.word_softmax_first,
      block_size=cfg.block_size or None, remat=cfg.remat, shard=cfg.shard, dtype=dtype)


def frozen_model_config(config: ml_collections.ConfigDict) -> ml_collections.FrozenConfigDict:
  """`config.model` as a hashable FrozenConfigDict (a module attribute), plus
  `input_normalization` (= `config.data.normalization`: how uint8 pixels become the image
  tower's input)."""
  return ml_collections.FrozenConfigDict(
      dict(config.model.to_dict(), input_normalization=config.data.normalization))
