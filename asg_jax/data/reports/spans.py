"""Token-span arithmetic shared by the finding and CheXpert matchers: spans are
`(start, stop)` token indices of a sentence."""
from __future__ import annotations

NEAR = 6   # tokens: how close a modifier / region must be to attach to a finding


def distance(a: tuple[int, int], b: tuple[int, int]) -> int:
  """Tokens between two spans (0 when they touch or overlap)."""
  if a[1] <= b[0]:
    return b[0] - a[1]
  if b[1] <= a[0]:
    return a[0] - b[1]
  return 0


def overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
  return a[0] < b[1] and b[0] < a[1]
