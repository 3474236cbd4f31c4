"""Report cleaning exactly as MGCA / ASG (data.md), with word positions per sentence.

    text -> newlines to spaces -> split on `[0-9]+\\.` -> split each part on "." ->
    per piece: lower-case, `\\w+` tokens; drop the piece if it has <= 1 token; drop the
    non-ASCII characters of each token (a token left empty is dropped) ->
    sentence = kept tokens joined by " "; keep the study only with >= 3 tokens in total.

One deviation, documented in docs/reports.md: a piece whose tokens are all non-ASCII
(MGCA would keep an empty string) is dropped, so every sentence has at least one word.
"""
from __future__ import annotations

import dataclasses
import re

_LIST_MARKER = re.compile(r"[0-9]+\.")
_WORD = re.compile(r"\w+")
MIN_PIECE_TOKENS = 2   # pieces with <= 1 token are dropped
MIN_STUDY_TOKENS = 3   # studies with < 3 tokens are dropped


@dataclasses.dataclass(frozen=True)
class CleanedReport:
  """Cleaned sentences and where each sits in the caption's words.

  `sentence_word_spans[i] = (start, end)`: sentence i is words [start, end) of
  `caption.split()` (the aggregated-word positions ARSA's `region_word_index` uses).
  `pieces[i]` is the raw text piece sentence i came from (kept for negation scopes,
  which need the punctuation the cleaning drops).
  """
  sentences: list[str]
  sentence_word_spans: list[tuple[int, int]]
  pieces: list[str]
  # pieces dropped for having one token ("Cardiomegaly."): not sentences (MGCA drops them),
  # but the parser's NIH-14 labels read them, since such a piece states a finding.
  single_word_pieces: tuple[str, ...] = ()

  @property
  def caption(self) -> str:
    """The sentences joined by single spaces (what the tokenizer sees)."""
    return " ".join(self.sentences)

  @property
  def num_words(self) -> int:
    """Total number of words of the caption."""
    return self.sentence_word_spans[-1][1] if self.sentence_word_spans else 0


def ascii_word(token: str) -> str:
  """`token` without its non-ASCII characters (MGCA's encode('ascii', 'ignore'))."""
  if token.isascii():
    return token
  return token.encode("ascii", "ignore").decode("ascii")


def ascii_tokens(text: str) -> list[str]:
  """Lower-cased `\\w+` tokens with their non-ASCII characters dropped (the cleaning's
  tokenisation, without splitting or filtering pieces): `"Small L. Effusion"` ->
  `["small", "l", "effusion"]`."""
  return [w for w in (ascii_word(t) for t in _WORD.findall(text.lower())) if w]


def split_pieces(text: str) -> list[str]:
  """Numbered-list then period splitting of MGCA (empty pieces removed)."""
  text = text.replace("\n", " ")
  return [s for part in _LIST_MARKER.split(text) for s in part.split(".") if s]


def clean_sentence(piece: str) -> str | None:
  """One piece -> cleaned sentence, or None when it has <= 1 token (or no ASCII word)."""
  tokens = _WORD.findall(piece.replace("\ufffd\ufffd", " ").lower())
  if len(tokens) < MIN_PIECE_TOKENS:
    return None
  words = [w for w in (ascii_word(t) for t in tokens) if w]
  return " ".join(words) or None


def clean_report(text: str) -> CleanedReport | None:
  """Clean report text (e.g. `report_text(raw)`) per data.md; None if < 3 words in total."""
  if not isinstance(text, str):
    raise ValueError(f"clean_report expects the report text as str, got {type(text).__name__}")
  sentences, spans, pieces, pos = [], [], [], 0
  single = []
  for piece in split_pieces(text):
    sentence = clean_sentence(piece)
    if sentence is None:
      if _WORD.search(piece):
        single.append(piece)
      continue
    n = len(sentence.split())
    sentences.append(sentence)
    spans.append((pos, pos + n))
    pieces.append(piece.replace("\ufffd\ufffd", " "))
    pos += n
  if pos < MIN_STUDY_TOKENS:
    return None
  return CleanedReport(sentences=sentences, sentence_word_spans=spans, pieces=pieces,
                       single_word_pieces=tuple(single))
