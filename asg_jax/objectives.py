"""Maps `config.loss` to a pure objective `(outputs, batch) -> (loss, measurements)`, and
builds the constants the model needs (the IRL tag queries)."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import losses


def retrieval_measurements(image_emb: jax.Array, text_emb: jax.Array) -> dict[str, jax.Array]:
  """In-batch retrieval top-1/top-5 (image→text, text→image and their mean).

  Args:
    image_emb, text_emb: `[B, D]`; pair i is (image i, report i).
  """
  sim = jnp.einsum("id,jd->ij", image_emb, text_emb)
  b = sim.shape[0]
  diag = jnp.diagonal(sim)
  # rank of the true pair = number of candidates scoring strictly higher
  rank_i2t = jnp.sum(sim > diag[:, None], axis=1)
  rank_t2i = jnp.sum(sim > diag[None, :], axis=0)
  out = {}
  for k in (1, 5):
    if k > b:
      continue
    i2t = jnp.mean(rank_i2t < k)
    t2i = jnp.mean(rank_t2i < k)
    out[f"i2t_top{k}"], out[f"t2i_top{k}"] = i2t, t2i
    out[f"top{k}"] = 0.5 * (i2t + t2i)
  return out


def make_objective(config: ml_collections.ConfigDict) -> Callable:
  """The objective named by `config.loss.name` (asg_jax/registry.py OBJECTIVES)."""
  from asg_jax import registry  # pylint: disable=import-outside-toplevel
  return registry.objective_factory(config.loss.name)(config)


def make_asg_objective(config: ml_collections.ConfigDict) -> Callable:
  """ASG (`loss.name = "asg"`, the `use_*` switches) or IRA alone (`"ira"`). The in-batch
  retrieval measurements come from the same (global or per-device) logits as the losses."""
  lc = config.loss
  grid = patch_grid(config)
  use = dict(use_ira=lc.use_ira, use_arsa=lc.use_arsa, use_irl=lc.use_irl, use_erl=lc.use_erl)
  if lc.name == "ira":
    use = dict(use_ira=True, use_arsa=False, use_irl=False, use_erl=False)

  def objective(outputs, batch):
    return losses.asg_objective(
        outputs, batch, weights=(lc.w_ira, lc.w_arsa, lc.w_irl, lc.w_erl),
        temperature=lc.temperature, mix=lc.soft_mix, grid=grid,
        input_size=config.data.image_size, global_batch=lc.global_batch, **use)
  return objective


def make_reclf_objective(config: ml_collections.ConfigDict) -> Callable:
  """RECLF (`loss.name = "reclf"`) or its GLoRIA baseline (`"gloria"`)."""
  lc = config.loss

  def objective(outputs, batch):
    loss, measurements = losses.reclf_objective(
        outputs, batch, beta=lc.beta, temperature=lc.temperature,
        local_temperature=lc.local_temperature, lambda_local=lc.lambda_local,
        label_source=lc.label_source, gloria=lc.name == "gloria", gamma3=lc.gamma3,
        semantic_local=lc.semantic_local)
    measurements = dict(measurements)
    measurements.update(retrieval_measurements(outputs["image_emb"], outputs["text_emb"]))
    return loss, measurements
  return objective


def needs_local_outputs(config: ml_collections.ConfigDict) -> bool:
  """Whether the training objective reads the local outputs (patch_emb, word_emb, ...):
  ARSA and the RECLF / GLoRIA local branch do; IRA, ERL and IRL do not."""
  lc = config.loss
  if lc.name in ("reclf", "gloria") or config.model.local_head.mode:
    return True
  return lc.name == "asg" and bool(lc.use_arsa)


def patch_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """`(gh, gw)`: the static local-feature grid of the image tower for the configured input
  (the tower module's own `patch_grid`)."""
  from asg_jax import registry  # pylint: disable=import-outside-toplevel
  return registry.image_tower(config.model.image.name).patch_grid(config.model.image,
                                                                  config.data.image_size)


def tag_phrases() -> list[str]:
  """The 40 ASG tag phrases, in label order (vocab.json `asg_tags_40`)."""
  from asg_jax.data.reports import TAGS  # pylint: disable=import-outside-toplevel
  return list(TAGS)


TAG_QUERY_RNG = "tag_query_rng"   # constants entry: the key data of the random frozen tower


def query_phrase(name: str) -> str:
  """A class name as a tag-decoder query phrase: `"Pleural_Thickening"` -> `"pleural
  thickening"` (lower case, `\\w+` ASCII tokens without underscores, joined by spaces);
  the 40 tag phrases map to themselves."""
  from asg_jax.data.reports import cleaning  # pylint: disable=import-outside-toplevel
  return " ".join(cleaning.ascii_tokens(name.replace("_", " ")))


def tag_query_encoder(config: ml_collections.ConfigDict, tokenizer, rng: jax.Array | None
                      ) -> Callable[[Sequence[str]], np.ndarray]:
  """`phrases -> [K, Dt]` float32 [CLS] features of the FROZEN, FULL-depth copy of the text
  tower that makes the IRL tag queries (asg.md): the pretrained checkpoint
  (`config.model.text.pretrained`) when configured, else the fixed random init from `rng`.
  Phrases are tokenised by `tokenizer` as given (the training tokenizer; `query_phrase`
  makes a class name one). The same function made the training tags' `tag_queries`, so any
  new class name is embedded exactly as they were.
  """
  from asg_jax import registry  # pylint: disable=import-outside-toplevel
  encoder = registry.text_tower(config.model.text.name).build(
      config.model.text, jnp.float32, use_layers=None, name=None)
  probe = tokenizer.encode_batch(tag_phrases()[:1])
  ids1, mask1 = jnp.asarray(probe["input_ids"]), jnp.asarray(probe["attention_mask"])
  if config.model.text.pretrained:
    from asg_jax.models import checkpoint_convert  # pylint: disable=import-outside-toplevel
    shapes = jax.eval_shape(lambda r: encoder.init(r, ids1, mask1, train=False),
                            jax.random.PRNGKey(0))
    params = checkpoint_convert.load_bert(config.model.text.pretrained, shapes["params"])
  else:
    if rng is None:
      raise ValueError("the frozen tag-query tower is a random init: its rng is needed")
    from asg_jax import state as state_lib  # pylint: disable=import-outside-toplevel
    params = state_lib.run_once(lambda r: encoder.init(r, ids1, mask1, train=False)["params"],
                                rng)
  cls = jax.jit(lambda p, i, m: encoder.apply({"params": p}, i, m, train=False)["cls"])
  bucket = len(tag_phrases())   # batches padded to a multiple of 40: one compiled shape

  def encode(phrases: Sequence[str]) -> np.ndarray:
    phrases = list(phrases)
    if not phrases:
      raise ValueError("no phrase to embed")
    size = -(-len(phrases) // bucket) * bucket
    tokens = tokenizer.encode_batch(phrases + [phrases[-1]] * (size - len(phrases)))
    out = cls(params, jnp.asarray(tokens["input_ids"]), jnp.asarray(tokens["attention_mask"]))
    return np.asarray(out, np.float32)[:len(phrases)]
  return encode


def rng_data(rng: jax.Array) -> np.ndarray:
  """uint32 key data of a PRNG key (raw `PRNGKey` arrays or typed `jax.random.key`s)."""
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return np.asarray(jax.device_get(rng), np.uint32)


def make_constants(config: ml_collections.ConfigDict, tokenizer, rng: jax.Array) -> dict:
  """Constants of the train/eval steps (replicated, not optimised).

  `tag_queries [40, Dt]`: the [CLS] features of the tag phrases from a FROZEN, FULL-depth
  copy of the text tower (the pretrained checkpoint when configured, else a fixed random
  init from `rng`), computed once here, outside the train step (asg.md, IRL).
  `tag_query_rng` (uint32 key data of `rng`): with the config and the tokenizer, what
  `tag_query_encoder` needs to embed NEW class names as queries later (inference,
  zero-shot); the step does not read it.
  """
  if not config.model.tag_decoder.enabled:
    return {}
  encode = tag_query_encoder(config, tokenizer, rng)
  return {"tag_queries": encode(tag_phrases()), TAG_QUERY_RNG: rng_data(rng)}
