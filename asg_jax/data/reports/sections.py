"""Report sections: FINDINGS and IMPRESSION out of raw MIMIC-CXR-style report text.

A header is a known section title (NegBio's 438 titles plus aliases below), any case, with
a colon, at the start of a line, after a sentence end or after two spaces; or an
upper-case title with a colon at the start of a line; or a bare `FINAL REPORT` /
`(FINAL) ADDENDUM` line. Text before the first header is the `preamble`.
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
def _header_regex() -> re.Pattern:
  titles = set(vocabulary.section_titles()) | FINDINGS_ALIASES | IMPRESSION_ALIASES | ADDENDUM_NAMES
  alts = sorted(titles, key=len, reverse=True)
  body = "|".join(r"\s+".join(re.escape(w) for w in t.split()) for t in alts)
  known = rf"(?:^|(?<=\n)|(?<=[.!?])|(?<=\s\s))[ \t]*(?P<known>{body})[ \t]*:"
  upper = r"(?:^|(?<=\n))[ \t]*(?P<upper>[A-Z][A-Z0-9 /&,()'\-]{2,60}?)[ \t]*:"
  bare = r"(?:^|(?<=\n))[ \t]*(?P<bare>FINAL\s+REPORT|FINAL\s+ADDENDUM|ADDENDUM)[ \t]*(?=\n|$)"
  return re.compile(rf"{known}|(?-i:{upper})|(?-i:{bare})", re.IGNORECASE)


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
  for m in _header_regex().finditer(text):
    name = _norm_name(m.group("known") or m.group("upper") or m.group("bare"))
    pieces.append((last_key, text[last_end:m.start()]))
    last_end = m.end()
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


def report_text(raw: str, *, fallback: str = "none") -> str | None:
  """The text the cleaning step uses: IMPRESSION + " " + FINDINGS (data.md), newlines as spaces.

  A report with only one of the two gives that one. A report without any section header
  (IU X-ray, free text) gives its whole text. A report with headers but neither section
  gives None (MGCA/ASG drop such studies) unless `fallback="last_paragraph"`, which uses the
  last non-empty paragraph (blank-line separated) as MIMIC-CXR's own section parser does.
  """
  if fallback not in ("none", "last_paragraph"):
    raise ValueError(f"report_text: fallback must be 'none' or 'last_paragraph', got {fallback!r}")
  secs = extract_sections(raw)
  parts = [p for p in (_flat(secs["impression"]), _flat(secs["findings"])) if p]
  if parts:
    return " ".join(parts)
  if not secs["has_headers"]:
    return _flat(secs["preamble"])
  if fallback == "last_paragraph":
    paragraphs = [p for p in re.split(r"\n\s*\n", raw.replace("\r\n", "\n")) if p.strip()]
    if paragraphs:
      last = re.sub(r"^[ \t]*[A-Z][A-Z0-9 /&,()'\-]{2,60}:", "", paragraphs[-1].strip())
      return _flat(last)
  return None
