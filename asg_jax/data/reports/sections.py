"""Report sections: FINDINGS and IMPRESSION out of raw MIMIC-CXR-style report text.

A header is a known section title (NegBio's 438 titles plus aliases below), any case, with
a colon, at the start of a line, after a sentence end or after two spaces (never spanning
lines); or an upper-case title with a colon at the start of a line; or a bare
`FINAL REPORT` / `(FINAL) ADDENDUM` line. Text before the first header is the `preamble`.
"""
from __future__ import annotations

import functools
import re

from asg_jax.data.reports import vocabulary

FINDINGS_ALIASES = frozenset({"FINDINGS", "FINDING", "FINSINGS", "FINDINGS AND OBSERVATIONS"})
# As MIMIC-CXR's own section parser does, mixed findings+impression headers count as impression.
IMPRESSION_ALIASES = frozenset({
    "IMPRESSION", "IMPRESSIONS", "IMPESSION", "IMPRESSON", "CONCLUSION", "CONCLUSIONS",
    "OPINION", "SUMMARY", "INTERPRETATION", "FINDINGS AND IMPRESSION", "FINDINGS/IMPRESSION",
    "IMPRESSION/FINDINGS", "IMPRESSION AND RECOMMENDATION", "IMPRESSION AND RECOMMENDATIONS",
    "FINDINGS AND IMPRESSIONS", "FINDINGS IMPRESSION", "IMPRESSION FINDINGS", "DIAGNOSIS"})
ADDENDUM_NAMES = frozenset({"ADDENDUM", "FINAL ADDENDUM", "AMENDMENT"})
_MARKERS = frozenset({"FINAL REPORT"})


@functools.lru_cache(maxsize=None)
def _titles() -> frozenset:
  """Every known title, upper case, words separated by single spaces."""
  return frozenset(" ".join(t.split()).upper() for t in (
      set(vocabulary.section_titles()) | FINDINGS_ALIASES | IMPRESSION_ALIASES | ADDENDUM_NAMES))


_UPPER = re.compile(r"[A-Z][A-Z0-9 /&,()'\-]{2,60}")
_BARE = re.compile(r"(?m)^[ \t]*(FINAL\s+REPORT|FINAL\s+ADDENDUM|ADDENDUM)[ \t]*$")
# Where a title may start: line start, after . ! ? or after two whitespace characters.
_BOUNDARY = re.compile(r"(?:^|(?<=\n)|(?<=[.!?])|(?<=\s\s))(?=[^\n])")
_MAX_TITLE = 120   # characters a title (with its inner whitespace) may span before its colon


def _find_headers(text: str) -> list[tuple[int, int, str]]:
  """(start, end, raw name) of every header, left to right (the leftmost header wins an
  overlap). Linear: only the text before each colon is examined."""
  titles = _titles()
  found = []
  prev = 0
  c = text.find(":")
  while c != -1:
    lo = max(prev, c - _MAX_TITLE, text.rfind("\n", 0, c) + 1)
    for b in _BOUNDARY.finditer(text, lo, c):
      p = b.start()
      line_start = p == 0 or text[p - 1] == "\n"
      q = p
      while q < c and text[q] in " \t":
        q += 1
      name = text[q:c].rstrip(" \t")
      if not name or "\n" in name:   # a title never spans lines
        continue
      if " ".join(name.split()).upper() in titles or (line_start and _UPPER.fullmatch(name)):
        found.append((p, c + 1, name))
        break
    prev = c + 1
    c = text.find(":", prev)
  for m in _BARE.finditer(text):
    found.append((m.start(), m.end(), m.group(1)))
  found.sort()
  out, end = [], 0
  for start, stop, name in found:
    if start >= end:
      out.append((start, stop, name))
      end = stop
  return out


def _norm_name(name: str) -> str:
  return " ".join(name.replace("_", " ").split()).upper()


def _key(name: str) -> str:
  if name in FINDINGS_ALIASES:
    return "findings"
  if name in IMPRESSION_ALIASES:
    return "impression"
  if name in ADDENDUM_NAMES or name.startswith("ADDENDUM"):
    return "addendum"
  return name.lower()


def extract_sections(raw: str) -> dict:
  """Split raw report text into sections.

  Returns a dict with `findings` and `impression` (str, or None when absent or empty),
  `preamble` (text before the first header, or None), `has_headers` (bool) and one entry
  per other header met (lower-case title, e.g. `comparison`, `indication`, `addendum`).
  Repeated sections are joined with a space. Raises ValueError for non-string input.
  """
  if not isinstance(raw, str):
    raise ValueError(f"extract_sections expects the report as str, got {type(raw).__name__}")
  text = raw.replace("\r\n", "\n").replace("\r", "\n")
  out: dict = {"findings": None, "impression": None, "preamble": None, "has_headers": False}
  pieces: list[tuple[str, str]] = []
  last_key, last_end = "preamble", 0
  for start, end, raw_name in _find_headers(text):
    name = _norm_name(raw_name)
    pieces.append((last_key, text[last_end:start]))
    last_end = end
    if name in _MARKERS:
      last_key = "preamble" if not out["has_headers"] else last_key
      continue
    out["has_headers"] = True
    last_key = _key(name)
  pieces.append((last_key, text[last_end:]))
  for key, body in pieces:
    body = body.strip()
    if not body:
      continue
    out[key] = body if out.get(key) in (None, "") else out[key] + " " + body
  return out


def _flat(text: str | None) -> str | None:
  if text is None:
    return None
  text = " ".join(text.split())
  return text or None


FALLBACKS = ("none", "last_paragraph", "whole_text")


def report_text(raw: str, *, fallback: str = "none") -> str | None:
  """The text the cleaning step uses: IMPRESSION + " " + FINDINGS (data.md), newlines as spaces.

  A report with only one of the two gives that one. A report without any section header
  (IU X-ray, free text) gives its whole text. A report with headers but neither section
  gives None (MGCA/ASG drop such studies) unless `fallback` says otherwise:
  "last_paragraph" uses the last non-empty paragraph (blank-line separated) as MIMIC-CXR's
  own section parser does; "whole_text" uses the whole text, labels included (free-text
  notes such as "Day 4: ... History: ... Follow-up: ...", where `History:` is a known title
  but FINDINGS / IMPRESSION are absent: the `image_text_csv` builder, data.md).
  """
  if fallback not in FALLBACKS:
    raise ValueError(f"report_text: fallback must be one of {FALLBACKS}, got {fallback!r}")
  secs = extract_sections(raw)
  parts = [p for p in (_flat(secs["impression"]), _flat(secs["findings"])) if p]
  if parts:
    return " ".join(parts)
  if not secs["has_headers"]:
    return _flat(secs["preamble"])
  if fallback == "whole_text":
    return _flat(raw)
  if fallback == "last_paragraph":
    paragraphs = [p for p in re.split(r"\n\s*\n", raw.replace("\r\n", "\n")) if p.strip()]
    if paragraphs:
      last = re.sub(r"^[ \t]*[A-Z][A-Z0-9 /&,()'\-]{2,60}:", "", paragraphs[-1].strip())
      return _flat(last)
  return None
