"""Zero-shot classification of a downstream dataset (data.md "Evaluation protocols";
docs/transfer.md), both protocols:

- `prompt` (GLoRIA/MGCA): each class's prompts (transfer/prompts/*.json: CheXpert
  severity × subtype × location, RSNA pneumonia) are embedded by the text tower; a class is
  the re-normalised mean of its prompt embeddings; an image's score for the class is the
  cosine with it, minus the cosine with the class's NEGATIVE prompts when the set has them
  (a binary task: positive vs negative prompts).
- `tags` (ASG / KAD): the IRL tag decoder queried with the class name (`tag_names` maps a
  class to another phrase; default: the class name, `tag_queries.query_phrase`: lower case,
  `_` -> space). A class named like one of the 40 training tags reads that tag's logit
  (`predict_fns.tag_logits(state, images) -> [N, 40]`); when some class is NOT a training
  tag (RSNA "Pneumonia" is one, NIH "Fibrosis" is not), every class is scored through
  `predict_fns.class_tag_logits(phrases)` (asg_jax/predict.py): the name embedded
  by the frozen query tower of training, decoded in its nearest tag's slot
  (asg_jax/models/tag_queries.py), identical to the tag's logit for a tag name. A workdir that
  cannot embed new names (written before the query tower's rng was saved) falls back to the
  tag-named classes with a message; the protocol is skipped without a tag decoder.

Single-label sets (every label row one-hot, e.g. CheXpert 5×200): top-1 accuracy (chance
1/C) and macro one-vs-rest AUROC. Multi-label / binary sets (RSNA, CheXpert, NIH): macro
AUROC, and with `val_split` the per-class threshold maximising F1 on validation, applied to
the test split for F1 and accuracy (chance: the all-positive F1, the majority accuracy).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Mapping, Sequence

import numpy as np

from asg_jax.transfer import classification
from asg_jax.transfer import features
from asg_jax.transfer import table

PROTOCOLS = {"prompt": "zero_shot_prompt", "tags": "zero_shot_tags"}


def tag_index(class_names: Sequence[str], tag_names: Mapping[str, str] | None = None
              ) -> dict[str, int]:
  """{class: index into the 40 ASG tags} of the classes whose query phrase is a tag."""
  from asg_jax.models.tag_queries import tag_phrases  # pylint: disable=import-outside-toplevel
  tags = tag_phrases()
  out = {}
  for c, phrase in query_phrases(class_names, tag_names).items():
    if phrase in tags:
      out[c] = tags.index(phrase)
  return out


def query_phrases(class_names: Sequence[str], tag_names: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
  """{class: its tag-decoder query phrase} (`tag_names[c]`, else the class name, through
  `tag_queries.query_phrase`)."""
  from asg_jax.models.tag_queries import query_phrase  # pylint: disable=import-outside-toplevel
  tag_names = dict(tag_names or {})
  return {c: query_phrase(tag_names.get(c, c)) for c in class_names}


def prompt_scores(image_emb: np.ndarray, pos_protos: np.ndarray,
                  neg_protos: Mapping[int, np.ndarray]) -> np.ndarray:
  """[N, C]: cos(image, class) (- cos(image, the class's negatives) where given)."""
  img = features.l2n(image_emb)
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
  macro, per = classification.macro_auroc(scores, labels)
  rows.append(table.row(dataset, protocol, "auroc", macro, chance=0.5, init=init))
  if single:
    acc = float(np.mean(scores.argmax(-1) == labels.argmax(-1)))
    rows.append(table.row(dataset, protocol, "top1", acc, chance=1.0 / num_classes, init=init))
  elif val_scores is not None:
    f1s, accs, cf1, cacc = [], [], [], []
    for c in range(num_classes):
      t = classification.best_threshold(val_scores[:, c], val_labels[:, c] > 0.5, "f1")
      f1, acc = classification.f1_accuracy(scores[:, c], labels[:, c] > 0.5, t)
      f1s.append(f1)
      accs.append(acc)
      cf1.append(classification.chance_f1(labels[:, c]))
      cacc.append(classification.chance_accuracy(labels[:, c]))
    rows.append(table.row(dataset, protocol, "f1", float(np.mean(f1s)), chance=float(np.mean(cf1)),
                          init=init))
    rows.append(table.row(dataset, protocol, "accuracy", float(np.mean(accs)),
                          chance=float(np.mean(cacc)), init=init))
  if num_classes > 1:
    for c, name in enumerate(class_names):
      rows.append(table.row(dataset, protocol, f"auroc[{name}]", per[c], chance=0.5, init=init))
  table.annotate(rows, [scores], labels, class_names if num_classes > 1 else [],
                 accuracy_metrics=("top1",) if single else ())   # test n, positives, 95 % CI
  return rows


class Evaluator:
  """Zero-shot classification (module docstring).

  Args:
    downstream, data_dir: the built downstream dataset; test_split; val_split ("" = no
      threshold rows).
    prompts: a prompt set name in transfer/prompts/ ("chexpert", "rsna") or a JSON path;
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

  def _features(self, fns, state, split, init, tag_suffix=""):
    tags = fns.tag_logits is not None and self._tags_on()
    keys = ["image_emb"] + (["tag_logits"] if tags else [])
    tag = features.state_tag(state, init) + tag_suffix
    return features.extract(fns, state, self.downstream, split, data_dir=self.data_dir,
                            keys=tuple(keys), batch_size=self.extract_batch_size,
                            cache_dir=self.cache_dir, tag=tag, max_examples=self.max_examples)

  def _tags_on(self) -> bool:
    return "tags" in self.protocols and self.fns.tag_logits is not None

  def tag_plan(self, names: Sequence[str]) -> dict | None:
    """How the tag protocol scores `names`: {"fns", "classes" (positions scored),
    "logit_cols" (their columns of the extracted `tag_logits`), "suffix" (cache tag)},
    or None (skipped, with a message)."""
    from asg_jax.models.tag_queries import NoQueryEncoder  # pylint: disable=import-outside-toplevel
    if not self._tags_on():
      features.progress(f"  zero-shot tags {self.downstream}: the model has no tag decoder; "
                        "skipped")
      return None
    index = tag_index(names, self.tag_names)
    phrases = query_phrases(names, self.tag_names)
    new = [c for c in names if c not in index]
    if new and self.fns.class_tag_logits is not None:
      ordered = [phrases[c] for c in names]
      try:
        fn = self.fns.class_tag_logits(ordered)
      except NoQueryEncoder as e:
        features.progress(f"  zero-shot tags {self.downstream}: {new} are not training tags and "
                          f"{e}; scoring only {list(index) or 'nothing'}")
      else:
        digest = hashlib.sha1("|".join(ordered).encode("utf-8")).hexdigest()[:10]
        return {"fns": dataclasses.replace(self.fns, tag_logits=fn), "classes": list(range(len(names))),
                "logit_cols": list(range(len(names))), "suffix": f"__q{digest}"}
    if not index:
      features.progress(f"  zero-shot tags {self.downstream}: no class of {names} is a tag; skipped")
      return None
    cols = [names.index(c) for c in index]
    return {"fns": self.fns, "classes": cols,
            "logit_cols": [index[names[c]] for c in cols], "suffix": ""}

  def rows(self, state, init: str = "pretrained") -> list[dict]:
    names = features.class_names(self.downstream, self.data_dir)
    plan = self.tag_plan(names) if "tags" in self.protocols else None
    fns, suffix = (plan["fns"], plan["suffix"]) if plan else (
        dataclasses.replace(self.fns, tag_logits=None), "")
    test = self._features(fns, state, self.test_split, init, suffix)
    val = self._features(fns, state, self.val_split, init, suffix) if self.val_split else None
    out = []
    if "prompt" in self.protocols:
      pos, neg = features.load_prompts(self.prompts, names, self.max_prompts, self.prompt_seed)
      protos = features.class_prototypes(self.fns, state, pos)
      neg_protos = {names.index(c): features.class_prototypes(self.fns, state, {c: t})[0]
                    for c, t in neg.items()}
      score = lambda f: prompt_scores(f["image_emb"], protos, neg_protos)
      out += classification_rows(self.downstream, PROTOCOLS["prompt"], score(test),
                                 test["labels"], init, score(val) if val else None,
                                 val["labels"] if val else None, names)
    if plan:
      cols, logit_cols = plan["classes"], plan["logit_cols"]
      sub = [names[c] for c in cols]
      score = lambda f: np.asarray(f["tag_logits"])[:, logit_cols]
      out += classification_rows(self.downstream, PROTOCOLS["tags"], score(test),
                                 test["labels"][:, cols], init,
                                 score(val) if val else None,
                                 val["labels"][:, cols] if val else None, sub)
    return out

  def run(self, state):
    yield from table.yield_rows(self.rows(state, getattr(state, "init", "pretrained")))
