"""The CheXpert labeler's mention rules (stanfordmlgroup/chexpert-labeler): its mention /
unmention phrase lists matched on the labeler's own tokenisation of a sentence, the shared
negation / uncertainty cues, and its aggregation into the 14 observations (1 / 0 / -1 / NaN,
"No Finding" when nothing but support devices is positive or uncertain).

    chexpert_mentions(sentence, piece) -> [(observation, existence, phrase), ...]
    aggregate_chexpert(mentions) -> float32 [14]
"""
from __future__ import annotations

import bisect
import functools
import re
from typing import Sequence

import numpy as np

from asg_jax.data.reports import cleaning, negation, vocabulary
from asg_jax.data.reports.spans import NEAR as _NEAR, distance as _dist, overlap as _overlap
from asg_jax.data.reports.vocabulary import CHEXPERT, CHEXPERT_INDEX

PRESENT, ABSENT, UNCERTAIN = negation.PRESENT, negation.ABSENT, negation.UNCERTAIN

_CHX_TOKEN = re.compile(r"\w+|[^\w\s]")



def _chexpert_text(piece: str) -> tuple[str, list[tuple[int, int]]]:
  """Space-joined words and punctuation of a piece, with each word's character range."""
  parts, ranges, pos = [], [], 1
  for tok in _CHX_TOKEN.findall(piece.lower()):
    if negation._WORDCHAR.match(tok):  # pylint: disable=protected-access
      tok = cleaning.ascii_word(tok)
      if not tok:
        continue
      ranges.append((pos, pos + len(tok)))
    parts.append(tok)
    pos += len(tok) + 1
  return " " + " ".join(parts) + " ", ranges


@functools.lru_cache(maxsize=None)
def _chexpert_index() -> tuple[re.Pattern, tuple[tuple[str, str], ...]]:
  """A regex matching any CheXpert-labeler mention phrase (a quick "none here" test), and
  every (observation, phrase) in observation order."""
  mention = vocabulary.chexpert_phrases()["mention"]
  flat = tuple((obs, phrase) for obs, plist in mention.items() for phrase in plist)
  phrases = sorted({p for _, p in flat}, key=len, reverse=True)
  return re.compile("|".join(re.escape(p) for p in phrases)), flat


def _occurrences(text: str, phrase: str) -> list[int]:
  """Start offsets of the non-overlapping occurrences of `phrase` (as re.finditer)."""
  out, pos = [], text.find(phrase)
  while pos != -1:
    out.append(pos)
    pos = text.find(phrase, pos + len(phrase))
  return out


def chexpert_mentions(sent: negation.Sentence, piece: str) -> list[tuple[str, str, str]]:
  """(observation, matched phrase, existence) of the CheXpert-labeler mentions of a sentence."""
  phrases = vocabulary.chexpert_phrases()
  lists = vocabulary.cue_lists()
  text, ranges = _chexpert_text(piece)
  if len(ranges) != sent.n:
    return []
  found: list[tuple[str, str, int, int]] = []
  starts = [a for a, _ in ranges]
  unm_cache: dict[str, list[tuple[int, int]]] = {}
  any_rx, flat = _chexpert_index()
  hits = [] if any_rx.search(text) is None else [
      (obs, phrase, pos) for obs, phrase in flat if phrase in text
      for pos in _occurrences(text, phrase)]
  for obs, phrase, pos in hits:
    unm = unm_cache.get(obs)
    if unm is None:
      unm = unm_cache[obs] = [(a, a + len(u)) for u in phrases["unmention"].get(obs, ())
                              if u in text for a in _occurrences(text, u)]
    a, b = pos, pos + len(phrase)
    if any(_overlap((a, b), u) for u in unm):
      continue
    # the words whose character range meets [a, b)
    first = max(bisect.bisect_right(starts, a) - 1, 0)
    if ranges[first][1] <= a:
      first += 1
    last = bisect.bisect_left(starts, b) - 1
    if first < len(ranges) and first <= last:
      found.append((obs, phrase, first, last + 1))
  out = []
  stable_subjects = lists["chexpert_stable_subjects"]
  stable = sent.found.get("stable", ())
  for obs, phrase, s, e in found:
    existence = sent.existence(s, e, "chexpert")
    if obs in ("Cardiomegaly", "Enlarged Cardiomediastinum") and existence != ABSENT:
      if sent.near_normal(s, e):
        existence = ABSENT
      elif existence == PRESENT and set(phrase.split()) & stable_subjects and any(
          _dist((s, e), (a, b)) <= _NEAR and sent.same_clause(min(s, a), max(e, b) - 1)
          for a, b, _, _ in stable):
        existence = UNCERTAIN
    found_span = (s, e)
    out.append((obs, phrase, existence, found_span))
  alt = negation.alternatives(sent, [sp for *_, sp in out])
  return [(o, p, UNCERTAIN if i in alt and x == PRESENT else x)
          for i, (o, p, x, _) in enumerate(out)]


_CHX_VALUE = {PRESENT: 1.0, ABSENT: 0.0, UNCERTAIN: -1.0}


def aggregate_chexpert(mentions: Sequence[tuple[str, str, str]]) -> np.ndarray:
  """CheXpert labeler aggregation -> float32[14] in vocab order (1, 0, -1, NaN).

  Conflicts, in the labeler's order: negative+uncertain -> uncertain (even with a
  positive); negative+positive -> positive; uncertain+positive -> positive. A positive/uncertain "chf" or "heart failure" adds an
  uncertain Cardiomegaly. No Finding = 1 when no observation but Support Devices (No
  Finding's own "other finding" phrases included) is positive or uncertain.
  """
  labels: dict[str, list[float]] = {}
  no_finding = True
  for obs, phrase, existence in mentions:
    value = _CHX_VALUE[existence]
    if obs != "Support Devices" and value in (1.0, -1.0):
      no_finding = False
    if obs == "No Finding":
      continue
    if value in (1.0, -1.0) and phrase in ("chf", "heart failure"):
      labels.setdefault("Cardiomegaly", []).append(-1.0)
    labels.setdefault(obs, []).append(value)
  out = np.full(len(CHEXPERT), np.nan, np.float32)
  for obs, values in labels.items():
    vs = set(values)
    if 0.0 in vs and -1.0 in vs:     # the labeler checks this case first
      v = -1.0
    elif 1.0 in vs:
      v = 1.0
    else:
      v = values[0]
    out[CHEXPERT_INDEX[obs]] = v
  if no_finding:
    out[CHEXPERT_INDEX["No Finding"]] = 1.0
  return out


# ---------------------------------------------------------------- the report
