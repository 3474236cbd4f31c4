"""Label a CSV of reports: tags (40), CheXpert-14 and regions per row.

    python -m asg_jax.data.reports --in reports.csv --text-column report --out labels.csv

Output columns: every input column except the report text (unless --keep-text), then
`sentences` (cleaned, " | "-joined), the 14 CheXpert observations (1.0 / 0.0 / -1.0 /
empty, as MIMIC-CXR's chexpert CSV), `tag:<name>` for the 40 ASG tags (1 / 0 / -1), and
`regions` ("region=sentence indices; ..." in vocabulary order). A report with no usable
text (empty, only headers, < 3 words) gets all tags -1 and empty CheXpert labels; a row the
parser cannot handle is reported on stderr and written with empty labels.
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


def _label(text, args) -> tuple[object, str | None]:
  """(ParsedReport, None) or (None, why) for one report text."""
  if text is None:
    return None, "no value in the text column (short row)"
  if not isinstance(text, str):
    return None, f"text is {type(text).__name__}, expected str"
  try:
    return parse_report(text, uncertain_as=args.uncertain_as, sections=not args.no_sections), None
  except Exception as e:  # pylint: disable=broad-except
    return None, f"parser error {type(e).__name__}: {e}"


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point; returns the process exit status (0 ok, 2 bad input file)."""
  args = _args(argv)
  csv.field_size_limit(sys.maxsize)
  try:
    with open(args.inp, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      fields = list(reader.fieldnames or [])
      if args.text_column not in fields:
        print(f"error: {args.inp}: no column {args.text_column!r} (columns: {fields}); "
              "pass --text-column", file=sys.stderr)
        return 2
      rows = list(reader)
  except FileNotFoundError:
    print(f"error: {args.inp}: no such file", file=sys.stderr)
    return 2
  except (UnicodeDecodeError, csv.Error) as e:
    print(f"error: {args.inp}: not a UTF-8 CSV file ({e})", file=sys.stderr)
    return 2
  keep = [c for c in fields if args.keep_text or c != args.text_column]
  out_fields = keep + ["sentences"] + list(CHEXPERT) + [f"tag:{t}" for t in TAGS] + ["regions"]
  empty = skipped = 0
  with open(args.out, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=out_fields)
    writer.writeheader()
    for i, row in enumerate(tqdm(rows, desc="labelling reports", unit="report")):
      p, why = _label(row.get(args.text_column), args)
      out = {c: row.get(c) for c in keep}
      if p is None:
        # data row i + 2 of the file (after the header); written with empty labels
        print(f"warning: {args.inp} row {i + 2}: {why}; labels left empty", file=sys.stderr)
        skipped += 1
        writer.writerow(out)
        continue
      empty += not p.sentences
      out["sentences"] = " | ".join(p.sentences)
      out.update({c: _fmt(float(v)) for c, v in zip(CHEXPERT, p.chexpert)})
      out.update({f"tag:{t}": int(v) for t, v in zip(TAGS, p.tags)})
      out["regions"] = "; ".join(f"{r}={','.join(map(str, s))}" for r, s in p.regions.items())
      writer.writerow(out)
  print(f"labelled {len(rows)} reports -> {args.out} ({empty} with no usable sentence, "
        f"{skipped} skipped)", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
