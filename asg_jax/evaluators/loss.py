"""Validation loss: the objective's terms over a whole split (`val_loss`, `val_<term>`).

Each batch's terms are means over its examples (the contrastive ones over the batch's own
pairs); the split value is their mean weighted by each batch's number of real examples, i.e.
the exact per-example mean, partial last batch included (`common.SplitPass`).
"""
from __future__ import annotations

from typing import Iterator

# in-batch retrieval and guard flags are measurements, not losses
_NOT_LOSSES = ("finite", "i2t_", "t2i_", "top", "global_top", "local_top")


class Evaluator:
  """Yields `val_loss` and `val_<term>` for every loss term of the objective."""

  def __init__(self, predict_fns, *, data):
    objective = predict_fns.objective

    def per_batch(outputs, batch):
      loss, measurements = objective(outputs, batch)
      return dict(measurements, loss=loss)
    self._name = "loss"
    self._data = data
    data.register(self._name, per_batch)

  def run(self, state) -> Iterator[tuple[str, float]]:
    values = self._data.run(state)[self._name]
    for key in sorted(values):
      if key == "num_examples" or key.startswith(_NOT_LOSSES):
        continue
      yield ("val_loss" if key == "loss" else f"val_{key}"), float(values[key])
