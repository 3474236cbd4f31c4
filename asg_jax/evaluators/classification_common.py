"""What the linear probe and full fine-tuning share (one module both import, so neither
imports the other): the classification loss, the multi-label / single-label decision and
the result rows (macro + per-class AUROC, top-1 accuracy for single-label sets)."""
from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
import optax

from asg_jax.evaluators import transfer_common as tc


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
    aucs, per_class, accs = [], [], []
    for sc in runs:
      macro, per = tc.macro_auroc(sc, y)
      aucs.append(macro)
      per_class.append(per)
      if multiclass:
        accs.append(float(np.mean(sc.argmax(-1) == y.argmax(-1))))
    out.append(tc.row(dataset, protocol, "auroc" + suffix, float(np.mean(aucs)), fraction=frac,
                      std=std(aucs), chance=0.5, init=init))
    if multiclass:
      majority = float(np.max(np.mean(y, axis=0)))
      out.append(tc.row(dataset, protocol, "accuracy" + suffix, float(np.mean(accs)),
                        fraction=frac, std=std(accs), chance=majority, init=init))
    per_class = np.asarray(per_class)
    for c, name in enumerate(names):
      col = per_class[:, c]
      out.append(tc.row(dataset, protocol, f"auroc{suffix}[{name}]", float(np.mean(col)),
                        fraction=frac, std=std(col), chance=0.5, init=init))
  return out


# ----------------------------------------------------------------------------- evaluator
