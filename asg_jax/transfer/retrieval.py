"""Cross-modal retrieval on a single-label downstream set (5×200 sets; docs/transfer.md).

The text gallery is either
- `texts="prompts"`: the class prompts (transfer/prompts/, `max_prompts_per_class` sampled
  per class for a balanced gallery), each labelled with its class (CheXpert 5×200), or
- `texts="reports"`: the report of every example (`caption`, the cleaned IMPRESSION +
  FINDINGS text of `mimic_cxr/5x200`), labelled with its example's class.
Both directions: image→text (each image ranks every text) and text→image (each text ranks
every image), a retrieved item being correct when it has the query's class (RECLF / GLoRIA /
MGCA): metrics `{i2t,t2i}_{precision,recall}@K`. With reports also with a hit being the
EXACT counterpart (the image's own report, the report's own image): `{i2t,t2i}_exact_
{precision,recall}@K` (precision@K is then at most 1/K).

  precision@K   mean over queries of the fraction of the top K that are correct
  recall@K      mean over queries of [at least one of the top K is correct] (hit rate)

with their exact chance levels (a random ranking: n_c / M, and the hypergeometric
1 - C(M - n_c, K) / C(M, K), for a query of class c against a gallery of M items with n_c of
its class; for exact hits n_c = 1: K / M and 1 / M).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from asg_jax.evaluators import metrics as metrics_lib
from asg_jax.transfer import features
from asg_jax.transfer import table

PROTOCOL = "retrieval"


def precision_recall_at_k(sim: np.ndarray, query_class: np.ndarray, gallery_class: np.ndarray,
                          ks: Sequence[int]) -> tuple[dict, dict]:
  """(metrics, chance) of `sim` [Q, M] (rows = queries): `precision@k`, `recall@k`."""
  sim = np.asarray(sim, np.float64)
  q, m = sim.shape
  order = np.argsort(-sim, axis=1, kind="stable")
  correct = gallery_class[order] == query_class[:, None]          # [Q, M]
  n_same = (gallery_class[None, :] == query_class[:, None]).sum(1)
  out, chance = {}, {}
  for k in ks:
    if k > m:
      continue
    out[f"precision@{k}"] = float(correct[:, :k].mean())
    out[f"recall@{k}"] = float(correct[:, :k].any(1).mean())
    chance[f"precision@{k}"] = float(np.mean(n_same / m))
    chance[f"recall@{k}"] = float(np.mean([1.0 - metrics_lib._comb_ratio(m - c, m, k)  # pylint: disable=protected-access
                                           for c in n_same]))
  return out, chance


def report_texts(dataset: str, split: str, data_dir: str) -> dict[str, str]:
  """{image_id: caption} of a built split with a `caption` feature (images not decoded)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from asg_jax.data.pipeline import downstream_input  # pylint: disable=import-outside-toplevel
  b = downstream_input.builder(dataset, data_dir)
  if "caption" not in b.info.features:
    raise ValueError(f"texts='reports' needs a dataset with report texts (`caption`, e.g. "
                     f"mimic_cxr/5x200); {dataset} has {sorted(b.info.features)}")
  ds = b.as_dataset(split=split, shuffle_files=False, decoders={
      "image": tfds.decode.SkipDecoding()})
  return {ex["image_id"].decode("utf-8"): ex["caption"].decode("utf-8")
          for ex in tfds.as_numpy(ds.map(lambda ex: {"image_id": ex["image_id"],
                                                     "caption": ex["caption"]}))}


