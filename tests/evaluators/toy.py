"""A toy evaluator living outside the package, declared through config alone (test_common)."""
import numpy as np

CALLS = []     # (step, scale) of every run


class Evaluator:
  """Yields `toy_mean_norm`: `scale` × the mean L2 norm of the image embeddings (1 × scale,
  as they are unit vectors), and its chance level 0."""

  def __init__(self, predict_fns, *, data, scale: float = 1.0):
    del predict_fns
    self._data, self._scale = data, scale
    data.register("toy", lambda outputs, batch: {
        "norm": (outputs["image_emb"] ** 2).sum(-1) ** 0.5})

  def run(self, state):
    norms = self._data.run(state)["toy"]["norm"]
    CALLS.append((int(state.step), self._scale))
    yield "toy_mean_norm", float(self._scale * np.mean(norms))
    yield "chance/toy_mean_norm", 0.0
