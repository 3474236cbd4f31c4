"""A small inference API over a trained workdir (in the spirit of GLoRIA / BioViL).

    from asg_jax.inference import Pretrained
    model = Pretrained.from_workdir("workdir/demo")            # best checkpoint
    v = model.embed_images(images)                             # [N, E], L2-normalised
    t = model.embed_texts(["small left pleural effusion"])     # [K, E]
    model.similarity(images, texts)                            # [N, K] cosine similarities
    model.zero_shot(images, {"effusion": ["pleural effusion"], "normal": ["no acute process"]})
    model.tag_probabilities(images)                            # [N, 40] (IRL decoder)
    model.tag_probabilities(images, ["pneumonia", "Fibrosis"])  # [N, 2]: any class names
    model.zero_shot(images, {"fibrosis": [], "effusion": ["pleural effusion"]}, protocol="tags")
    model.heatmap(image, "left lower lobe opacity")            # [gh, gw] word–patch map

`images` are uint8 arrays `[H, W]`, `[H, W, 1]` or `[H, W, 3]` of any size (a list, or one
stacked array): they go through the evaluation geometry of training (longest side to
`config.data.resize`, zero pad, centre crop `config.data.image_size`, the configured
normalisation). Texts are cleaned like training captions (lower case, `\\w+` tokens).

Tag-decoder queries for NEW class names (KAD protocol): a name is embedded by the same frozen,
full-depth text tower that made the 40 training tags' queries (`objectives.tag_query_encoder`:
the pretrained checkpoint `config.model.text.pretrained`, else the random init of the
`tag_query_rng` saved in constants.npz, with the workdir's tokenizer), rebuilt on first use and
checked to reproduce the saved 40 queries. The decoder's head is one classifier PER TAG
(`TagDecoder`, asg.md "a Linear(768, 1) per query"), so a new name takes the SLOT of its
nearest training tag (cosine of the frozen [CLS] queries): the decoder runs on the 40 queries
with that tag's query replaced by the new one, and the new name's logit is that slot's output.
A name equal to a tag phrase is that tag's query (the slot is unchanged): its logit is the
tag's. Workdirs written before `tag_query_rng` was saved (random-init query tower) still load;
only the 40 tag phrases can be queried there (`NoQueryEncoder` names the reason).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import objectives
from asg_jax import workdir as workdir_lib
from asg_jax.models import vlp

CONSTANTS_FILE = workdir_lib.CONSTANTS_FILE
TOKENIZER_FILE = workdir_lib.TOKENIZER_FILE


class NoQueryEncoder(ValueError):
  """New class names cannot be embedded as tag queries (the reason is the message)."""


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


def tag_scorer(model, tag_queries):
  """Traceable `(variables, patch_tokens [B, M, Dv], queries [K, Dq], slots [K]) -> [B, K]`:
  per query k the decoder on the training queries with row `slots[k]` replaced by query k,
  read at that slot (module docstring). One decoder pass per query, vmapped."""
  base = jnp.asarray(tag_queries, jnp.float32)

  def score(variables, patch_tokens, queries, slots):
    def one(q, s):
      sets = base.at[s].set(q)
      logits = model.apply(variables, patch_tokens, sets, train=False,
                           method=lambda m, p_, q_, train: m.tag_decoder(p_, q_, train=train))
      return logits[:, s]                                               # [B]
    return jax.vmap(one, out_axes=1)(jnp.asarray(queries, jnp.float32),
                                     jnp.asarray(slots, jnp.int32))      # [B, K]
  return score


def dummy_batch(config: ml_collections.ConfigDict, batch_size: int = 2) -> dict[str, np.ndarray]:
  """The model inputs (interfaces.md §2) of `batch_size` blank examples, for shapes."""
  s, length = config.data.image_size, config.data.max_length
  word_ids = -np.ones((batch_size, length), np.int32)
  word_ids[:, 1] = 0
  mask = np.zeros((batch_size, length), np.int32)
  mask[:, :2] = 1
  return {"image": np.zeros((batch_size, s, s, 3), np.float32),
          "input_ids": np.zeros((batch_size, length), np.int32),
          "attention_mask": mask, "word_ids": word_ids}


def caption_of(text: str) -> str:
  """A free text cleaned like the training captions (data.md): lower case, `\\w+` ASCII
  tokens joined by spaces. `"Small L. effusion!"` -> `"small l effusion"`."""
  from asg_jax.data.reports import cleaning  # pylint: disable=import-outside-toplevel
  return " ".join(cleaning.ascii_tokens(text))


class Pretrained:
  """A trained dual encoder with its tokenizer and constants, ready for inference."""

  def __init__(self, config: ml_collections.ConfigDict, variables: dict, tokenizer,
               constants: Mapping[str, np.ndarray] | None = None):
    self.config = config
    self.variables = variables
    self.tokenizer = tokenizer
    self.constants = dict(constants or {})
    self.model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
    self._encode_image = jax.jit(lambda v, x: self.model.apply(
        v, x, train=False, method="encode_image"))
    self._encode_text = jax.jit(lambda v, i, m, w: self.model.apply(
        v, i, m, w, train=False, method="encode_text"))
    self._tag_logits = self._tag_scorer = self._query_encoder = None
    self.source = ""   # the workdir, for messages
    if config.model.tag_decoder.enabled and "tag_queries" in self.constants:
      queries = jnp.asarray(self.constants["tag_queries"])
      self._tag_logits = jax.jit(lambda v, p: self.model.apply(
          v, p, queries, train=False,
          method=lambda m, p_, q_, train: m.tag_decoder(p_, q_, train=train)))
      self._tag_scorer = jax.jit(tag_scorer(self.model, queries))

  # ------------------------------------------------------------------------ loading
  @classmethod
  def from_workdir(cls, workdir: str, *, checkpoint: str = "best", tokenizer=None
                   ) -> "Pretrained":
    """Loads `<workdir>/config.json`, the `best` (or `latest`) checkpoint, the tokenizer
    (`<workdir>/tokenizer.json` unless one is given) and the constants of training.

    Raises:
      FileNotFoundError: naming the missing file or checkpoint folder.
    """
    from asg_jax import checkpoints, state as state_lib  # pylint: disable=import-outside-toplevel
    config = workdir_lib.read_config(workdir)
    if tokenizer is None:
      from asg_jax.data.reports import tokenization  # pylint: disable=import-outside-toplevel
      path = os.path.join(workdir, TOKENIZER_FILE)
      if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found (written by training); pass tokenizer=")
      tokenizer = tokenization.load_tokenizer(path, config.data.max_length,
                                              config.data.lower_case)
    constants = workdir_lib.read_constants(workdir)
    if checkpoint not in ("best", "latest"):
      raise ValueError(f"checkpoint={checkpoint!r}; expected 'best' or 'latest'")
    model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
    abstract = state_lib.abstract_variables(model, dummy_batch(config), constants)
    manager = checkpoints.Manager(workdir, keep=1_000_000, read_only=True)
    if checkpoint == "best" and not manager.has_best():
      print(f"No best checkpoint in {manager.best_directory} (no validation metric was "
            f"recorded): loading the latest checkpoint instead.", flush=True)
      checkpoint = "latest"
    variables, _ = manager.restore_model(abstract, checkpoint)
    out = cls(config, variables, tokenizer, constants)
    out.source = workdir
    if (config.model.tag_decoder.enabled and not config.model.text.pretrained
        and "tag_queries" in constants and objectives.TAG_QUERY_RNG not in constants):
      print(f"{os.path.join(workdir, CONSTANTS_FILE)} predates `{objectives.TAG_QUERY_RNG}`: "
            "the tag decoder answers the 40 training tags only (new class names need the "
            "frozen query tower's rng; retrain to get it).", flush=True)
    return out

  # ------------------------------------------------------------------------ inputs
  def preprocess_images(self, images) -> np.ndarray:
    """uint8 images of any size -> float32 `[N, S, S, 3]` (evaluation geometry)."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from asg_jax.data import geometry  # pylint: disable=import-outside-toplevel
    dc = self.config.data
    if isinstance(images, np.ndarray) and images.ndim in (2, 3) and (
        images.ndim == 2 or images.shape[-1] not in (1, 3)):
      images = [images]                     # one image [H, W] / [H, W, C>3 impossible]
    out = []
    for i, image in enumerate(images):
      image = np.asarray(image)
      if image.dtype != np.uint8:
        raise ValueError(f"image {i}: expected uint8 pixels, got {image.dtype}")
      if image.ndim == 2:
        image = image[..., None]
      if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image {i}: expected [H, W], [H, W, 1] or [H, W, 3], got "
                         f"{image.shape}")
      if image.shape[-1] == 3:
        image = np.round(image.astype(np.float32).mean(-1, keepdims=True)).astype(np.uint8)
      x, _, _ = geometry.transform(tf.constant(image), tf.zeros((0, 4), tf.float32),
                                   resize=dc.resize, image_size=dc.image_size, train=False,
                                   normalization=dc.normalization)
      out.append(x.numpy())
    return np.stack(out)

  def tokenize(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """Cleaned, tokenised texts: `input_ids`, `attention_mask`, `word_ids` `[K, L]`."""
    if isinstance(texts, str):
      texts = [texts]
    tokens = self.tokenizer.encode_batch([caption_of(t) for t in texts])
    return {k: np.asarray(tokens[k]) for k in ("input_ids", "attention_mask", "word_ids")}

  # ------------------------------------------------------------------------ embeddings
  def image_outputs(self, images) -> dict[str, np.ndarray]:
    """`image_emb [N,E]`, `patch_emb [N,M,E]`, `image_feature`, `patch_tokens`."""
    x = jnp.asarray(self.preprocess_images(images))
    return jax.device_get(self._encode_image(self.variables, x))

  def text_outputs(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """`text_emb [K,E]`, `word_emb [K,N,E]`, `word_mask [K,N]`, `word_importance [K,N]`."""
    t = self.tokenize(texts)
    return jax.device_get(self._encode_text(self.variables, t["input_ids"],
                                            t["attention_mask"], t["word_ids"]))

  def embed_images(self, images) -> np.ndarray:
    """`[N, E]` L2-normalised global image embeddings."""
    return self.image_outputs(images)["image_emb"]

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    """`[K, E]` L2-normalised global report embeddings."""
    return self.text_outputs(texts)["text_emb"]

  def similarity(self, images, texts: Sequence[str]) -> np.ndarray:
    """`[N, K]` cosine similarity of every image with every text."""
    return self.embed_images(images) @ self.embed_texts(texts).T

  def zero_shot(self, images, class_prompts: Mapping[str, Sequence[str]] | Sequence[str],
                temperature: float | None = None, protocol: str = "prompt"
                ) -> tuple[list[str], np.ndarray]:
    """Zero-shot classification.

    protocol "prompt" (GLoRIA/MGCA): each class is the re-normalised mean embedding of its
      prompts; probabilities are a softmax over classes of cosine / τ (τ =
      `config.loss.temperature` by default).
    protocol "tags" (ASG / KAD): the IRL tag decoder queried with each class's phrases (its
      name when its list is empty, or when `class_prompts` is a list of names), any names
      (module docstring); a class's probability is the sigmoid of the mean logit of its
      phrases, independently per class (multi-label; rows do not sum to 1).
    Returns:
      (class names, `[N, C]` probabilities).
    """
    if protocol not in ("prompt", "tags"):
      raise ValueError(f"protocol={protocol!r}; expected 'prompt' or 'tags'")
    if isinstance(class_prompts, str):
      class_prompts = [class_prompts]
    if not isinstance(class_prompts, Mapping):
      class_prompts = {n: [] for n in class_prompts}
    names = list(class_prompts)
    if not names:
      raise ValueError("zero_shot needs at least one class")
    if protocol == "tags":
      phrases, owner = [], []
      for c, name in enumerate(names):
        own = list(class_prompts[name]) or [name]
        phrases += own
        owner += [c] * len(own)
      logits = self.tag_logits(images, phrases)                          # [N, P]
      owner = np.asarray(owner)
      mean = np.stack([logits[:, owner == c].mean(-1) for c in range(len(names))], -1)
      return names, 1.0 / (1.0 + np.exp(-mean))
    protos = []
    for name in names:
      prompts = list(class_prompts[name])
      if not prompts:
        raise ValueError(f"class {name!r} has no prompt")
      emb = self.embed_texts(prompts).mean(0)
      protos.append(emb / max(np.linalg.norm(emb), 1e-12))
    logits = self.embed_images(images) @ np.stack(protos).T
    logits = logits / (temperature or self.config.loss.temperature)
    logits = logits - logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    return names, probs / probs.sum(-1, keepdims=True)

  # ------------------------------------------------------------------- tag decoder
  def _need_tag_decoder(self) -> None:
    if self._tag_logits is None:
      raise ValueError("this model has no tag decoder (config.model.tag_decoder.enabled) or "
                       f"no {CONSTANTS_FILE} with its tag queries")

  def tag_query_encoder(self):
    """`phrases -> [K, Dq]`: the frozen tower that made the training tag queries, rebuilt
    (once) from the config, the tokenizer and `tag_query_rng` and checked against the saved
    queries. Raises NoQueryEncoder naming why it cannot be rebuilt."""
    self._need_tag_decoder()
    if self._query_encoder is not None:
      return self._query_encoder
    where = self.source or "this model"
    text = self.config.model.text
    if not text.pretrained and objectives.TAG_QUERY_RNG not in self.constants:
      raise NoQueryEncoder(
          f"{where}: {CONSTANTS_FILE} has the 40 training tags' queries but no "
          f"`{objectives.TAG_QUERY_RNG}` (written before new class names could be queried), "
          "so only the 40 tag phrases (vocab.json asg_tags_40) can be queried; retrain to "
          "query other names")
    rng = self.constants.get(objectives.TAG_QUERY_RNG)
    try:
      encode = objectives.tag_query_encoder(
          self.config, self.tokenizer, None if rng is None else jnp.asarray(rng, jnp.uint32))
    except (OSError, ValueError, KeyError) as e:
      raise NoQueryEncoder(f"{where}: the frozen query tower {text.pretrained!r} cannot be "
                           f"loaded ({type(e).__name__}: {e}); only the 40 tag phrases can "
                           "be queried") from e
    saved = np.asarray(self.constants["tag_queries"], np.float32)
    again = encode(objectives.tag_phrases())
    err = float(np.max(np.abs(again - saved))) if again.shape == saved.shape else float("inf")
    if not err <= 1e-4 * max(1.0, float(np.max(np.abs(saved)))):
      raise NoQueryEncoder(f"{where}: the rebuilt frozen query tower does not reproduce the "
                           f"saved tag queries (max |difference| {err:.3g}): another "
                           f"checkpoint at {text.pretrained!r} or another tokenizer?")
    self._query_encoder = encode
    return encode

  def tag_queries_for(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(`[K, Dq]` queries, `[K]` slots) of class names (`objectives.query_phrase`): a tag
    phrase gets its saved query and its own slot, another name its frozen-tower embedding
    and its nearest tag's slot. Raises NoQueryEncoder for a new name the model cannot embed."""
    self._need_tag_decoder()
    if isinstance(names, str):
      names = [names]
    phrases = [objectives.query_phrase(n) for n in names]
    if not phrases or any(not p for p in phrases):
      raise ValueError(f"tag queries need non-empty class names, got {list(names)}")
    tags = objectives.tag_phrases()
    saved = np.asarray(self.constants["tag_queries"], np.float32)
    queries = np.zeros((len(phrases), saved.shape[1]), np.float32)
    new = [i for i, p in enumerate(phrases) if p not in tags]
    for i, p in enumerate(phrases):
      if p in tags:
        queries[i] = saved[tags.index(p)]
    if new:
      queries[new] = self.tag_query_encoder()([phrases[i] for i in new])
    slots = nearest_tag_slots(queries, saved)
    for i, p in enumerate(phrases):
      if p in tags:
        slots[i] = tags.index(p)
    return queries, slots

  def tag_logits(self, images, names: Sequence[str] | None = None) -> np.ndarray:
    """`[N, 40]` IRL decoder logits (tags in vocab.json order), or `[N, K]` for class
    `names` (any names: module docstring)."""
    self._need_tag_decoder()
    if names is None:
      patches = jnp.asarray(self.image_outputs(images)["patch_tokens"])
      return np.asarray(self._tag_logits(self.variables, patches))
    return np.asarray(self.tag_logits_fn(names)(self.variables, self.preprocess_images(images)))

  def tag_logits_fn(self, names: Sequence[str]):
    """`fn(variables, images f32 [N, S, S, 3]) -> [N, K]` logits of class `names` for
    PREPROCESSED images and any variables of this architecture (a random-init baseline
    too): the queries are embedded once here; the jitted encoder and scorer are shared by
    every call (asg_jax.evaluate.make_fns)."""
    queries, slots = self.tag_queries_for(names)
    padded, k = pad_queries(queries, slots), len(slots)

    def fn(variables, images):
      patches = self._encode_image(variables, jnp.asarray(images))["patch_tokens"]
      return self._tag_scorer(variables, patches, *padded)[:, :k]
    return fn

  def tag_probabilities(self, images, names: Sequence[str] | None = None) -> np.ndarray:
    """Sigmoid of `tag_logits`: `[N, 40]` (tags in vocab.json `asg_tags_40` order) or
    `[N, K]` for class `names`."""
    logits = self.tag_logits(images, names)
    return 1.0 / (1.0 + np.exp(-logits))

  def heatmap(self, image, text: str) -> np.ndarray:
    """`[gh, gw]` cosine similarity of each patch with the text's words (mean over the valid
    words), on the patch grid of the centre crop — GLoRIA-style localisation."""
    from asg_jax.objectives import patch_grid  # pylint: disable=import-outside-toplevel
    patches = self.image_outputs([np.asarray(image)])["patch_emb"][0]        # [M, E]
    t = self.text_outputs([text])
    words, mask = t["word_emb"][0], t["word_mask"][0]                        # [N, E], [N]
    sim = patches @ words[mask].T                                            # [M, n]
    gh, gw = patch_grid(self.config)
    return sim.mean(-1).reshape(gh, gw)


save_inference_files = workdir_lib.save_inference_files
