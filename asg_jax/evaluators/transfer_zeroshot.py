"""Zero-shot classification of a downstream dataset (data.md "Evaluation protocols";
docs/transfer.md), both protocols:

- `prompt` (GLoRIA/MGCA): each class's prompts (evaluators/prompts/*.json: CheXpert
  severity × subtype × location, RSNA pneumonia) are embedded by the text tower; a class is
  the re-normalised mean of its prompt embeddings; an image's score for the class is the
  cosine with it, minus the cosine with the class's NEGATIVE prompts when the set has them
  (a binary task: positive vs negative prompts).
- `tags` (ASG / KAD): the IRL tag decoder's logit of the tag named like the class
  (`tag_names` maps a class to one of the 40 training tags; default: the lower-cased class
  name). Needs `predict_fns["tag_logits"](state, images) -> [N, 40]` (asg_jax.evaluate
  adds it when the model has a tag decoder); skipped otherwise.

Single-label sets (every label row one-hot, e.g. CheXpert 5×200): top-1 accuracy (chance
1/C) and macro one-vs-rest AUROC. Multi-label / binary sets (RSNA, CheXpert, NIH): macro
AUROC, and with `val_split` the per-class threshold maximising F1 on validation, applied to
the test split for F1 and accuracy (chance: the all-positive F1, the majority accuracy).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from asg_jax.evaluators import transfer_common as tc

PROTOCOLS = {"prompt": "zero_shot_prompt", "tags": "zero_shot_tags"}


def tag_index(class_names: Sequence[str], tag_names: Mapping[str, str] | None = None
              ) -> dict[str, int]:
  """{class: index into the 40 ASG tags} of the classes that have a tag."""
  from asg_jax.objectives import tag_phrases  # pylint: disable=import-outside-toplevel
  tags = tag_phrases()
  tag_names = dict(tag_names or {})
  out = {}
  for c in class_names:
    t = tag_names.get(c, c.lower())
    if t in tags:
      out[c] = tags.index(t)
  return out


def prompt_scores(image_emb: np.ndarray, pos_protos: np.ndarray,
                  neg_protos: Mapping[int, np.ndarray]) -> np.ndarray:
  """[N, C]: cos(image, class) (- cos(image, the class's negatives) where given)."""
  img = tc.l2n(image_emb)
  s = img @ pos_protos.T
  for c, neg in neg_protos.items():
    s[:, c] -= img @ neg
  return s


def classification_rows(dataset: str, protocol: str, scores: np.ndarray, labels: np.ndarray,
                        init: str, val_scores: np.ndarray | None = None,
                        val_labels: np.ndarray | None = None,
                        class_names: Sequence[str] = ()) -> list[dict]:
  """The rows of one protocol from test scores [N, C] (and validation scores for thresholds)."""
  rows = []
  labels = np.asarray(labels)
  num_classes = labels.shape[1]
  single = num_classes > 1 and bool(np.all(labels.sum(-1) == 1))
  macro, per = tc.macro_auroc(scores, labels)
  rows.append(tc.row(dataset, protocol, "auroc", macro, chance=0.5, init=init))
  if single:
    acc = float(np.mean(scores.argmax(-1) == labels.argmax(-1)))
    rows.append(tc.row(dataset, protocol, "top1", acc, chance=1.0 / num_classes, init=init))
  elif val_scores is not None:
    f1s, accs, cf1, cacc = [], [], [], []
    for c in range(num_classes):
      t = tc.best_threshold(val_scores[:, c], val_labels[:, c] > 0.5, "f1")
      f1, acc = tc.f1_accuracy(scores[:, c], labels[:, c] > 0.5, t)
      f1s.append(f1)
      accs.append(acc)
      cf1.append(tc.chance_f1(labels[:, c]))
      cacc.append(tc.chance_accuracy(labels[:, c]))
    rows.append(tc.row(dataset, protocol, "f1", float(np.mean(f1s)), chance=float(np.mean(cf1)),
                       init=init))
    rows.append(tc.row(dataset, protocol, "accuracy", float(np.mean(accs)),
                       chance=float(np.mean(cacc)), init=init))
  if num_classes > 1:
    for c, name in enumerate(class_names):
      rows.append(tc.row(dataset, protocol, f"auroc[{name}]", per[c], chance=0.5, init=init))
  return rows


class Evaluator:
  """Zero-shot classification (module docstring).

  Args:
    downstream, data_dir: the built downstream dataset; test_split; val_split ("" = no
      threshold rows).
    prompts: a prompt set name in evaluators/prompts/ ("chexpert", "rsna") or a JSON path;
      max_prompts_per_class > 0 samples that many per class (prompt_seed).
    protocols: subset of ("prompt", "tags").
    tag_names: {class: tag phrase} for the tag protocol (default: class.lower()).
  """

  def __init__(self, predict_fns, *, data=None, downstream: str, data_dir: str = "",
               test_split: str = "test", val_split: str = "", prompts: str = "chexpert",
               max_prompts_per_class: int = 0, prompt_seed: int = 0,
               protocols: Sequence[str] = ("prompt", "tags"),
               tag_names: Mapping[str, str] | None = None, extract_batch_size: int = 64,
               cache_dir: str = "", max_examples: int = 0):
    del data
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
      raise ValueError(f"protocols {unknown} unknown; expected a subset of {list(PROTOCOLS)}")
    self.fns, self.downstream, self.data_dir = predict_fns, downstream, data_dir
    self.test_split, self.val_split = test_split, val_split
    self.prompts, self.max_prompts, self.prompt_seed = prompts, max_prompts_per_class, prompt_seed
    self.protocols, self.tag_names = tuple(protocols), dict(tag_names or {})
    self.extract_batch_size, self.cache_dir, self.max_examples = (extract_batch_size, cache_dir,
                                                                   max_examples)

  def _features(self, state, split, init):
    keys = ["image_emb"] + (["tag_logits"] if self._tags_on() else [])
    return tc.extract(self.fns, state, self.downstream, split, data_dir=self.data_dir,
                      keys=tuple(keys), batch_size=self.extract_batch_size,
                      cache_dir=self.cache_dir, tag=tc.state_tag(state, init),
                      max_examples=self.max_examples)

  def _tags_on(self) -> bool:
    return "tags" in self.protocols and "tag_logits" in self.fns

  def rows(self, state, init: str = "pretrained") -> list[dict]:
    names = tc.class_names(self.downstream, self.data_dir)
    test = self._features(state, self.test_split, init)
    val = self._features(state, self.val_split, init) if self.val_split else None
    out = []
    if "prompt" in self.protocols:
      pos, neg = tc.load_prompts(self.prompts, names, self.max_prompts, self.prompt_seed)
      protos = tc.class_prototypes(self.fns, state, pos)
      neg_protos = {names.index(c): tc.class_prototypes(self.fns, state, {c: t})[0]
                    for c, t in neg.items()}
      score = lambda f: prompt_scores(f["image_emb"], protos, neg_protos)
      out += classification_rows(self.downstream, PROTOCOLS["prompt"], score(test),
                                 test["labels"], init, score(val) if val else None,
                                 val["labels"] if val else None, names)
    if "tags" in self.protocols:
      index = tag_index(names, self.tag_names)
      if not self._tags_on():
        tc.progress(f"  zero-shot tags {self.downstream}: the model has no tag decoder; skipped")
      elif not index:
        tc.progress(f"  zero-shot tags {self.downstream}: no class of {names} is a tag; skipped")
      else:
        cols = [names.index(c) for c in index]
        sub = [names[c] for c in cols]
        tag_cols = [index[c] for c in sub]
        score = lambda f: np.asarray(f["tag_logits"])[:, tag_cols]
        out += classification_rows(self.downstream, PROTOCOLS["tags"], score(test),
                                   test["labels"][:, cols], init,
                                   score(val) if val else None,
                                   val["labels"][:, cols] if val else None, sub)
    return out

  def run(self, state):
    yield from tc.yield_rows(self.rows(state, getattr(state, "init", "pretrained")))
