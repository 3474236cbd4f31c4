"""Cross-modal retrieval on a single-label downstream set (CheXpert 5×200; docs/transfer.md).

The text gallery is the class prompts (evaluators/prompts/, `max_prompts_per_class` sampled
per class for a balanced gallery), each labelled with its class. Both directions:
image→text (each image ranks every prompt) and text→image (each prompt ranks every image),
a retrieved item being correct when it has the query's class (RECLF / GLoRIA / MGCA).

  precision@K   mean over queries of the fraction of the top K that are correct
  recall@K      mean over queries of [at least one of the top K is correct] (hit rate)

with their exact chance levels (a random ranking: n_c / M, and the hypergeometric
1 - C(M - n_c, K) / C(M, K), for a query of class c against a gallery of M items with n_c of
its class). Reports as the text side (`mimic_cxr/5x200`) are not built yet (data.md).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from asg_jax.evaluators import metrics as metrics_lib
from asg_jax.evaluators import transfer_common as tc

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


class Evaluator:
  """Image↔prompt retrieval (module docstring).

  Args:
    downstream, data_dir, test_split: a built single-label (one-hot) downstream set.
    prompts, max_prompts_per_class, prompt_seed: the text gallery.
    ks: the K of the @K metrics.
  """

  def __init__(self, predict_fns, *, data=None, downstream: str, data_dir: str = "",
               test_split: str = "test", prompts: str = "chexpert",
               max_prompts_per_class: int = 10, prompt_seed: int = 0,
               ks: Sequence[int] = (1, 5, 10), extract_batch_size: int = 64,
               cache_dir: str = "", max_examples: int = 0):
    del data
    self.fns, self.downstream, self.data_dir, self.test_split = (predict_fns, downstream,
                                                                 data_dir, test_split)
    self.prompts, self.max_prompts, self.prompt_seed = prompts, max_prompts_per_class, prompt_seed
    self.ks = tuple(int(k) for k in ks)
    self.extract_batch_size, self.cache_dir, self.max_examples = (extract_batch_size, cache_dir,
                                                                   max_examples)

  def rows(self, state, init: str = "pretrained") -> list[dict]:
    names = tc.class_names(self.downstream, self.data_dir)
    feats = tc.extract(self.fns, state, self.downstream, self.test_split, data_dir=self.data_dir,
                       keys=("image_emb",), batch_size=self.extract_batch_size,
                       cache_dir=self.cache_dir, tag=tc.state_tag(state, init),
                       max_examples=self.max_examples)
    labels = np.asarray(feats["labels"])
    if not np.all(labels.sum(-1) == 1):
      raise ValueError(f"retrieval needs a single-label (one-hot) set; {self.downstream} "
                       f"has rows with {sorted(set(labels.sum(-1).tolist()))} labels")
    pos, _ = tc.load_prompts(self.prompts, names, self.max_prompts, self.prompt_seed)
    texts, text_class = [], []
    for c, name in enumerate(names):
      texts += pos[name]
      text_class += [c] * len(pos[name])
    text_emb = tc.embed_prompts(self.fns, state, texts)
    sim = tc.l2n(feats["image_emb"]) @ text_emb.T                    # [N, M]
    img_class, text_class = labels.argmax(-1), np.asarray(text_class)
    out = []
    for direction, s, qc, gc in (("i2t", sim, img_class, text_class),
                                 ("t2i", sim.T, text_class, img_class)):
      values, chance = precision_recall_at_k(s, qc, gc, self.ks)
      for key, v in values.items():
        out.append(tc.row(self.downstream, PROTOCOL, f"{direction}_{key}", v,
                          chance=chance[key], init=init))
    return out

  def run(self, state):
    yield from tc.yield_rows(self.rows(state, getattr(state, "init", "pretrained")))
