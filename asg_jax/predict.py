"""The model's functions, built once per model — the only place that jits the image and text
encoders, the tag-decoder logits and the word–patch heat map. train.py builds them for the
pre-training evaluators, `inference.Pretrained` for a workdir, and the transfer runner
(asg_jax/transfer/run.py) uses the Pretrained's.

    fns = make_predict_fns(model, tokenizer, config, objective=..., constants=...)
    fns.outputs(variables, batch, constants)  # traceable: the model's named outputs (§3)
    fns.objective(outputs, batch)             # traceable: (loss, measurements)
    fns.encode_images(state, images)          # images f32 [N, S, S, 3] -> image_feature
                                              #   [N, Dv], image_emb [N, E], patch_emb
                                              #   [N, M, E], patch_tokens [N, M, Dv]
    fns.encode_texts(state, tokens)           # input_ids / attention_mask / word_ids [K, L]
                                              #   -> text_emb [K, E], word_emb [K, L', E],
                                              #   word_mask [K, L'], word_importance [K, L']
    fns.embed_texts(state, texts)             # K strings -> [K, E]
    fns.heatmap(state, image, tokens)         # [1, S, S, 3] + one text -> [gh, gw]
    fns.tag_logits(state, images)             # -> [N, 40] (None without a tag decoder)
    fns.class_tag_logits(names)               # -> fn(state, images) -> [N, K] any class names
    fns.info                                  # ModelInfo: what an evaluator may know

`state` is anything with `.params` and `.batch_stats` (a TrainState, a transfer state), or
the variables dict itself.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import registry
from asg_jax.models import tag_queries as tq


@dataclasses.dataclass(frozen=True)
class ModelInfo:
  """What an evaluator may know of the model it evaluates (not the whole config).

  image: `config.model.image` (the tower's name and settings, to build a head on it);
  dtype: `config.model.dtype`; image_size / resize / normalization: the input geometry of
  training (`config.data`); patch_grid: `(gh, gw)` of the local features; tower: "vit" or
  "cnn" (the results.md column)."""
  image: ml_collections.FrozenConfigDict
  dtype: str
  image_size: int
  resize: int
  normalization: str
  patch_grid: tuple[int, int]
  tower: str

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ModelInfo":
    image, dc = config.model.image, config.data
    grid = registry.image_tower(image.name).patch_grid(image, dc.image_size)
    return cls(image=ml_collections.FrozenConfigDict(image), dtype=str(config.model.dtype),
               image_size=int(dc.image_size), resize=int(dc.resize),
               normalization=str(dc.normalization), patch_grid=tuple(grid),
               tower="vit" if image.name == "vit" else "cnn")

  @property
  def geometry(self) -> dict:
    """The keyword arguments of `data.geometry.transform` for this model's input."""
    return {"resize": self.resize, "image_size": self.image_size,
            "normalization": self.normalization}


@dataclasses.dataclass(frozen=True)
class PredictFns:
  """See the module docstring."""
  info: ModelInfo
  outputs: Callable
  objective: Callable | None
  encode_images: Callable
  encode_texts: Callable
  embed_texts: Callable
  heatmap: Callable
  tag_logits: Callable | None = None
  class_tag_logits: Callable | None = None
  tag_queries: tq.TagQueries | None = None


def variables_of(state) -> dict:
  """The variables dict of a state (`.params`, `.batch_stats`) or of a variables dict."""
  if isinstance(state, Mapping):
    return {"params": state["params"], "batch_stats": state.get("batch_stats", {})}
  return {"params": state.params, "batch_stats": state.batch_stats}


def make_predict_fns(model, tokenizer, config: ml_collections.ConfigDict, *,
                     objective: Callable | None = None,
                     constants: Mapping[str, Any] | None = None, source: str = "") -> PredictFns:
  """See the module docstring. `constants`: host constants with `tag_queries` (and
  `tag_query_rng`) -> the tag functions; `source`: the workdir, for messages."""

  def outputs(variables, batch, constants):
    return model.apply(variables, batch, train=False, tag_queries=constants.get("tag_queries"))

  encode_image = jax.jit(lambda v, x: model.apply(v, x, train=False, method="encode_image"))
  encode_text = jax.jit(lambda v, i, m, w: model.apply(v, i, m, w, train=False,
                                                       method="encode_text"))
  text_emb = jax.jit(lambda v, i, m, w: model.apply(v, i, m, w, train=False,
                                                    method="encode_text")["text_emb"])

  def encode_images(state, images) -> dict:
    return encode_image(variables_of(state), jnp.asarray(images))

  def token_arrays(tokens: Mapping[str, np.ndarray]) -> tuple:
    return tuple(jnp.asarray(tokens[k]) for k in ("input_ids", "attention_mask", "word_ids"))

  def encode_texts(state, tokens: Mapping[str, np.ndarray]) -> dict:
    return encode_text(variables_of(state), *token_arrays(tokens))

  def embed_texts(state, texts: Sequence[str]):
    return text_emb(variables_of(state), *token_arrays(tokenizer.encode_batch(list(texts))))

  info = ModelInfo.from_config(config)

  @jax.jit
  def heat(variables, image, input_ids, attention_mask, word_ids):
    patches = model.apply(variables, image, train=False, method="encode_image")["patch_emb"][0]
    text = model.apply(variables, input_ids, attention_mask, word_ids, train=False,
                       method="encode_text")
    words, mask = text["word_emb"][0], text["word_mask"][0]                 # [N, E], [N]
    sim = jnp.einsum("me,ne->mn", patches, words)                           # [M, N]
    mean = jnp.sum(jnp.where(mask[None], sim, 0.0), -1) / jnp.maximum(jnp.sum(mask), 1)
    return mean.reshape(info.patch_grid)

  def heatmap(state, image, tokens: Mapping[str, np.ndarray]):
    return heat(variables_of(state), jnp.asarray(image), *token_arrays(tokens))

  fns = dict(info=info, outputs=outputs, objective=objective, encode_images=encode_images,
             encode_texts=encode_texts, embed_texts=embed_texts, heatmap=heatmap)
  constants = constants or {}
  if config.model.tag_decoder.enabled and "tag_queries" in constants:
    queries = tq.TagQueries(config, tokenizer, constants, source)
    saved = jnp.asarray(queries.saved)
    tags = jax.jit(lambda v, x: tq.decoder_logits(
        model, v, model.apply(v, x, train=False, method="encode_image")["patch_tokens"], saved))
    scorer = jax.jit(tq.slot_scorer(model, saved))

    def class_tag_logits(names: Sequence[str]):
      """`fn(state, images f32 [N, S, S, 3]) -> [N, K]` logits of class `names` (queries
      embedded once here; one compiled scorer for any K up to a multiple of 8)."""
      q, s = queries.for_names(list(names))
      padded, k = tq.pad_queries(q, s), len(s)

      def fn(state, images):
        variables = variables_of(state)
        patches = encode_image(variables, jnp.asarray(images))["patch_tokens"]
        return scorer(variables, patches, *padded)[:, :k]
      return fn

    fns.update(tag_logits=lambda state, images: tags(variables_of(state), jnp.asarray(images)),
               class_tag_logits=class_tag_logits, tag_queries=queries)
  return PredictFns(**fns)
