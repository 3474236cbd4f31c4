"""The named predict functions every evaluator shares (evaluators/common.py), built once per
model: by train.py during pre-training, by evaluate.py / inference.py from a workdir.

    fns = make_predict_fns(model, objective, tokenizer, config)
    fns["outputs"](variables, batch, constants)   # traceable: the model's named outputs (§3)
    fns["objective"](outputs, batch)               # traceable: (loss, measurements)
    fns["encode_images"](state, images)            # jitted: images f32 [N, S, S, 3] ->
                                                   #   image_feature [N, Dv], image_emb [N, E],
                                                   #   patch_emb [N, M, E]
    fns["embed_texts"](state, texts)               # jitted: list of K strings -> [K, E]
    fns["config"], fns["tokenizer"]

`state` is anything with `.params` and `.batch_stats` (a TrainState, or the variables
restored by inference).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections


def make_predict_fns(model, objective: Callable | None, tokenizer,
                     config: ml_collections.ConfigDict) -> dict[str, Any]:
  """See the module docstring."""

  def outputs(variables, batch, constants):
    return model.apply(variables, batch, train=False, tag_queries=constants.get("tag_queries"))

  encode_image = jax.jit(lambda v, x: model.apply(v, x, train=False, method="encode_image"))
  encode_text = jax.jit(lambda v, i, m, w: model.apply(
      v, i, m, w, train=False, method="encode_text")["text_emb"])

  def variables_of(state) -> dict:
    return {"params": state.params, "batch_stats": state.batch_stats}

  def encode_images(state, images) -> dict:
    out = encode_image(variables_of(state), jnp.asarray(images))
    return {k: out[k] for k in ("image_feature", "image_emb", "patch_emb")}

  def embed_texts(state, texts: Sequence[str]):
    tokens = tokenizer.encode_batch(list(texts))
    return encode_text(variables_of(state), jnp.asarray(tokens["input_ids"]),
                       jnp.asarray(tokens["attention_mask"]), jnp.asarray(tokens["word_ids"]))

  return {"outputs": outputs, "objective": objective, "encode_images": encode_images,
          "embed_texts": embed_texts, "config": config, "tokenizer": tokenizer}
