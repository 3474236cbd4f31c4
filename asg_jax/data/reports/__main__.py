"""Label a CSV of reports: tags (40), CheXpert-14 and regions per row.

    python -m asg_jax.data.reports --in reports.csv --text-column report --out labels.csv

Output columns: every input column except the report text (unless --keep-text), then
`sentences` (cleaned, " | "-joined), the 14 CheXpert observations (1.0 / 0.0 / -1.0 /
empty, as MIMIC-CXR's chexpert CSV), `tag:<name>` for the 40 ASG tags (1 / 0 / -1), and
`regions` ("region=sentence indices; ..." in vocabulary order).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from typing import Sequence

from tqdm import tqdm

from asg_jax.data.reports.parser import parse_report
from asg_jax.data.reports.vocabulary import CHEXPERT, TAGS


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(prog="python -m asg_jax.data.reports", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--in", dest="inp", required=True, help="input CSV with one report per row")
  ap.add_argument("--text-column", default="report", help="column holding the report text")
  ap.add_argument("--out", required=True, help="output CSV")
  ap.add_argument("--uncertain-as", type=int, default=1, choices=(1, 0, -1),
                  help="tag value for findings only mentioned as uncertain (default 1)")
  ap.add_argument("--no-sections", action="store_true",
                  help="parse the whole text (do not extract IMPRESSION + FINDINGS)")
  ap.add_argument("--keep-text", action="store_true", help="copy the report text column too")
  return ap.parse_args(argv)


def _fmt(v: float) -> str:
  return "" if math.isnan(v) else f"{v:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point; returns the process exit status."""
  args = _args(argv)
  csv.field_size_limit(sys.maxsize)
  with open(args.inp, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    fields = list(reader.fieldnames or [])
    if args.text_column not in fields:
      print(f"error: column {args.text_column!r} not in {args.inp} (columns: {fields})",
            file=sys.stderr)
      return 2
    rows = list(reader)
  keep = [c for c in fields if args.keep_text or c != args.text_column]
  out_fields = keep + ["sentences"] + list(CHEXPERT) + [f"tag:{t}" for t in TAGS] + ["regions"]
  with open(args.out, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=out_fields)
    writer.writeheader()
    for row in tqdm(rows, desc="labelling reports", unit="report"):
      p = parse_report(row[args.text_column] or "", uncertain_as=args.uncertain_as,
                       sections=not args.no_sections)
      out = {c: row[c] for c in keep}
      out["sentences"] = " | ".join(p.sentences)
      out.update({c: _fmt(float(v)) for c, v in zip(CHEXPERT, p.chexpert)})
      out.update({f"tag:{t}": int(v) for t, v in zip(TAGS, p.tags)})
      out["regions"] = "; ".join(f"{r}={','.join(map(str, s))}" for r, s in p.regions.items())
      writer.writerow(out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
