"""Vocabularies of the report parser, loaded once from the package's resources/.

Phrase syntax (tags.json, regions.json, cues.json): words separated by spaces, matched on
the lower-cased `\\w+` words of a sentence; `x*` matches any word starting with `x`;
`~N` matches up to N arbitrary words. `PhraseMatcher` finds every (start, end, payload)
occurrence in a word list; it indexes phrases by their first word so matching stays
linear in the number of words.
"""
from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Iterable, Sequence

RESOURCES = pathlib.Path(__file__).resolve().parent / "resources"


@functools.lru_cache(maxsize=None)
def load_json(name: str) -> Any:
  """Parsed JSON resource `resources/<name>`."""
  with open(RESOURCES / name, encoding="utf-8") as f:
    return json.load(f)


def _vocab() -> dict:
  return load_json("vocab.json")


TAGS: tuple[str, ...] = tuple(_vocab()["asg_tags_40"])
REGIONS: tuple[str, ...] = tuple(_vocab()["imagenome_regions_29"])
CHEXPERT: tuple[str, ...] = tuple(_vocab()["chexpert_observations_14"])
TAG_INDEX = {t: i for i, t in enumerate(TAGS)}
REGION_INDEX = {r: i for i, r in enumerate(REGIONS)}
CHEXPERT_INDEX = {c: i for i, c in enumerate(CHEXPERT)}


def _compile(phrase: str) -> tuple:
  """'pleural ~3 thicken*' -> (('w','pleural'), ('gap',3), ('p','thicken'))."""
  items = []
  for word in phrase.lower().split():
    if word.startswith("~") and word[1:].isdigit():
      items.append(("gap", int(word[1:])))
    elif word.endswith("*") and len(word) > 1:
      items.append(("p", word[:-1]))
    else:
      items.append(("w", word))
  if not items or items[0][0] == "gap" or items[-1][0] == "gap":
    raise ValueError(f"bad phrase {phrase!r}: empty or starting/ending with a gap")
  return tuple(items)


def _item_ok(item: tuple, word: str) -> bool:
  kind, value = item
  return word == value if kind == "w" else word.startswith(value)


def _match_from(items: tuple, words: Sequence[str], i: int, k: int) -> list[int]:
  """End positions (exclusive) where items[k:] matches words starting at i."""
  if k == len(items):
    return [i]
  kind, value = items[k]
  if kind == "gap":
    ends = []
    for skip in range(value + 1):
      ends.extend(_match_from(items, words, i + skip, k + 1))
    return ends
  if i < len(words) and _item_ok(items[k], words[i]):
    return _match_from(items, words, i + 1, k + 1)
  return []


class PhraseMatcher:
  """All occurrences of a set of phrases (each with a payload) in a list of words."""

  def __init__(self, entries: Iterable[tuple[str, Any]]):
    self._exact: dict[str, list] = {}    # first word -> phrases with gaps / prefixes
    self._simple: dict[str, list] = {}   # first word -> plain word sequences (fast path)
    self._prefix: dict[str, list] = {}
    for phrase, payload in entries:
      items = _compile(phrase)
      kind, value = items[0]
      if all(k == "w" for k, _ in items):
        self._simple.setdefault(value, []).append(([v for _, v in items], payload, phrase))
      elif kind == "w":
        self._exact.setdefault(value, []).append((items, payload, phrase))
      else:
        self._prefix.setdefault(value[:3], []).append((items, payload, phrase))

  def candidates(self, word: str) -> list:
    """Phrases with a gap or a prefix item whose first item accepts `word`."""
    out = list(self._exact.get(word, ()))
    for items, payload, phrase in self._prefix.get(word[:3], ()):
      if word.startswith(items[0][1]):
        out.append((items, payload, phrase))
    return out

  def find(self, words: Sequence[str]) -> list[tuple[int, int, Any, str]]:
    """Every (start, end, payload, phrase) match, longest end per phrase and start."""
    found = []
    words = list(words)
    simple, exact, prefix = self._simple, self._exact, self._prefix
    for i, word in enumerate(words):
      for seq, payload, phrase in simple.get(word, ()):
        n = len(seq)
        if n == 1 or words[i:i + n] == seq:
          found.append((i, i + n, payload, phrase))
      if word in exact or word[:3] in prefix:
        for items, payload, phrase in self.candidates(word):
          ends = _match_from(items, words, i, 0)
          if ends:
            found.append((i, max(ends), payload, phrase))
    return found

  def find_longest(self, words: Sequence[str]) -> list[tuple[int, int, Any, str]]:
    """Greedy left-to-right, longest-first, non-overlapping matches."""
    return longest(self.find(words))


