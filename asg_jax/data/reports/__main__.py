"""Label reports: ASG tags (40), CheXpert-14, NIH-14, regions and triplets per report.

    python -m asg_jax.data.reports --in reports.csv --text-column report --out labels.csv \\
        [--jsonl triplets.jsonl]
    python -m asg_jax.data.reports --in annotation.json --out labels.csv   # R2Gen / IU X-ray

Input: a CSV with one report per row (the text in --text-column), or an R2Gen-style
annotation.json ({split: [{"id", "report", ...}]}, e.g. IU X-ray; columns id, split,
report). Output CSV columns: every input column except the report text (unless
--keep-text), then `sentences` (cleaned, " | "-joined), the 14 CheXpert observations
(1.0 / 0.0 / -1.0 / empty, as MIMIC-CXR's chexpert CSV), `nih:<label>` for the 14 NIH
ChestX-ray14 findings (1 / 0 / -1), `tag:<name>` for the 40 ASG tags (1 / 0 / -1),
`regions` ("region=sentence indices; ..." in vocabulary order) and `triplets`
("sentence:region|finding|existence; ...", region "-" when none).

--jsonl PATH also writes one JSON object per report: `row` (data row number), the kept
input columns, `sentences`, `triplets` (each with `sentence` index, `text` of that sentence,
`region`, `finding`, `existence`), `tags`, `chexpert`, `nih14` (mentioned labels only) and
`error` (null, or why the row could not be labelled).

A report with no usable text (empty, only headers, < 3 words) gets all tags -1 and empty
CheXpert labels. A row that cannot be labelled (no text value, not text, a parser error) is
written with empty labels and listed on stderr with its row number and the reason, at
the end too. A progress bar runs on stderr; the last line gives reports/s.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from typing import Sequence

from tqdm import tqdm

from asg_jax.data.reports.nih14 import NIH14
from asg_jax.data.reports.parser import parse_report
from asg_jax.data.reports.vocabulary import CHEXPERT, TAGS


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
  ap = argparse.ArgumentParser(prog="python -m asg_jax.data.reports", description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--in", dest="inp", required=True,
                  help="input CSV with one report per row, or an R2Gen annotation.json")
  ap.add_argument("--text-column", default="report", help="CSV column holding the report text")
  ap.add_argument("--out", required=True, help="output CSV")
  ap.add_argument("--jsonl", default=None,
                  help="also write one JSON line per report with its triplets and sentences")
  ap.add_argument("--uncertain-as", type=int, default=1, choices=(1, 0, -1),
                  help="ASG tag value for findings only mentioned as uncertain (default 1)")
  ap.add_argument("--nih14-uncertain-as", type=int, default=0, choices=(1, 0, -1),
                  help="NIH-14 value for findings only mentioned as uncertain (default 0)")
  ap.add_argument("--no-sections", action="store_true",
                  help="parse the whole text (do not extract IMPRESSION + FINDINGS)")
  ap.add_argument("--keep-text", action="store_true", help="copy the report text column too")
  ap.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    return parse_report(text, uncertain_as=args.uncertain_as, sections=not args.no_sections,
                        nih14_uncertain_as=args.nih14_uncertain_as), None
  except Exception as e:  # pylint: disable=broad-except
    return None, f"parser error {type(e).__name__}: {e}"


def _read(args) -> tuple[list[str], list[dict], str]:
  """(fields, rows, text column) of the input; raises SystemExit(2) with a message."""
  def fail(msg: str):
    print(f"error: {args.inp}: {msg}", file=sys.stderr)
    raise SystemExit(2)
  try:
    if args.inp.endswith(".json"):
      with open(args.inp, encoding="utf-8") as f:
        data = json.load(f)
      if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        fail("not an R2Gen annotation file ({split: [{id, report, ...}, ...]})")
      rows = [{"id": e.get("id", "") if isinstance(e, dict) else "",
               "split": e.get("split", split) if isinstance(e, dict) else split,
               "report": e.get("report") if isinstance(e, dict) else None}
              for split, entries in data.items() for e in entries]
      return ["id", "split", "report"], rows, "report"
    csv.field_size_limit(sys.maxsize)
    with open(args.inp, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      fields = list(reader.fieldnames or [])
      if args.text_column not in fields:
        fail(f"no column {args.text_column!r} (columns: {fields}); pass --text-column")
      return fields, list(reader), args.text_column
  except FileNotFoundError:
    fail("no such file")
  except (UnicodeDecodeError, csv.Error) as e:
    fail(f"not a UTF-8 CSV file ({e})")
  except json.JSONDecodeError as e:
    fail(f"not valid JSON ({e})")
  raise AssertionError("unreachable")


def _triplet_cell(p) -> str:
  return "; ".join(f"{i}:{t.region or '-'}|{t.finding}|{t.existence}"
                   for i, sent in enumerate(p.triplets) for t in sent)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point; returns the process exit status (0 ok, 2 bad input file)."""
  args = _args(argv)
  try:
    fields, rows, text_column = _read(args)
  except SystemExit as e:
    return int(e.code)
  keep = [c for c in fields if args.keep_text or c != text_column]
  out_fields = (keep + ["sentences"] + list(CHEXPERT) + [f"nih:{c}" for c in NIH14]
                + [f"tag:{t}" for t in TAGS] + ["regions", "triplets"])
  empty, failed = 0, []
  jsonl = open(args.jsonl, "w", encoding="utf-8") if args.jsonl else None  # pylint: disable=consider-using-with
  start = time.perf_counter()
  try:
    with open(args.out, "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=out_fields)
      writer.writeheader()
      bar = tqdm(rows, desc="labelling reports", unit="report", disable=args.no_progress,
                 file=sys.stderr)
      for i, row in enumerate(bar):
        p, why = _label(row.get(text_column), args)
        out = {c: row.get(c) for c in keep}
        # the row's place in the input: CSV data row i + 2 of the file (after the header),
        # or entry i + 1 of an annotation.json
        where = f"entry {i + 1}" if args.inp.endswith(".json") else f"row {i + 2}"
        record = {"row": i + 1, **out}
        if p is None:
          failed.append((where, why))
          tqdm.write(f"warning: {args.inp} {where}: {why}; labels left empty", file=sys.stderr)
          writer.writerow(out)
          if jsonl:
            record.update(sentences=[], triplets=[], tags={}, chexpert={}, nih14={}, error=why)
            jsonl.write(json.dumps(record) + "\n")
          continue
        empty += not p.sentences
        out["sentences"] = " | ".join(p.sentences)
        out.update({c: _fmt(float(v)) for c, v in zip(CHEXPERT, p.chexpert)})
        out.update({f"nih:{c}": int(v) for c, v in zip(NIH14, p.nih14)})
        out.update({f"tag:{t}": int(v) for t, v in zip(TAGS, p.tags)})
        out["regions"] = "; ".join(f"{r}={','.join(map(str, s))}" for r, s in p.regions.items())
        out["triplets"] = _triplet_cell(p)
        writer.writerow(out)
        if jsonl:
          record.update(
              sentences=p.sentences,
              triplets=[{"sentence": k, "text": p.sentences[k], "region": t.region,
                         "finding": t.finding, "existence": t.existence}
                        for k, sent in enumerate(p.triplets) for t in sent],
              tags=p.tag_dict(), nih14=p.nih14_dict(),
              chexpert={c: float(v) for c, v in zip(CHEXPERT, p.chexpert) if not math.isnan(v)},
              error=None)
          jsonl.write(json.dumps(record) + "\n")
  finally:
    if jsonl:
      jsonl.close()
  seconds = time.perf_counter() - start
  if failed:
    print(f"{len(failed)} row(s) could not be labelled (written with empty labels):",
          file=sys.stderr)
    for where, why in failed:
      print(f"  {where}: {why}", file=sys.stderr)
  rate = len(rows) / seconds if seconds > 0 else float("inf")
  extra = f" and {args.jsonl}" if args.jsonl else ""
  print(f"labelled {len(rows)} reports -> {args.out}{extra} in {seconds:.1f} s "
        f"({rate:,.0f} reports/s; {empty} with no usable sentence, {len(failed)} not labelled)",
        file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
