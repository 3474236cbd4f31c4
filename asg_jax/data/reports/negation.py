"""Negation and uncertainty with scope, NegEx-style, over one sentence (a cleaning piece).

A `Sentence` holds the piece's words (exactly the cleaned sentence's words) and where the
dropped punctuation fell. Cues (resources/cues.json) are found longest-first; each cue
governs a scope:

* pre-cues ("no", "without", "may", "cannot exclude", ...) act forward, post-cues
  ("has resolved", "is not seen", "cannot be excluded", ...) backward;
* a scope ends at clause punctuation (; : ( ) [ ]), at a terminator ("but", "however",
  "although", "which", ...), at any other cue, at a new clause ("and" or a comma followed
  by "there", "the", "stable", "persistent", "mild", ... — but not a comma opening an item
  of an "X, Y, or Z" list), and, for negation only, at a
  finite verb ("is", "are", "has", "seen", ...) that follows the negated words; a
  forward negation scope spans at most MAX_SCOPE words;
* a negation scope runs on through a "bridge" uncertainty cue ("no opacity to suggest
  pneumonia": pneumonia is absent, not uncertain);
* post-cues that are also pre-cues ("likely", "possible", "borderline") act backward
  only at the end of their clause ("pneumonia is likely.").

`existence(start, end, mode)` decides present / absent / uncertain for a finding at words
[start, end): strong uncertainty (CheXpert's pre-negation uncertainty) > negation >
uncertainty > "A or B" alternatives > present. In `mode="asg"` (and "nih") "no new X"
negates X; in `mode="chexpert"` it is uncertain, as the CheXpert labeler does. In
`mode="nih"` the hedges of nih14.json `positive_hedges` ("probable", "likely",
"borderline", "versus") do not make a finding uncertain: the Open-i annotators coded them
as present.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

from asg_jax.data.reports import cleaning, vocabulary

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"
EXISTENCE = (PRESENT, ABSENT, UNCERTAIN)
MAX_SCOPE = 12
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORDCHAR = re.compile(r"\w")
_CLAUSE_PUNCT = frozenset(";:()[]{}?!")
_NEG = frozenset({"pre_negation", "post_negation"})
_UNC = frozenset({"pre_uncertainty", "post_uncertainty"})
_STRONG = frozenset({"pre_uncertainty_strong", "post_uncertainty_strong"})


class Cue:
  """One cue occurrence: words [start, end), its kinds and its scope [lo, hi)."""
  __slots__ = ("start", "end", "kinds", "phrase", "fwd", "bwd")

  def __init__(self, start: int, end: int, kinds: frozenset, phrase: str):
    self.start, self.end, self.kinds, self.phrase = start, end, kinds, phrase
    self.fwd: tuple[int, int] = (end, end)
    self.bwd: tuple[int, int] = (start, start)

  def covers(self, start: int, end: int, direction: str) -> bool:
    """True if [start, end) meets the cue's forward/backward scope or the cue itself."""
    lo, hi = self.fwd if direction == "fwd" else self.bwd
    return (start < hi and end > lo) or (start < self.end and end > self.start)