def longest(matches: Iterable[tuple[int, int, Any, str]]) -> list[tuple[int, int, Any, str]]:
  """Greedy left-to-right, longest-first, non-overlapping subset of `matches`."""
  by_start: dict[int, tuple] = {}
  for m in matches:
    best = by_start.get(m[0])
    if best is None or m[1] > best[1]:
      by_start[m[0]] = m
  out, pos = [], 0
  for start in sorted(by_start):
    if start >= pos:
      out.append(by_start[start])
      pos = by_start[start][1]
  return out


def _tag_entries() -> tuple[list, list, list, list, list]:
  spec = load_json("tags.json")
  direct, exclude, subjects, predicates, normal_negates = [], [], [], [], []
  for tag in TAGS:
    s = spec[tag]
    direct += [(p, tag) for p in s.get("phrases", ())]
    exclude += [(p, tag) for p in s.get("exclude", ())]
    subjects += [(p, tag) for p in s.get("subjects", ())]
    predicates += [(p, tag) for p in s.get("predicates", ())]
    if s.get("normal_negates"):
      normal_negates.append(tag)
  return direct, exclude, subjects, predicates, normal_negates


@functools.lru_cache(maxsize=None)
def tag_matchers() -> dict:
  """Matchers for the 40 tags: direct, exclude, subject, predicate; normal_negates set."""
  direct, exclude, subjects, predicates, normal_negates = _tag_entries()
  return {
      "direct": PhraseMatcher(direct),
      "exclude": PhraseMatcher(exclude),
      "subject": PhraseMatcher(subjects),
      "predicate": PhraseMatcher(predicates),
      "normal_negates": frozenset(normal_negates),
  }


@functools.lru_cache(maxsize=None)
def region_matchers() -> dict:
  """Matcher over region phrases -> ('sided', template, plural) or ('fixed', regions)."""
  spec = load_json("regions.json")
  entries = []
  for e in spec["sided"]:
    entries += [(p, ("sided", e["region"], False)) for p in e["phrases"]]
    entries += [(p, ("sided", e["region"], True)) for p in e["plural"]]
  for e in spec["fixed"]:
    entries += [(p, ("fixed", tuple(e["regions"]))) for p in e["phrases"]]
  side_of = {}
  for side, words in spec["side_words"].items():
    for w in words:
      side_of[w] = side
  for template in {e["region"] for e in spec["sided"]}:
    for side in ("right", "left"):
      name = template.format(side=side)
      if name not in REGION_INDEX:
        raise ValueError(f"regions.json template {template!r} gives unknown region {name!r}")
  for e in spec["fixed"]:
    for r in e["regions"]:
      if r not in REGION_INDEX:
        raise ValueError(f"regions.json names unknown region {r!r}")
  return {"phrases": PhraseMatcher(entries), "side_of": side_of}


CUE_KINDS = ("pre_negation", "post_negation", "pre_uncertainty_strong", "post_uncertainty_strong",
             "pre_uncertainty", "post_uncertainty", "pseudo", "terminators")


@functools.lru_cache(maxsize=None)
def cue_matcher() -> PhraseMatcher:
  """One matcher over every cue phrase; payload = frozenset of its kinds."""
  spec = load_json("cues.json")
  kinds: dict[str, set] = {}
  for kind in CUE_KINDS:
    for phrase in spec[kind]:
      kinds.setdefault(phrase, set()).add(kind)
  return PhraseMatcher((p, frozenset(k)) for p, k in kinds.items())


