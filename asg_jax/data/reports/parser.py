"""`parse_report`: sentences, <region, finding, existence> triplets, tags, CheXpert-14, regions.

Per cleaned sentence (see cleaning.py) the parser finds

* finding mentions of the 40 ASG tags (resources/tags.json: direct phrases, normal forms
  such as "well expanded" (absent unless negated), and compound subject + predicate
  mentions such as "heart size ... normal", "mediastinum ... widened"), each with an
  existence from negation.py;
* region mentions of the 29 Chest ImaGenome regions (resources/regions.json), sides resolved
  from "right / left / bilateral / both / bi-" and plural nouns;
* CheXpert-labeler mentions (the labeler's own phrase lists, substring matching as it does)
  with its aggregation rules (No Finding, the "chf" rule, conflicts).

A finding whose own words name a region ("cardiomegaly", "heart size") takes that region;
otherwise it takes the region mentions of its clause that are nearer to it than to any
other finding of the clause (else the nearest free one of its clause; else, if it is not
negated, the nearest free one of its sentence); `None` when there is none.

The per-sentence work (`analyse_sentence`) depends on the sentence text only and is
LRU-cached: real reports repeat sentences a lot (IU X-ray: 4.8k distinct of 13.6k).
Rules, vocabulary and measured quality: docs/reports.md.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import numpy as np

from asg_jax.data.reports import cleaning, negation, nih14 as nih14_lib, sections, spans, vocabulary
from asg_jax.data.reports.chexpert import aggregate_chexpert, chexpert_mentions
from asg_jax.data.reports.vocabulary import CHEXPERT, REGION_INDEX, REGIONS, TAGS, TAG_INDEX

PRESENT, ABSENT, UNCERTAIN = negation.PRESENT, negation.ABSENT, negation.UNCERTAIN
# Tags whose side word ("left pleural effusion") names a lung when no region noun follows.
LUNG_TAGS = frozenset({
    "pleural effusion", "opacity", "pneumothorax", "edema", "atelectasis", "consolidation",
    "pneumonia", "nodule", "mass", "infiltration", "scar", "collapse", "pleural thicken", "blunt",
    "lesion", "aspiration", "calcification", "emphysema", "hyperinflate", "marking", "aerate"})
_NEAR = spans.NEAR
_dist, _overlap = spans.distance, spans.overlap


class Triplet(NamedTuple):
  """<anatomical region (or None), finding tag, existence>."""
  region: str | None
  finding: str
  existence: str


@dataclasses.dataclass(frozen=True)
class Mention:
  """One finding mention: sentence index, word span [start, end) in that sentence."""
  finding: str
  sentence: int
  start: int
  end: int
  existence: str
  regions: tuple[str, ...] = ()


@dataclasses.dataclass
class ParsedReport:
  """Everything the parser derives from one report (see docs/reports.md)."""
  sentences: list[str]
  sentence_word_spans: list[tuple[int, int]]
  triplets: list[list[Triplet]]
  mentions: list[Mention]
  tags: np.ndarray          # int8[40], vocab order: 1 present, 0 absent, -1 not mentioned
  chexpert: np.ndarray      # float32[14], vocab order: 1, 0, -1 uncertain, NaN not mentioned
  regions: dict[str, list[int]]   # region -> sorted sentence indices, in vocab order
  nih14: np.ndarray = dataclasses.field(    # int8[14], NIH-14 order: 1, 0, -1 (nih14.py)
      default_factory=lambda: np.full(len(nih14_lib.NIH14), -1, np.int8))

  @property
  def caption(self) -> str:
    """The cleaned sentences joined by spaces (what the tokenizer sees)."""
    return " ".join(self.sentences)

  @property
  def region_ids(self) -> np.ndarray:
    """int32[R]: vocab indices of the mentioned regions (order of `regions`)."""
    return np.asarray([REGION_INDEX[r] for r in self.regions], dtype=np.int32)

  def region_sentence_index(self) -> np.ndarray:
    """int32[R, S]: sentence indices per region, -1 padded (S = the longest list, >= 1)."""
    width = max([len(v) for v in self.regions.values()] + [1])
    out = np.full((len(self.regions), width), -1, dtype=np.int32)
    for i, idx in enumerate(self.regions.values()):
      out[i, :len(idx)] = idx
    return out

  def region_word_index(self, max_words: int = 110) -> np.ndarray:
    """int32[R, max_words]: caption word positions of each region's sentences, -1 padded.

    Positions index `caption.split()` (the aggregated-word slots once [CLS] is dropped);
    words beyond `max_words` are cut.
    """
    out = np.full((len(self.regions), max_words), -1, dtype=np.int32)
    for i, idx in enumerate(self.regions.values()):
      pos = [p for s in idx for p in range(*self.sentence_word_spans[s])][:max_words]
      out[i, :len(pos)] = pos
    return out

  def nih14_dict(self) -> dict[str, int]:
    """{NIH-14 label: 1 / 0 / -1} for the mentioned labels."""
    return {c: int(v) for c, v in zip(nih14_lib.NIH14, self.nih14) if v != -1}

  def tag_dict(self) -> dict[str, int]:
    """{tag: 1 / 0 / -1} for the mentioned tags."""
    return {t: int(v) for t, v in zip(TAGS, self.tags) if v != -1}


def _empty() -> ParsedReport:
  return ParsedReport(sentences=[], sentence_word_spans=[], triplets=[], mentions=[],
                      tags=np.full(len(TAGS), -1, np.int8),
                      chexpert=np.full(len(CHEXPERT), np.nan, np.float32), regions={})


# ---------------------------------------------------------------- findings (ASG tags)

def find_tag_mentions(sent: negation.Sentence, mode: str = "asg") -> list[tuple[str, int, int, str]]:
  """(tag, start, end, existence) of every ASG-tag mention in a sentence.

  `mode="nih"` gives the existences the NIH-14 labels use: the nih14.json positive hedges
  ("probable X", "X versus Y") and "A or B" alternatives state both findings as present."""
  m = vocabulary.tag_matchers()
  excluded = {}
  for s, e, tag, _ in sent.found.get("exclude", ()):
    excluded.setdefault(tag, []).append((s, e))
  found: list[tuple[str, int, int, str]] = []

  def add(tag: str, s: int, e: int, existence: str) -> None:
    if any(_overlap((s, e), x) for x in excluded.get(tag, ())):
      return
    for k, (t, a, b, x) in enumerate(found):
      if t == tag and _overlap((s, e), (a, b)):
        return
      if t == tag and x == existence and (b == s or e == a):   # "endotracheal" + "tube"
        found[k] = (t, min(a, s), max(b, e), x)
        return
    found.append((tag, s, e, existence))

  # Direct mentions and normal forms, longest first ("poorly expanded" beats "expanded").
  # A normal form ("well aerated") states the finding's absence; negated, its presence.
  flip = {PRESENT: ABSENT, ABSENT: PRESENT, UNCERTAIN: UNCERTAIN}
  direct = [(s, e, tag, False) for s, e, tag, _ in sent.found.get("direct", ())]
  direct += [(s, e, tag, True) for s, e, tag, _ in sent.found.get("normal_form", ())]
  direct.sort(key=lambda x: (x[0] - x[1], x[0]))
  for s, e, tag, normal_form in direct:
    existence = sent.existence(s, e, mode)
    if normal_form:
      existence = flip[existence]
    elif existence == PRESENT and tag in m["normal_negates"] and sent.near_normal(s, e):
      existence = ABSENT
    add(tag, s, e, existence)
  found.sort(key=lambda x: x[1])
  predicates = sent.found.get("predicate", ())
  for s, e, tag, _ in sent.found.get("subject", ()):
    best, best_d = None, _NEAR + 1
    for ps, pe, ptag, _ in predicates:
      d = _dist((s, e), (ps, pe))
      if ptag == tag and not _overlap((s, e), (ps, pe)) and d < best_d \
         and sent.same_clause(min(s, ps), max(e, pe) - 1):
        best, best_d = (min(s, ps), max(e, pe)), d
    normal = sent.near_normal(s, e, _NEAR)
    if normal is not None and _dist((s, e), normal) <= best_d:
      add(tag, s, e, ABSENT)
    elif best is not None:
      add(tag, best[0], best[1], sent.existence(best[0], best[1], mode))
  if mode == "nih":
    return found
  alt = negation.alternatives(sent, [(s, e) for _, s, e, _ in found])
  return [(t, s, e, UNCERTAIN if i in alt and x == PRESENT else x)
          for i, (t, s, e, x) in enumerate(found)]


# ---------------------------------------------------------------- regions

def _side_before(sent: negation.Sentence, start: int, stop_spans: Sequence[tuple[int, int]]) -> set[str]:
  side_of = vocabulary.region_matchers()["side_of"]
  j = start - 1
  while j >= 0 and start - j <= 4:
    if sent.barrier[j + 1] or any(a <= j < b for a, b in stop_spans):
      return set()
    side = side_of.get(sent.words[j])
    if side:
      sides = {side}
      if j >= 2 and sent.words[j - 1] in ("and", "or", "to") and side_of.get(sent.words[j - 2]):
        sides.add(side_of[sent.words[j - 2]])
      return sides
    j -= 1
  return set()


def _expand(template: str, sides: set[str]) -> tuple[str, ...]:
  if "both" in sides or {"right", "left"} <= sides:
    return (template.format(side="right"), template.format(side="left"))
  return tuple(template.format(side=s) for s in sorted(sides))


def find_region_mentions(sent: negation.Sentence,
                         tag_mentions: Sequence[tuple[str, int, int, str]] = ()
                         ) -> list[tuple[tuple[str, ...], int, int]]:
  """(regions, start, end) of every region mention in a sentence."""
  rm = vocabulary.region_matchers()
  side_of = rm["side_of"]
  words = sent.words
  matches = vocabulary.longest(sent.found.get("region", ()))
  spans = [(s, e) for s, e, _, _ in matches]
  out: list[tuple[tuple[str, ...], int, int]] = []
  used_sides: set[int] = set()
  for k, (s, e, payload, _) in enumerate(matches):
    if payload[0] == "fixed":
      out.append((payload[1], s, e))
      continue
    _, template, plural = payload
    sides = _side_before(sent, s, spans[:k])
    if sides:
      used_sides.update(j for j in range(max(0, s - 4), s) if words[j] in side_of)
    if not sides and e < len(words) and words[e] in ("bilaterally", "bilateral"):
      sides = {"both"}
    if not sides and plural:
      sides = {"both"}
    if not sides:
      earlier = [side_of[w] for w in words[:s] if w in side_of]
      if earlier:
        sides = {earlier[-1]}
    if sides:
      out.append((_expand(template, sides), s, e))
  in_region = {j for s, e in spans for j in range(s, e)}
  for p, w in enumerate(words):
    if w not in side_of or p in used_sides or p in in_region:
      continue
    if any(tag in LUNG_TAGS and p < s <= p + 3 and sent.same_clause(p, s)
           for tag, s, _, _ in tag_mentions):
      out.append((_expand("{side} lung", {side_of[w]}), p, p + 1))
  return out


def _attach(sent: negation.Sentence, findings: Sequence[tuple[str, int, int, str]],
            region_mentions: Sequence[tuple[tuple[str, ...], int, int]]) -> list[tuple[str, ...]]:
  """Regions of each finding (see the module docstring)."""
  attached: list[list[int]] = [[] for _ in findings]
  owned = set()   # region words inside a finding ("cardiomegaly", "heart size") belong to it
  for f, (_, s, e, _) in enumerate(findings):
    for r, (_, rs, re_) in enumerate(region_mentions):
      if _overlap((s, e), (rs, re_)):
        attached[f].append(r)
        owned.add(r)
  intrinsic = {f for f, idx in enumerate(attached) if idx}
  for r, (_, rs, re_) in enumerate(region_mentions):
    if r in owned:
      continue
    cands = [(_dist((s, e), (rs, re_)), f) for f, (_, s, e, _) in enumerate(findings)
             if f not in intrinsic and sent.same_clause(min(s, rs), max(e, re_) - 1)]
    if cands:
      best = min(d for d, _ in cands)
      for d, f in cands:
        if d == best:
          attached[f].append(r)
  out = []
  for f, (_, s, e, existence) in enumerate(findings):
    idx = attached[f]
    if not idx:
      pool = [r for r, (_, rs, re_) in enumerate(region_mentions)
              if r not in owned and sent.same_clause(min(s, rs), max(e, re_) - 1)]
      if not pool and existence != ABSENT:
        pool = [r for r in range(len(region_mentions)) if r not in owned]
      if pool:
        best = min(_dist((s, e), region_mentions[r][1:]) for r in pool)
        idx = [r for r in pool if _dist((s, e), region_mentions[r][1:]) == best]
    regions: list[str] = []
    for r in idx:
      for name in region_mentions[r][0]:
        if name not in regions:
          regions.append(name)
    out.append(tuple(regions))
  return out


def _tag_vector(mentions: Sequence[Mention], uncertain_as: int) -> np.ndarray:
  vec = np.full(len(TAGS), -1, np.int8)
  for want in (0, 1):   # presence wins over absence
    for m in mentions:
      v = {PRESENT: 1, ABSENT: 0, UNCERTAIN: uncertain_as}[m.existence]
      if v == want:
        vec[TAG_INDEX[m.finding]] = v
  return vec


@functools.lru_cache(maxsize=1 << 16)
def analyse_sentence(piece: str, sentence: str) -> tuple[tuple, tuple, tuple, tuple, tuple]:
  """Everything the parser derives from one sentence, cached (reports repeat sentences a lot).

  Args: the raw cleaning piece (punctuation kept, for clause boundaries) and its cleaned
  sentence. Returns (findings: ((tag, start, end, existence), ...), region names mentioned,
  regions attached to each finding, CheXpert mentions ((observation, phrase, existence), ...),
  NIH-14 mentions ((label, existence), ...) of the findings).
  """
  sent = negation.Sentence(piece)
  if sent.words != sentence.split():   # defensive: parse the cleaned words instead
    sent = negation.Sentence(sentence)
    piece = sentence
  findings = find_tag_mentions(sent)
  region_mentions = find_region_mentions(sent, findings)
  names = tuple(dict.fromkeys(name for names, _, _ in region_mentions for name in names))
  attached = _attach(sent, findings, region_mentions)
  nih_findings = findings
  if any(x == UNCERTAIN for *_, x in findings):
    nih_findings = find_tag_mentions(sent, "nih")
  nih = nih14_lib.sentence_labels(sent, nih_findings)
  return (tuple(findings), names, tuple(attached), tuple(chexpert_mentions(sent, piece)), nih)


@functools.lru_cache(maxsize=1 << 12)
def _single_word_nih(piece: str) -> tuple[tuple[str, str], ...]:
  """NIH-14 mentions of a one-word piece the cleaning drops ("Cardiomegaly.", "Emphysema.")."""
  sent = negation.Sentence(piece)
  return nih14_lib.sentence_labels(sent, find_tag_mentions(sent, "nih")) if sent.n else ()


def _cleaned_from(raw_or_clean, sections_: bool) -> cleaning.CleanedReport | None:
  if isinstance(raw_or_clean, str):
    text = sections.report_text(raw_or_clean) if sections_ else raw_or_clean
    return None if text is None else cleaning.clean_report(text)
  if isinstance(raw_or_clean, (list, tuple)) and all(isinstance(s, str) for s in raw_or_clean):
    sentences, spans, pieces, pos = [], [], [], 0
    for piece in raw_or_clean:
      sentence = cleaning.clean_sentence(piece)
      if sentence is None:
        continue
      n = len(sentence.split())
      sentences.append(sentence)
      spans.append((pos, pos + n))
      pieces.append(piece)
      pos += n
    return cleaning.CleanedReport(sentences, spans, pieces) if sentences else None
  raise ValueError("parse_report expects the report as str (raw or cleaned text) or a list of "
                   f"sentence strings, got {type(raw_or_clean).__name__}")


def parse_report(raw_or_clean: str | Sequence[str], *, uncertain_as: int = 1,
                 sections: bool = True, nih14_uncertain_as: int = 0) -> ParsedReport:
  """Parse one report into sentences, triplets, tags, CheXpert-14 labels and regions.

  Args:
    raw_or_clean: raw report text (sections are extracted when `sections` is True), or
      already-cleaned text, or a list of sentences (each kept as one sentence).
    uncertain_as: tag value of a finding only mentioned as uncertain: 1 (default, like
      CheXpert's U-ones), 0, or -1 (treated as not mentioned).
    sections: extract IMPRESSION + FINDINGS first (`report_text`); False parses the text
      as given.
    nih14_uncertain_as: NIH-14 value of a label only mentioned as uncertain: 0 (default:
      NIH labels are binary "present"), 1, or -1.
  Returns a ParsedReport; an empty or unusable report gives empty `sentences`, tags all
  -1 and CheXpert all NaN. Raises ValueError for input of the wrong type.
  """
  if uncertain_as not in (1, 0, -1):
    raise ValueError(f"parse_report: uncertain_as must be 1, 0 or -1, got {uncertain_as!r}")
  if nih14_uncertain_as not in (1, 0, -1):
    raise ValueError("parse_report: nih14_uncertain_as must be 1, 0 or -1, got "
                     f"{nih14_uncertain_as!r}")
  cleaned = _cleaned_from(raw_or_clean, sections)
  if cleaned is None:
    return _empty()
  mentions: list[Mention] = []
  triplets: list[list[Triplet]] = []
  region_sentences: dict[str, set[int]] = {}
  chx: list[tuple[str, str, str]] = []
  nih: list[tuple[str, str]] = []
  for i, (sentence, piece) in enumerate(zip(cleaned.sentences, cleaned.pieces)):
    findings, region_names, attached, sent_chx, sent_nih = analyse_sentence(piece, sentence)
    nih.extend(sent_nih)
    for name in region_names:
      region_sentences.setdefault(name, set()).add(i)
    sent_triplets: list[Triplet] = []
    for (tag, s, e, existence), regions in zip(findings, attached):
      mentions.append(Mention(tag, i, s, e, existence, regions))
      for region in regions or (None,):
        t = Triplet(region, tag, existence)
        if t not in sent_triplets:
          sent_triplets.append(t)
    triplets.append(sent_triplets)
    chx.extend(sent_chx)
  for piece in cleaned.single_word_pieces:   # "Cardiomegaly." (not a sentence, a finding)
    nih.extend(_single_word_nih(piece))
  regions = {r: sorted(region_sentences[r]) for r in REGIONS if r in region_sentences}
  return ParsedReport(sentences=list(cleaned.sentences),
                      sentence_word_spans=list(cleaned.sentence_word_spans),
                      triplets=triplets, mentions=mentions,
                      tags=_tag_vector(mentions, uncertain_as),
                      chexpert=aggregate_chexpert(chx), regions=regions,
                      nih14=nih14_lib.aggregate(nih, nih14_uncertain_as))
