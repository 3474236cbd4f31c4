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

`images` are file paths (PNG / JPEG / DICOM, read as the builders read them), PIL images or
arrays `[H, W]`, `[H, W, 1..4]` of uint8 / 16-bit pixels, of any size (a list, or one
stacked array): they go through the evaluation geometry of training (longest side to
`config.data.resize`, zero pad, centre crop `config.data.image_size`, the configured
normalisation). Texts are cleaned like training captions (lower case, `\\w+` tokens).

Tag-decoder queries for NEW class names (KAD protocol): asg_jax/models/tag_queries.py (a
name takes the decoder slot of its nearest training tag). Workdirs written before
`tag_query_rng` was saved (random-init query tower) still load; only the 40 tag phrases
can be queried there (`tag_queries.NoQueryEncoder` names the reason).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import predict
from asg_jax import state as state_lib
from asg_jax import workdir as workdir_lib
from asg_jax.models import tag_queries, vlp



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
               constants: Mapping[str, np.ndarray] | None = None, source: str = ""):
    self.config = config
    self.variables = variables
    self.tokenizer = tokenizer
    self.constants = dict(constants or {})
    self.model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
    self.source = source   # the workdir, for messages
    self.fns = predict.make_predict_fns(self.model, tokenizer, config, constants=self.constants,
                                        source=source)
    self._random_inits: dict[int, dict] = {}

  # ------------------------------------------------------------------------ loading
  @classmethod
  def from_workdir(cls, workdir: str, *, checkpoint: str = "best", tokenizer=None
                   ) -> "Pretrained":
    """Loads `<workdir>/config.json`, the `best` (or `latest`) checkpoint, the tokenizer
    (`<workdir>/tokenizer.json` unless one is given) and the constants of training.

    Raises:
      FileNotFoundError: naming the missing file or checkpoint folder.
    """
    from asg_jax import checkpoints  # pylint: disable=import-outside-toplevel
    config = workdir_lib.read_config(workdir)
    if tokenizer is None:
      from asg_jax.data.reports import tokenization  # pylint: disable=import-outside-toplevel
      path = os.path.join(workdir, workdir_lib.TOKENIZER_FILE)
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
    out = cls(config, variables, tokenizer, constants, source=workdir)
    if (config.model.tag_decoder.enabled and not config.model.text.pretrained
        and "tag_queries" in constants and tag_queries.TAG_QUERY_RNG not in constants):
      print(f"{os.path.join(workdir, workdir_lib.CONSTANTS_FILE)} predates `{tag_queries.TAG_QUERY_RNG}`: "
            "the tag decoder answers the 40 training tags only (new class names need the "
            "frozen query tower's rng; retrain to get it).", flush=True)
    return out

  # ------------------------------------------------------------------------ inputs
  def preprocess_images(self, images) -> np.ndarray:
    """Images of any size -> float32 `[N, S, S, 3]` (evaluation geometry).

    `images`: one image or a list of them, each a file path (PNG / JPEG / DICOM, as the
    builders read it: `asg_jax.data.images`), a PIL image, or an array `[H, W]`, `[H, W, 1]`,
    `[H, W, 2]` (grey + alpha), `[H, W, 3]` (RGB) or `[H, W, 4]` (RGBA) of uint8 or of
    integers (16-bit: windowed min-max to 8 bits); or one stacked array `[N, H, W(, C)]`.
    Colour becomes luminance (ITU-R 601), alpha is dropped. Float pixels are refused (their
    scale is unknown).
    """
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from PIL import Image  # pylint: disable=import-outside-toplevel
    from asg_jax.data import geometry, images as images_lib  # pylint: disable=import-outside-toplevel
    dc = self.config.data
    if isinstance(images, (str, os.PathLike, Image.Image)):
      images = [images]
    elif isinstance(images, np.ndarray) and (images.ndim == 2 or (
        images.ndim == 3 and images.shape[-1] not in (1, 2, 3, 4))):
      images = [images]                     # one image [H, W] / [H, W, C]
    out = []
    for i, image in enumerate(images):
      if not isinstance(image, (str, os.PathLike, Image.Image)):
        image = np.asarray(image)
        if not (image.dtype == np.uint8 or np.issubdtype(image.dtype, np.integer)
                or image.dtype == np.bool_):
          raise ValueError(f"image {i}: expected uint8 (or 16-bit integer) pixels, got "
                           f"{image.dtype}")
      grey = images_lib.load(image, where=f"image {i}")[..., None]
      x, _, _ = geometry.transform(tf.constant(grey), tf.zeros((0, 4), tf.float32),
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
    return jax.device_get(self.fns.encode_images(self.variables, self.preprocess_images(images)))

  def text_outputs(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """`text_emb [K,E]`, `word_emb [K,N,E]`, `word_mask [K,N]`, `word_importance [K,N]`."""
    return jax.device_get(self.fns.encode_texts(self.variables, self.tokenize(texts)))

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
  def tag_logits(self, images, names: Sequence[str] | None = None) -> np.ndarray:
    """`[N, 40]` IRL decoder logits (tags in vocab.json order), or `[N, K]` for class
    `names` (any names: asg_jax/models/tag_queries.py)."""
    if self.fns.tag_logits is None:
      raise ValueError("this model has no tag decoder (config.model.tag_decoder.enabled) or "
                       f"no {workdir_lib.CONSTANTS_FILE} with its tag queries")
    x = self.preprocess_images(images)
    fn = self.fns.tag_logits if names is None else self.fns.class_tag_logits(
        [names] if isinstance(names, str) else list(names))
    return np.asarray(fn(self.variables, x))

  def tag_probabilities(self, images, names: Sequence[str] | None = None) -> np.ndarray:
    """Sigmoid of `tag_logits`: `[N, 40]` (tags in vocab.json `asg_tags_40` order) or
    `[N, K]` for class `names`."""
    logits = self.tag_logits(images, names)
    return 1.0 / (1.0 + np.exp(-logits))

  def heatmap(self, image, text: str) -> np.ndarray:
    """`[gh, gw]` cosine similarity of each patch with the text's words (mean over the valid
    words), on the patch grid of the centre crop — GLoRIA-style localisation."""
    x = self.preprocess_images([np.asarray(image)])
    return np.asarray(self.fns.heatmap(self.variables, x, self.tokenize([text])))

  # ------------------------------------------------------------------- baselines
  def random_variables(self, seed: int = 0) -> dict:
    """Freshly initialised variables of the same architecture (the random-init baseline),
    kept per seed: several transfer recipes on one loaded model initialise it once."""
    if seed not in self._random_inits:
      batch = {k: jnp.asarray(v) for k, v in dummy_batch(self.config).items()}
      v = state_lib.run_once(lambda r, b, q: self.model.init(
          {"params": r, "dropout": r}, b, train=False, tag_queries=q),
          jax.random.PRNGKey(seed), batch, self.constants.get("tag_queries"))
      self._random_inits[seed] = {"params": v["params"],
                                  "batch_stats": v.get("batch_stats", {})}
    return self._random_inits[seed]