@functools.lru_cache(maxsize=None)
def cue_lists() -> dict:
  """The word-set cue lists of cues.json (starters, verbs, auxiliaries, ...)."""
  spec = load_json("cues.json")
  return {
      "new_clause_starters": PhraseMatcher((p, True) for p in spec["new_clause_starters"]),
      "scope_verbs": frozenset(spec["scope_verbs"]),
      "negation_bridges": frozenset(spec["negation_bridges"]),
      "aux_before_post": frozenset(spec["aux_before_post"]),
      "normal": PhraseMatcher((p, True) for p in spec["normal"]),
      "chexpert_stable": PhraseMatcher((p, True) for p in spec["chexpert_stable"]),
      "chexpert_stable_subjects": frozenset(spec["chexpert_stable_subjects"]),
  }


@functools.lru_cache(maxsize=None)
def chexpert_phrases() -> dict:
  """CheXpert-labeler mention / unmention phrases per observation (labeler conventions:
  '_' stands for a space; phrases are lower-case substrings)."""
  out = {}
  for kind in ("mention", "unmention"):
    table = {}
    for path in sorted((RESOURCES / "chexpert" / kind).glob("*.txt")):
      obs = path.stem.replace("_", " ").title()
      phrases = []
      for line in path.read_text(encoding="utf-8").splitlines():
        phrase = line.strip().replace("_", " ")
        if line.strip():
          phrases.append(phrase)
      table[obs] = phrases
    out[kind] = table
  for obs in out["mention"]:
    if obs not in CHEXPERT_INDEX:
      raise ValueError(f"chexpert phrase file for unknown observation {obs!r}")
  return out


@functools.lru_cache(maxsize=None)
def section_titles() -> tuple[str, ...]:
  """The 438 NegBio report section titles (upper case, without the colon)."""
  lines = (RESOURCES / "section_titles.txt").read_text(encoding="utf-8").splitlines()
  return tuple(sorted({" ".join(l.strip().rstrip(":").split()).upper() for l in lines if l.strip()},
                      key=len, reverse=True))


@functools.lru_cache(maxsize=None)
def all_phrases() -> PhraseMatcher:
  """One matcher over every phrase list, payload = (category, value), so that a sentence is
  scanned once. Categories: cue, starter, normal, stable, direct, exclude, subject,
  predicate, normal_form, region."""
  spec = load_json("cues.json")
  entries: list[tuple[str, tuple]] = []
  kinds: dict[str, set] = {}
  for kind in CUE_KINDS:
    for phrase in spec[kind]:
      kinds.setdefault(phrase, set()).add(kind)
  entries += [(p, ("cue", frozenset(k))) for p, k in kinds.items()]
  entries += [(p, ("starter", True)) for p in spec["new_clause_starters"]]
  entries += [(p, ("normal", True)) for p in spec["normal"]]
  entries += [(p, ("stable", True)) for p in spec["chexpert_stable"]]
  direct, exclude, subjects, predicates, _ = _tag_entries()
  normal_forms = [(p, tag) for tag in TAGS for p in load_json("tags.json")[tag].get("normal_forms", ())]
  for cat, lst in (("direct", direct), ("exclude", exclude), ("subject", subjects),
                   ("predicate", predicates), ("normal_form", normal_forms)):
    entries += [(p, (cat, tag)) for p, tag in lst]
  rspec = load_json("regions.json")
  for e in rspec["sided"]:
    entries += [(p, ("region", ("sided", e["region"], False))) for p in e["phrases"]]
    entries += [(p, ("region", ("sided", e["region"], True))) for p in e["plural"]]
  for e in rspec["fixed"]:
    entries += [(p, ("region", ("fixed", tuple(e["regions"])))) for p in e["phrases"]]
  region_matchers()   # validates the region names
  return PhraseMatcher(entries)
