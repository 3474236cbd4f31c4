"""Evaluation metrics in NumPy (host side): AUROC, retrieval with duplicate-aware chance."""
from __future__ import annotations

import math

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (Mann–Whitney U, ties counted 1/2).

  Args:
    scores: `[N]` real scores, higher = more likely positive.
    labels: `[N]` bool / {0,1}.
  Returns:
    AUROC in [0, 1], or NaN if one class is absent.
  """
  scores = np.asarray(scores, np.float64)
  return float(weighted_auroc(scores, np.asarray(labels).astype(bool),
                              np.ones((1, len(scores))))[0])


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """[B] AUROC of `scores` [N] against bool `labels` [N] under B example weightings `counts`
  [B, N] (a bootstrap's resampling counts; ones = the plain AUROC): Mann–Whitney with ties
  counted 1/2, NaN where a weighting lacks a class."""
  order = np.argsort(scores, kind="stable")
  s, y, w = scores[order], labels[order], counts[:, order]
  starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
  pos = np.add.reduceat(w * y, starts, axis=1)
  neg = np.add.reduceat(w * ~y, starts, axis=1)
  below = np.cumsum(neg, axis=1) - neg
  wp, wn = pos.sum(1), neg.sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return (pos * (below + 0.5 * neg)).sum(1) / (wp * wn)


def retrieval_at_k(sim: np.ndarray, groups: np.ndarray, ks=(1, 5, 10)) -> tuple[dict, dict]:
  """Cross-modal retrieval over a whole evaluation set.

  A retrieved item is correct when it belongs to the query's group (the pair itself, or a
  report with the identical caption: duplicate normal reports are indistinguishable).

  Args:
    sim: `[N, N]` similarity, rows = images (queries for image→text), columns = reports.
    groups: `[N]` int group id per pair (equal captions share a group).
  Returns:
    (metrics, chance): `i2t_top{k}`, `t2i_top{k}` and their mean `top{k}`, and the
    expected value of each under a random ranking.
  """
  sim = np.asarray(sim, np.float64)
  groups = np.asarray(groups)
  n = sim.shape[0]
  same = groups[:, None] == groups[None, :]
  metrics, chance = {}, {}
  for name, s in (("i2t", sim), ("t2i", sim.T)):
    order = np.argsort(-s, axis=1, kind="stable")
    hits = np.take_along_axis(same, order, axis=1)
    for k in ks:
      if k > n:
        continue
      metrics[f"{name}_top{k}"] = float(np.mean(hits[:, :k].any(axis=1)))
  counts = same.sum(axis=1)
  for k in ks:
    if k > n:
      continue
    # P(at least one of k random draws without replacement hits one of `c` correct items)
    c_miss = np.array([_comb_ratio(n - c, n, k) for c in counts])
    p = float(np.mean(1.0 - c_miss))
    chance[f"i2t_top{k}"] = chance[f"t2i_top{k}"] = chance[f"top{k}"] = p
    metrics[f"top{k}"] = 0.5 * (metrics[f"i2t_top{k}"] + metrics[f"t2i_top{k}"])
  return metrics, chance


def _comb_ratio(a: int, n: int, k: int) -> float:
  """C(a, k) / C(n, k), 0 if a < k."""
  if a < k:
    return 0.0
  return math.exp(math.lgamma(a + 1) - math.lgamma(a - k + 1) - math.lgamma(n + 1)
                  + math.lgamma(n - k + 1))
