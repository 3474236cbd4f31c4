"""The IRL tag-decoder queries (asg.md, IRL), all in one place: how they are made for the 40
training tags, how any other class name becomes one, and how the decoder reads them.

Making them: the [CLS] features of the tag phrases from a FROZEN, FULL-depth copy of the text
tower (`query_encoder`: the pretrained checkpoint `config.model.text.pretrained` when set,
else a fixed random init from an rng saved as `TAG_QUERY_RNG`), computed once outside the
train step (`make_constants`).

Any class name (KAD protocol, `TagQueries.for_names`): a name is embedded by that same frozen
tower (rebuilt from the config, the tokenizer and the saved rng, and checked to reproduce
the saved 40 queries). The decoder's head is one classifier PER TAG (`TagDecoder`, asg.md "a
Linear(768, 1) per query"), so a new name takes the SLOT of its nearest training tag (cosine
of the frozen [CLS] queries): the decoder runs on the 40 queries with that tag's query
replaced by the new one, and the new name's logit is that slot's output (`slot_scorer`). A
name equal to a tag phrase is that tag's query (its slot unchanged).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import registry
from asg_jax import state as state_lib
from asg_jax.data.reports import TAGS, cleaning

TAG_QUERY_RNG = "tag_query_rng"   # constants entry: the key data of the random frozen tower


class NoQueryEncoder(ValueError):
  """New class names cannot be embedded as tag queries (the reason is the message)."""


def tag_phrases() -> list[str]:
  """The 40 ASG tag phrases, in label order (vocab.json `asg_tags_40`)."""
  return list(TAGS)


def query_phrase(name: str) -> str:
  """A class name as a tag-decoder query phrase: `"Pleural_Thickening"` -> `"pleural
  thickening"` (lower case, `\\w+` ASCII tokens without underscores, joined by spaces);
  the 40 tag phrases map to themselves."""
  return " ".join(cleaning.ascii_tokens(name.replace("_", " ")))


# ------------------------------------------------------------------------ making queries

def query_encoder(config: ml_collections.ConfigDict, tokenizer, rng: jax.Array | None
                  ) -> Callable[[Sequence[str]], np.ndarray]:
  """`phrases -> [K, Dt]` float32 [CLS] features of the FROZEN, FULL-depth copy of the text
  tower that makes the tag queries: the pretrained checkpoint (`config.model.text.pretrained`)
  when configured, else the fixed random init from `rng`. Phrases are tokenised by
  `tokenizer` as given (the training tokenizer; `query_phrase` makes a class name one)."""
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
  """Constants of the train/eval steps (replicated, not optimised): `tag_queries [40, Dt]`
  (module docstring) and `tag_query_rng` (uint32 key data of `rng`: with the config and the
  tokenizer, what `query_encoder` needs to embed NEW class names later; the step does not
  read it). `{}` without a tag decoder."""
  if not config.model.tag_decoder.enabled:
    return {}
  encode = query_encoder(config, tokenizer, rng)
  return {"tag_queries": encode(tag_phrases()), TAG_QUERY_RNG: rng_data(rng)}


# ------------------------------------------------------------------------ reading queries

def decoder_logits(model, variables, patch_tokens: jax.Array, queries: jax.Array) -> jax.Array:
  """Traceable: the tag decoder of `model` on `patch_tokens [B, M, Dv]` and `queries
  [T, Dq]` -> logits `[B, T]`."""
  return model.apply(variables, patch_tokens, queries, train=False,
                     method=lambda m, p, q, train: m.tag_decoder(p, q, train=train))


def nearest_tag_slots(queries: np.ndarray, tag_queries: np.ndarray) -> np.ndarray:
  """int32 `[K]`: for each query `[K, Dq]` the training tag (row of `tag_queries [T, Dq]`)
  with the highest cosine similarity (the slot it takes in the decoder)."""
  def unit(x):
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
  return np.argmax(unit(queries) @ unit(tag_queries).T, axis=-1).astype(np.int32)


def pad_queries(queries: np.ndarray, slots: np.ndarray, multiple: int = 8
                ) -> tuple[np.ndarray, np.ndarray]:
  """Queries `[K, Dq]` and slots `[K]` padded (zero queries, slot 0) to a multiple of
  `multiple` rows, so that the jitted scorer compiles once for any small K; the scores'
  first K columns are the real ones."""
  k = len(slots)
  size = -(-k // multiple) * multiple
  q = np.zeros((size, queries.shape[1]), np.float32)
  q[:k] = queries
  s = np.zeros(size, np.int32)
  s[:k] = slots
  return q, s


def slot_scorer(model, tag_queries):
  """Traceable `(variables, patch_tokens [B, M, Dv], queries [K, Dq], slots [K]) -> [B, K]`:
  per query k the decoder on the training queries with row `slots[k]` replaced by query k,
  read at that slot (module docstring). One decoder pass per query, vmapped."""
  base = jnp.asarray(tag_queries, jnp.float32)

  def score(variables, patch_tokens, queries, slots):
    def one(q, s):
      return decoder_logits(model, variables, patch_tokens, base.at[s].set(q))[:, s]   # [B]
    return jax.vmap(one, out_axes=1)(jnp.asarray(queries, jnp.float32),
                                     jnp.asarray(slots, jnp.int32))      # [B, K]
  return score


class TagQueries:
  """The queries of one trained model: the saved 40 and, on demand, any class name's.

  `constants`: the workdir's constants (`tag_queries`, and `tag_query_rng` when the frozen
  tower is a random init); `source`: the workdir, for messages."""

  def __init__(self, config: ml_collections.ConfigDict, tokenizer,
               constants: Mapping[str, np.ndarray], source: str = ""):
    self.config, self.tokenizer, self.constants = config, tokenizer, constants
    self.saved = np.asarray(constants["tag_queries"], np.float32)          # [40, Dq]
    self.source = source
    self._encoder = None

  def encoder(self) -> Callable[[Sequence[str]], np.ndarray]:
    """`phrases -> [K, Dq]`: the frozen tower that made the saved queries, rebuilt (once) and
    checked against them. Raises NoQueryEncoder naming why it cannot be rebuilt."""
    if self._encoder is not None:
      return self._encoder
    where = self.source or "this model"
    text = self.config.model.text
    if not text.pretrained and TAG_QUERY_RNG not in self.constants:
      raise NoQueryEncoder(
          f"{where}: the saved constants have the 40 training tags' queries but no "
          f"`{TAG_QUERY_RNG}` (written before new class names could be queried), so only "
          "the 40 tag phrases (vocab.json asg_tags_40) can be queried; retrain to query "
          "other names")
    rng = self.constants.get(TAG_QUERY_RNG)
    try:
      encode = query_encoder(self.config, self.tokenizer,
                             None if rng is None else jnp.asarray(rng, jnp.uint32))
    except (OSError, ValueError, KeyError) as e:
      raise NoQueryEncoder(f"{where}: the frozen query tower {text.pretrained!r} cannot be "
                           f"loaded ({type(e).__name__}: {e}); only the 40 tag phrases can "
                           "be queried") from e
    again = encode(tag_phrases())
    err = (float(np.max(np.abs(again - self.saved))) if again.shape == self.saved.shape
           else float("inf"))
    if not err <= 1e-4 * max(1.0, float(np.max(np.abs(self.saved)))):
      raise NoQueryEncoder(f"{where}: the rebuilt frozen query tower does not reproduce the "
                           f"saved tag queries (max |difference| {err:.3g}): another "
                           f"checkpoint at {text.pretrained!r} or another tokenizer?")
    self._encoder = encode
    return encode

  def for_names(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(`[K, Dq]` queries, `[K]` slots) of class names (`query_phrase`): a tag phrase gets
    its saved query and its own slot, another name its frozen-tower embedding and its
    nearest tag's slot. Raises NoQueryEncoder for a new name the model cannot embed."""
    if isinstance(names, str):
      names = [names]
    phrases = [query_phrase(n) for n in names]
    if not phrases or any(not p for p in phrases):
      raise ValueError(f"tag queries need non-empty class names, got {list(names)}")
    tags = tag_phrases()
    queries = np.zeros((len(phrases), self.saved.shape[1]), np.float32)
    new = [i for i, p in enumerate(phrases) if p not in tags]
    for i, p in enumerate(phrases):
      if p in tags:
        queries[i] = self.saved[tags.index(p)]
    if new:
      queries[new] = self.encoder()([phrases[i] for i in new])
    slots = nearest_tag_slots(queries, self.saved)
    for i, p in enumerate(phrases):
      if p in tags:
        slots[i] = tags.index(p)
    return queries, slots
