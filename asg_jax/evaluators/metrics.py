"""Evaluation metrics in NumPy (host side): AUROC, retrieval with duplicate-aware chance."""
from __future__ import annotations

import math

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
  """Area under the ROC curve (Mann–Whitney U with average ranks for ties).

  Args:
    scores: `[N]` real scores, higher = more likely positive.
    labels: `[N]` bool / {0,1}.
  Returns:
    AUROC in [0, 1], or NaN if one class is absent.
  """
  scores = np.asarray(scores, np.float64)
  labels = np.asarray(labels).astype(bool)
  n_pos, n_neg = int(labels.sum()), int((~labels).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # average ranks (1-based) over runs of equal scores
  starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
  ends = np.r_[starts[1:], len(scores)]
  for s, e in zip(starts, ends):
    ranks[order[s:e]] = 0.5 * (s + 1 + e)
  u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
  return float(u / (n_pos * n_neg))


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
