"""Cross-modal retrieval over a whole split: image→text / text→image top-k (duplicate-aware:
a report with the same tokens as the query's own counts as correct), with chance levels."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from asg_jax.evaluators import metrics


class Evaluator:
  """Yields `i2t_top{k}`, `t2i_top{k}`, `top{k}` (their mean) and `chance/...` for each k."""

  def __init__(self, predict_fns, *, data, ks: Sequence[int] = (1, 5, 10)):
    del predict_fns
    self._data, self._ks = data, tuple(int(k) for k in ks)
    data.register("retrieval", lambda outputs, batch: {
        "image_emb": outputs["image_emb"], "text_emb": outputs["text_emb"],
        "input_ids": batch["input_ids"]})

  def run(self, state) -> Iterator[tuple[str, float]]:
    arrays = self._data.run(state)["retrieval"]
    sim = arrays["image_emb"] @ arrays["text_emb"].T
    _, groups = np.unique(arrays["input_ids"], axis=0, return_inverse=True)
    values, chance = metrics.retrieval_at_k(sim, groups.reshape(-1), ks=self._ks)
    for key in sorted(values):
      yield key, values[key]
      if key in chance:
        yield f"chance/{key}", chance[key]