def retrieval_rows(dataset: str, image_emb: np.ndarray, text_emb: np.ndarray,
                   image_class: np.ndarray, text_class: np.ndarray, ks: Sequence[int],
                   init: str, exact: bool = False) -> list[dict]:
  """Rows of both directions from L2-normalised `image_emb [N, E]`, `text_emb [M, E]`;
  `exact`: text j is image j's report (N = M), also the exact-counterpart metrics."""
  sim = features.l2n(image_emb) @ features.l2n(text_emb).T                    # [N, M]
  kinds = [("", image_class, text_class)]
  if exact:
    if sim.shape[0] != sim.shape[1]:
      raise ValueError(f"exact report hits need one report per image, got {sim.shape}")
    ids = np.arange(sim.shape[0])
    kinds.append(("exact_", ids, ids))
  out = []
  for prefix, ic, tcls in kinds:
    for direction, s, qc, gc in (("i2t", sim, ic, tcls), ("t2i", sim.T, tcls, ic)):
      values, chance = precision_recall_at_k(s, np.asarray(qc), np.asarray(gc), ks)
      for key, v in values.items():
        out.append(table.row(dataset, PROTOCOL, f"{direction}_{prefix}{key}", v,
                             chance=chance[key], init=init))
  return out


class Evaluator:
  """Image↔text retrieval (module docstring).

  Args:
    downstream, data_dir, test_split: a built single-label (one-hot) downstream set.
    texts: "prompts" (class prompts) or "reports" (each example's `caption`).
    prompts, max_prompts_per_class, prompt_seed: the prompt gallery (texts="prompts").
    ks: the K of the @K metrics.
  """

  def __init__(self, predict_fns, *, data=None, downstream: str, data_dir: str = "",
               test_split: str = "test", texts: str = "prompts", prompts: str = "chexpert",
               max_prompts_per_class: int = 10, prompt_seed: int = 0,
               ks: Sequence[int] = (1, 5, 10), extract_batch_size: int = 64,
               cache_dir: str = "", max_examples: int = 0):
    del data
    if texts not in ("prompts", "reports"):
      raise ValueError(f"texts={texts!r}; expected 'prompts' or 'reports'")
    self.fns, self.downstream, self.data_dir, self.test_split = (predict_fns, downstream,
                                                                 data_dir, test_split)
    self.texts = texts
    self.prompts, self.max_prompts, self.prompt_seed = prompts, max_prompts_per_class, prompt_seed
    self.ks = tuple(int(k) for k in ks)
    self.extract_batch_size, self.cache_dir, self.max_examples = (extract_batch_size, cache_dir,
                                                                  max_examples)

  def rows(self, state, init: str = "pretrained") -> list[dict]:
    names = features.class_names(self.downstream, self.data_dir)
    feats = features.extract(self.fns, state, self.downstream, self.test_split,
                             data_dir=self.data_dir,
                             keys=("image_emb",), batch_size=self.extract_batch_size,
                             cache_dir=self.cache_dir, tag=features.state_tag(state, init),
                             max_examples=self.max_examples)
    labels = np.asarray(feats["labels"])
    if not np.all(labels.sum(-1) == 1):
      raise ValueError(f"retrieval needs a single-label (one-hot) set; {self.downstream} "
                       f"has rows with {sorted(set(labels.sum(-1).tolist()))} labels")
    img_class = labels.argmax(-1)
    if self.texts == "reports":
      captions = report_texts(self.downstream, self.test_split, self.data_dir)
      texts = [captions[i] for i in feats["image_id"]]
      text_emb = features.embed_prompts(self.fns, state, texts)
      return retrieval_rows(self.downstream, feats["image_emb"], text_emb, img_class,
                            img_class, self.ks, init, exact=True)
    pos, _ = features.load_prompts(self.prompts, names, self.max_prompts, self.prompt_seed)
    texts, text_class = [], []
    for c, name in enumerate(names):
      texts += pos[name]
      text_class += [c] * len(pos[name])
    text_emb = features.embed_prompts(self.fns, state, texts)
    return retrieval_rows(self.downstream, feats["image_emb"], text_emb, img_class,
                          np.asarray(text_class), self.ks, init)

  def run(self, state):
    yield from table.yield_rows(self.rows(state, getattr(state, "init", "pretrained")))
