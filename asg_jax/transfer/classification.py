"""What the classifying protocols share (linear probe, fine-tuning, zero-shot): the
classification loss, the multi-label / single-label decision, the result rows (macro +
per-class AUROC, top-1 accuracy for single-label sets) and the binary metrics (F1 /
accuracy at a threshold chosen on validation, chance levels)."""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
import optax

from asg_jax.evaluators import metrics as metrics_lib
from asg_jax.transfer import table


def logits_loss(logits, y, weight, multiclass: bool):
  """`loss_fn` of logits [B, C] (also the fine-tuning objective)."""
  if multiclass:
    per = optax.softmax_cross_entropy(logits, y)
  else:
    per = optax.sigmoid_binary_cross_entropy(logits, y).mean(-1)
  return jnp.sum(per * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def is_multiclass(labels: np.ndarray, task: str) -> bool:
  if task == "multiclass":
    return True
  if task == "multilabel":
    return False
  if task != "auto":
    raise ValueError(f"task={task!r}; expected auto, multilabel or multiclass")
  labels = np.asarray(labels)
  return labels.shape[1] > 1 and bool(np.all(labels.sum(-1) == 1))


def classification_rows(dataset: str, protocol: str, fractions: Sequence[float],
                        scores: Sequence[Sequence[np.ndarray]], y: np.ndarray,
                        names: Sequence[str], multiclass: bool, init: str,
                        suffix: str = "") -> list[dict]:
  """results rows of test scores `scores[f][s]` [N, C] (fraction f, seed s) against the
  0/1 labels y [N, C]: macro AUROC, top-1 accuracy (multiclass; chance = the majority
  class) and per-class AUROC `auroc[<name>]`, each the mean ± sample std over seeds."""
  out = []
  std = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else None  # noqa: E731
  for frac, runs in zip(fractions, scores):
    first = len(out)
    aucs, per_class, accs = [], [], []
    for sc in runs:
      macro, per = macro_auroc(sc, y)
      aucs.append(macro)
      per_class.append(per)
      if multiclass:
        accs.append(float(np.mean(sc.argmax(-1) == y.argmax(-1))))
    out.append(table.row(dataset, protocol, "auroc" + suffix, float(np.mean(aucs)), fraction=frac,
                         std=std(aucs), chance=0.5, init=init))
    if multiclass:
      majority = float(np.max(np.mean(y, axis=0)))
      out.append(table.row(dataset, protocol, "accuracy" + suffix, float(np.mean(accs)),
                           fraction=frac, std=std(accs), chance=majority, init=init))
    per_class = np.asarray(per_class)
    for c, name in enumerate(names):
      col = per_class[:, c]
      out.append(table.row(dataset, protocol, f"auroc{suffix}[{name}]", float(np.mean(col)),
                           fraction=frac, std=std(col), chance=0.5, init=init))
    table.annotate(out[first:], runs, y, names, suffix=suffix)   # test n, positives, 95 % CI
  return out


# ------------------------------------------------------------------------- binary metrics

def f1_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
  """(F1 of the positive class, accuracy) of `scores >= threshold`."""
  pred = np.asarray(scores) >= threshold
  y = np.asarray(labels).astype(bool)
  tp = float(np.sum(pred & y))
  fp = float(np.sum(pred & ~y))
  fn = float(np.sum(~pred & y))
  f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else 0.0
  return f1, float(np.mean(pred == y))


def best_threshold(scores: np.ndarray, labels: np.ndarray, criterion: str = "f1") -> float:
  """The threshold maximising `criterion` ("f1" or "accuracy") of `scores >= t` over the
  candidate thresholds = every distinct score (ties broken towards the LOWER threshold);
  for the validation split (then applied to test)."""
  scores = np.asarray(scores, np.float64)
  cands = np.unique(scores)
  if len(cands) == 0:
    return 0.0
  best, best_t = -1.0, float(cands[0])
  for t in cands:
    f1, acc = f1_accuracy(scores, labels, t)
    value = f1 if criterion == "f1" else acc
    if value > best + 1e-12:
      best, best_t = value, float(t)
  return best_t


def macro_auroc(scores: np.ndarray, labels: np.ndarray) -> tuple[float, list[float]]:
  """(mean over the classes with both labels present, per-class AUROC list (NaN where one
  label is absent))."""
  per = [metrics_lib.auroc(scores[:, c], labels[:, c] > 0.5) for c in range(labels.shape[1])]
  finite = [a for a in per if np.isfinite(a)]
  return (float(np.mean(finite)) if finite else float("nan")), per


def chance_f1(labels: np.ndarray) -> float:
  """F1 of predicting every example positive (the trivial classifier's best F1)."""
  p = float(np.mean(np.asarray(labels) > 0.5))
  return 2 * p / (1 + p) if p > 0 else 0.0


def chance_accuracy(labels: np.ndarray) -> float:
  """Accuracy of always predicting the majority class (binary)."""
  p = float(np.mean(np.asarray(labels) > 0.5))
  return max(p, 1 - p)
