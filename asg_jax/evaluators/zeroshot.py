"""Zero-shot finding classification on the pre-training split: per-tag AUROC (positive = tag
present, 1; negative = absent or not mentioned), macro over the tags with both classes.

* prompts (`zs_prompt_auroc`): score = cos(image, "<finding>") − cos(image, "no <finding>"),
  prompts embedded by the text tower;
* tag decoder (`zs_tag_auroc`, with IRL): the decoder's tag logits.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from asg_jax.evaluators import metrics


class Evaluator:
  """Yields `zs_prompt_auroc`, `zs_tag_auroc` (when the model has a tag decoder), their
  `chance/` 0.5, and `zs_num_tags` (how many tags had both classes)."""

  def __init__(self, predict_fns, *, data, prompts: bool = True, tag_decoder: bool = True):
    self._data, self._embed = data, predict_fns.embed_texts
    self._prompts, self._tag_decoder = prompts, tag_decoder

    def per_batch(outputs, batch):
      out = {"image_emb": outputs["image_emb"], "tags": batch["tags"]}
      if tag_decoder and "tag_logits" in outputs:
        out["tag_logits"] = outputs["tag_logits"]
      return out
    data.register("zeroshot", per_batch)

  def run(self, state) -> Iterator[tuple[str, float]]:
    from asg_jax.data.reports import TAGS  # pylint: disable=import-outside-toplevel
    arrays = self._data.run(state)["zeroshot"]
    labels = arrays["tags"] == 1
    usable = [t for t in range(labels.shape[1]) if 0 < labels[:, t].sum() < len(labels)]
    if not usable:
      return
    if self._prompts:
      texts = [TAGS[t] for t in usable] + [f"no {TAGS[t]}" for t in usable]
      emb = np.asarray(self._embed(state, texts))
      pos, neg = emb[:len(usable)], emb[len(usable):]
      scores = arrays["image_emb"] @ pos.T - arrays["image_emb"] @ neg.T
      per_tag = [metrics.auroc(scores[:, j], labels[:, t]) for j, t in enumerate(usable)]
      yield "zs_prompt_auroc", float(np.nanmean(per_tag))
      yield "chance/zs_prompt_auroc", 0.5
    if "tag_logits" in arrays:
      per_tag = [metrics.auroc(arrays["tag_logits"][:, t], labels[:, t]) for t in usable]
      yield "zs_tag_auroc", float(np.nanmean(per_tag))
      yield "chance/zs_tag_auroc", 0.5
    yield "zs_num_tags", float(len(usable))
