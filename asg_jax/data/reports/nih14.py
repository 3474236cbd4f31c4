"""NIH ChestX-ray14 labels (14 findings, vocab.json `nih_chestxray14_classes`) from the
parser's finding mentions, with NIH / Open-i semantics.

Each ASG-tag mention (the findings of the triplets, with their words and existence) is
mapped to NIH labels by resources/nih14.json: a label lists the ASG tags it comes from, and
per tag optionally `words` (the mention's own words must match one of these phrases, e.g.
Nodule only from "nodule(s)": a calcified granuloma or a "nodular opacity" is no Nodule),
`not_words` (a veto on the mention's words) and `not_in_sentence` (a veto on its sentence:
a vertebral "collapse" is no Atelectasis); `phrases` add NIH-only mentions ("borderline
heart size" is Cardiomegaly for the Open-i annotators). A label is 1 if some mention asserts it, else 0 if some mention negates it, else
-1; uncertain mentions ("may represent pneumonia") count as `uncertain_as` (default 0: an
NIH label is a binary "present"). Where the two vocabularies differ and why:
docs/reports.md.
"""
from __future__ import annotations

import functools
from typing import Iterable, Sequence

import numpy as np

from asg_jax.data.reports import negation, vocabulary

NIH14: tuple[str, ...] = tuple(vocabulary.load_json("vocab.json")["nih_chestxray14_classes"])
NIH14_INDEX = {c: i for i, c in enumerate(NIH14)}
PRESENT, ABSENT, UNCERTAIN = negation.PRESENT, negation.ABSENT, negation.UNCERTAIN


@functools.lru_cache(maxsize=None)
def rules() -> dict[str, list[tuple[str, vocabulary.PhraseMatcher | None, vocabulary.PhraseMatcher | None,
                                   vocabulary.PhraseMatcher | None]]]:
  """ASG tag -> [(NIH label, words, not_words, not_in_sentence matchers or None)]."""
  spec = vocabulary.load_json("nih14.json")
  out: dict[str, list] = {}
  for label in NIH14:
    for src in spec["labels"][label]["from"]:
      tag = src["tag"]
      if tag not in vocabulary.TAG_INDEX:
        raise ValueError(f"nih14.json: {label} names unknown ASG tag {tag!r}")
      words = vocabulary.PhraseMatcher((p, True) for p in src["words"]) if "words" in src else None
      veto = vocabulary.PhraseMatcher((p, True) for p in src["not_words"]) if "not_words" in src else None
      away = (vocabulary.PhraseMatcher((p, True) for p in src["not_in_sentence"])
              if "not_in_sentence" in src else None)
      out.setdefault(tag, []).append((label, words, veto, away))
  extra = set(spec["labels"]) - set(NIH14)
  if extra:
    raise ValueError(f"nih14.json: unknown labels {sorted(extra)}")
  return out


@functools.lru_cache(maxsize=None)
def phrase_matcher() -> vocabulary.PhraseMatcher:
  """The NIH-only direct phrases of nih14.json (payload: the label)."""
  spec = vocabulary.load_json("nih14.json")["labels"]
  return vocabulary.PhraseMatcher((p, label) for label in NIH14 for p in spec[label].get("phrases", ()))


def sentence_labels(sent: negation.Sentence, findings: Sequence[tuple[str, int, int, str]]
                    ) -> tuple[tuple[str, str], ...]:
  """(NIH label, existence) of a sentence: its ASG-tag findings (existences in "nih" mode,
  see parser.find_tag_mentions) mapped by `mention_labels`, plus the NIH-only phrases."""
  out = [(label, existence) for tag, s, e, existence in findings
         for label in mention_labels(tag, sent.words[s:e], sent.words)]
  for s, e, label, _ in phrase_matcher().find(sent.words):
    out.append((label, sent.existence(s, e, "nih")))
  return tuple(out)


def mention_labels(tag: str, words: Sequence[str], sentence: Sequence[str] = ()) -> tuple[str, ...]:
  """The NIH labels an ASG-tag mention with these words (in this sentence) stands for."""
  out = []
  for label, want, veto, away in rules().get(tag, ()):
    if want is not None and not want.find(words):
      continue
    if veto is not None and veto.find(words):
      continue
    if away is not None and away.find(sentence):
      continue
    out.append(label)
  return tuple(out)


def aggregate(labelled: Iterable[tuple[str, str]], uncertain_as: int = 0) -> np.ndarray:
  """int8[14] in vocab order from (NIH label, existence) pairs: present wins over absent."""
  vec = np.full(len(NIH14), -1, np.int8)
  value = {PRESENT: 1, ABSENT: 0, UNCERTAIN: uncertain_as}
  best: dict[int, int] = {}
  for label, existence in labelled:
    v = value[existence]
    i = NIH14_INDEX[label]
    if v == 1 or (v == 0 and best.get(i, -1) == -1):
      best[i] = v
  for i, v in best.items():
    vec[i] = v
  return vec


# ---------------------------------------------------------------- Open-i gold standard

def load_openi(directory) -> tuple[list[str], list[str], np.ndarray]:
  """(uids, report texts, int8[N, 14] gold labels) of an Open-i gold-standard folder.

  The folder holds `reports.csv` (uid, findings, impression) and `labels.csv` (filename
  `CXR<uid>`, the 14 labels (NegBio's `openi_gld_std14.csv` columns), normal), as
  ../shared/realdata/openi-gold-dev. The text is FINDINGS + " " + IMPRESSION.
  """
  import csv
  import pathlib
  d = pathlib.Path(directory)
  with open(d / "reports.csv", newline="", encoding="utf-8") as f:
    reports = {r["uid"]: " ".join(t for t in (r["findings"], r["impression"]) if t)
               for r in csv.DictReader(f)}
  uids, texts, gold = [], [], []
  with open(d / "labels.csv", newline="", encoding="utf-8") as f:
    for row in csv.DictReader(f):
      uid = row["filename"].removeprefix("CXR")
      uids.append(uid)
      texts.append(reports.get(uid, ""))
      gold.append([int(row[c]) for c in NIH14])
  return uids, texts, np.asarray(gold, np.int8).reshape(-1, len(NIH14))


def score(pred: np.ndarray, gold: np.ndarray, labels: Sequence[str] = NIH14,
          min_positives: int = 5) -> dict:
  """Precision / recall / F1 of `pred == 1` against `gold == 1`, per label and overall.

  Returns {"labels": {label: {positives, tp, fp, fn, precision, recall, f1}}, "micro_f1",
  "macro_f1" (mean F1 of the labels with >= `min_positives` gold positives)}.
  """
  p, g = np.asarray(pred) == 1, np.asarray(gold) == 1
  tp, fp, fn = (p & g).sum(0), (p & ~g).sum(0), (~p & g).sum(0)
  per = {}
  for i, label in enumerate(labels):
    prec = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else 0.0
    rec = tp[i] / (tp[i] + fn[i]) if tp[i] + fn[i] else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    per[label] = {"positives": int(g[:, i].sum()), "tp": int(tp[i]), "fp": int(fp[i]),
                  "fn": int(fn[i]), "precision": float(prec), "recall": float(rec), "f1": float(f1)}
  denom = 2 * tp.sum() + fp.sum() + fn.sum()
  micro = float(2 * tp.sum() / denom) if denom else 0.0
  macro_of = [v["f1"] for v in per.values() if v["positives"] >= min_positives]
  return {"labels": per, "micro_f1": micro,
          "macro_f1": float(np.mean(macro_of)) if macro_of else 0.0}