class Sentence:
  """Words of one piece, clause barriers between them, and the cues with their scopes."""

  def __init__(self, piece: str):
    words: list[str] = []
    barrier = []      # barrier[i]: clause punctuation between word i-1 and word i
    comma = []        # comma[i]: a comma between word i-1 and word i
    pending_barrier, pending_comma = False, False
    for tok in _TOKEN.findall(piece.lower()):
      if _WORDCHAR.match(tok):
        word = cleaning.ascii_word(tok)
        if not word:
          continue
        words.append(word)
        barrier.append(pending_barrier)
        comma.append(pending_comma)
        pending_barrier = pending_comma = False
      elif tok in _CLAUSE_PUNCT:
        pending_barrier = True
      elif tok == ",":
        pending_comma = True
    self.words: list[str] = words
    self.n = len(words)
    lists = vocabulary.cue_lists()
    self.found: dict[str, list] = {}
    for s, e, (cat, value), phrase in vocabulary.all_phrases().find(words):
      self.found.setdefault(cat, []).append((s, e, value, phrase))
    # A new clause starts at "and"/comma + a clause starter ("and there is", ", stable ...").
    starters = {s for s, _, _, _ in self.found.get("starter", ())}
    punct = list(barrier)
    in_normal = {j for s, e, _, _ in self.found.get("normal", ()) for j in range(s, e)}
    for i in sorted(starters):
      if i > 0 and words[i - 1] == "and" and i - 1 in in_normal:
        continue   # "normal and stable contours" is one clause
      if i > 0 and words[i - 1] == "and":
        barrier[i - 1] = True
        barrier[i] = True
      elif comma[i] and not self._list_item(i, punct):
        barrier[i] = True
    self.barrier = barrier + [True]
    self.comma = comma
    self.cues = [Cue(s, e, kinds, phrase)
                 for s, e, kinds, phrase in vocabulary.longest(self.found.get("cue", ()))]
    self._cue_at = [None] * self.n
    for c in self.cues:
      for i in range(c.start, c.end):
        self._cue_at[i] = c
    verbs, aux = lists["scope_verbs"], lists["aux_before_post"]
    self._bridges = lists["negation_bridges"]
    for c in self.cues:
      if c.kinds == {"pseudo"} or c.kinds == {"terminators"}:
        continue
      c.fwd = (c.end, self._forward_end(c, verbs))
      c.bwd = (self._backward_start(c, verbs, aux), c.start)
    self.normal = self.found.get("normal", [])

  def _list_item(self, i: int, punct: list) -> bool:
    """True if word i (after a comma) opens an item of an "X, Y, or Z" list: an "or" / "nor"
    follows before the next clause punctuation ("no consolidation, large effusion, or
    pneumothorax" is one negated list, not a new clause)."""
    for j in range(i + 1, self.n):
      if punct[j]:
        return False
      if self.words[j] in ("or", "nor"):
        return True
    return False

  def _stops(self, i: int, cue: Cue) -> bool:
    other = self._cue_at[i]
    return other is not None and other is not cue and other.kinds != {"pseudo"}

  def _forward_end(self, cue: Cue, verbs: frozenset) -> int:
    negation = bool(cue.kinds & _NEG) and not cue.kinds & _UNC
    j, skipped = cue.end, 0
    while j < self.n and j - cue.end - skipped < MAX_SCOPE:
      if self.barrier[j]:
        break
      if self._stops(j, cue):
        other = self._cue_at[j]
        if negation and other.phrase in self._bridges and other.start == j:
          other.kinds = frozenset({"pseudo"})   # "no opacity to suggest pneumonia"
          skipped += other.end - j               # bridge words do not count against the scope
          j = other.end
          continue
        break
      if negation and j > cue.end and self.words[j] in verbs \
         and self.words[j - 1] not in ("or", "and", "nor"):   # "no X or visualized Y"
        break
      j += 1
    return j

  def _backward_start(self, cue: Cue, verbs: frozenset, aux: frozenset) -> int:
    if not cue.kinds & {"post_negation", "post_uncertainty", "post_uncertainty_strong"}:
      return cue.start
    is_also_pre = bool(cue.kinds & {"pre_negation", "pre_uncertainty", "pre_uncertainty_strong"})
    if is_also_pre and cue.end < self.n and not self.barrier[cue.end]:
      return cue.start   # "likely atelectasis": a pre-cue here, not a post-cue
    negation = "post_negation" in cue.kinds
    j = cue.start
    while j > 0 and not self.barrier[j] and self.words[j - 1] in aux:
      j -= 1
    k = j
    while k > 0 and not self.barrier[k] and cue.start - k < MAX_SCOPE:
      if self._stops(k - 1, cue) or (negation and self.words[k - 1] in verbs):
        break
      k -= 1
    return k

  def same_clause(self, a: int, b: int) -> bool:
    """True if words a and b (a <= b) are not separated by a barrier or a terminator."""
    if a > b:
      a, b = b, a
    for i in range(a + 1, b + 1):
      if self.barrier[i]:
        return False
    for i in range(a, b + 1):
      c = self._cue_at[i]
      if c is not None and "terminators" in c.kinds:
        return False
    return True

  def near_normal(self, start: int, end: int, window: int = 6) -> tuple[int, int] | None:
    """The nearest 'normal' phrase within `window` words in the same clause, or None."""
    best, best_d = None, window + 1
    for s, e, _, _ in self.normal:
      d = s - end if s >= end else (start - e if e <= start else 0)
      if 0 <= d < best_d and self.same_clause(min(s, start), max(e, end) - 1):
        best, best_d = (s, e), d
    return best

  def _covered(self, start: int, end: int, kinds: frozenset, mode: str) -> bool:
    hedges = _nih_positive_hedges() if mode == "nih" and kinds == _UNC else ()
    for c in self.cues:
      ks = c.kinds & kinds
      if not ks:
        continue
      if mode != "chexpert" and c.phrase.startswith("no new") and kinds == _STRONG:
        continue
      if c.phrase in hedges:
        continue
      if ks & {"pre_negation", "pre_uncertainty", "pre_uncertainty_strong"} and c.covers(start, end, "fwd"):
        return True
      if ks & {"post_negation", "post_uncertainty", "post_uncertainty_strong"} and c.covers(start, end, "bwd"):
        return True
    return False

  def negated_no_new(self, start: int, end: int) -> bool:
    """True if a 'no new ...' cue covers [start, end) (a negation for the ASG tags)."""
    return any(c.phrase.startswith("no new") and c.covers(start, end, "fwd") for c in self.cues)

  def existence(self, start: int, end: int, mode: str = "asg") -> str:
    """present / absent / uncertain for a finding at words [start, end)."""
    if self._covered(start, end, _STRONG, mode):
      return UNCERTAIN
    if self._covered(start, end, _NEG, mode) or (mode != "chexpert" and self.negated_no_new(start, end)):
      return ABSENT
    if self._covered(start, end, _UNC, mode):
      return UNCERTAIN
    return PRESENT


@functools.lru_cache(maxsize=None)
def _nih_positive_hedges() -> frozenset:
  """Uncertainty cues that state a finding for the NIH / Open-i labels (nih14.json)."""
  return frozenset(vocabulary.load_json("nih14.json")["positive_hedges"])


def alternatives(sentence: Sentence, spans: Sequence[tuple[int, int]]) -> set[int]:
  """Indices of spans joined to another by 'or' / 'versus' ("atelectasis or pneumonia")."""
  out = set()
  order = sorted(range(len(spans)), key=lambda i: spans[i])
  for a, b in zip(order, order[1:]):
    (s1, e1), (s2, e2) = spans[a], spans[b]
    between = sentence.words[e1:s2]
    if not between or len(between) > 4:
      continue
    if between[0] in ("or", "versus", "vs") or between[:2] == ["and", "or"]:
      if all(not sentence.barrier[i] for i in range(e1 + 1, s2 + 1)):
        out.update((a, b))
  return out
