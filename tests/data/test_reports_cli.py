"""The labelling CLI (`python -m asg_jax.data.reports`) on the 2,955 real IU X-ray reports."""
import csv
import json
import re
import subprocess
import sys

import pytest

from asg_jax.data.reports import CHEXPERT, TAGS
from asg_jax.data.reports.__main__ import main as cli_main
from asg_jax.data.reports.nih14 import NIH14


@pytest.fixture(scope="module")
def iu_annotation(realdata_dir):
  path = realdata_dir / "iu-xray-reports" / "annotation.json"
  if not path.is_file():
    pytest.skip(f"IU X-ray reports not found at {path}")
  return path


@pytest.fixture(scope="module")
def iu_run(iu_annotation, tmp_path_factory):
  out_dir = tmp_path_factory.mktemp("iu")
  out, jsonl = out_dir / "labels.csv", out_dir / "triplets.jsonl"
  r = subprocess.run([sys.executable, "-m", "asg_jax.data.reports", "--in", str(iu_annotation),
                      "--out", str(out), "--jsonl", str(jsonl)],
                     capture_output=True, text=True, timeout=300, check=False)
  assert r.returncode == 0, r.stderr
  rows = list(csv.DictReader(open(out, newline="", encoding="utf-8")))
  records = [json.loads(line) for line in open(jsonl, encoding="utf-8")]
  return r.stderr, rows, records


def test_iu_every_report_labelled(iu_run):
  err, rows, records = iu_run
  assert len(rows) == len(records) == 2955
  assert list(rows[0])[:4] == ["id", "split", "sentences", CHEXPERT[0]]
  assert [c for c in rows[0] if c.startswith("nih:")] == [f"nih:{c}" for c in NIH14]
  assert [c for c in rows[0] if c.startswith("tag:")] == [f"tag:{t}" for t in TAGS]
  assert list(rows[0])[-2:] == ["regions", "triplets"]
  assert {r["split"] for r in rows} == {"train", "val", "test"}
  assert [r["row"] for r in records] == list(range(1, 2956))
  assert all(r["error"] is None for r in records)
  # progress bar, then the summary with the speed
  assert "labelling reports" in err and "2955/2955" in err
  m = re.search(r"labelled 2955 reports -> .* in [\d.]+ s \(([\d,]+) reports/s; "
                r"1 with no usable sentence, 0 not labelled\)", err)
  assert m and int(m.group(1).replace(",", "")) > 100, err[-300:]


def test_iu_triplets_name_their_sentence(iu_run):
  _, rows, records = iu_run
  n = 0
  for row, rec in zip(rows, records):
    assert row["id"] == rec["id"]
    assert row["sentences"] == " | ".join(rec["sentences"])
    for t in rec["triplets"]:
      assert rec["sentences"][t["sentence"]] == t["text"]
      assert t["finding"] in TAGS and t["existence"] in ("present", "absent", "uncertain")
      n += 1
    cell = row["triplets"].split("; ") if row["triplets"] else []
    assert len(cell) == len(rec["triplets"])
  assert n > 10_000     # ~4.6 sentences and several findings per report


def test_iu_hand_checked_reports(iu_run):
  """Two reports read by hand (ids from annotation.json)."""
  _, rows, records = iu_run
  by_id = {r["id"]: (r, rec) for r, rec in zip(rows, records)}
  # "Left lower lobe calcified granuloma. Heart size normal. No pleural effusion or
  #  pneumothorax. Mild medial right atelectasis. Mild emphysema."
  row, rec = by_id["CXR1451_IM-0291"]
  want = {"Atelectasis": "1", "Cardiomegaly": "0", "Effusion": "0", "Pneumothorax": "0",
          "Emphysema": "1"}
  assert {c: row[f"nih:{c}"] for c in NIH14 if row[f"nih:{c}"] != "-1"} == want
  assert rec["nih14"] == {k: int(v) for k, v in want.items()}
  assert row["tag:nodule"] == "1" and row["nih:Nodule"] == "-1"     # granuloma: ASG yes, NIH no
  assert row["Atelectasis"] == "1.0" and row["Pneumothorax"] == "0.0" and row["No Finding"] == ""
  assert {"sentence": 0, "text": "left lower lobe calcified granuloma",
          "region": "left lower lung zone", "finding": "nodule", "existence": "present"} \
      in rec["triplets"]
  assert {"sentence": 3, "text": "mild medial right atelectasis", "region": "right lung",
          "finding": "atelectasis", "existence": "present"} in rec["triplets"]
  assert "3:right lung|atelectasis|present" in row["triplets"].split("; ")
  # "... A large hiatal hernia is noted. The lungs are free of focal airspace disease. ..."
  row, rec = by_id["CXR2384_IM-0942"]
  assert rec["nih14"] == {"Cardiomegaly": 0, "Effusion": 0, "Pneumothorax": 0, "Hernia": 1}
  assert rec["tags"]["hernia"] == 1 and rec["tags"]["opacity"] == 0


def test_cli_lists_unlabelled_rows_with_reasons(tmp_path, capsys):
  src = tmp_path / "reports.csv"
  src.write_text("id,report\n"
                 "a,\"Probable left basilar atelectasis. Heart size normal.\"\n"
                 "b\n"                                   # short row: no report value
                 "c,\"Cardiomegaly. No effusions or edema. Clear chest\"\n", encoding="utf-8")
  out, jsonl = tmp_path / "labels.csv", tmp_path / "t.jsonl"
  assert cli_main(["--in", str(src), "--out", str(out), "--jsonl", str(jsonl),
                   "--no-progress"]) == 0
  err = capsys.readouterr().err
  assert "1 row(s) could not be labelled" in err
  assert "  row 3: no value in the text column (short row)" in err
  assert "labelled 3 reports" in err and "reports/s" in err and "1 not labelled" in err
  rows = list(csv.DictReader(open(out, newline="")))
  assert rows[0]["nih:Atelectasis"] == "1" and rows[0]["tag:atelectasis"] == "1"
  assert rows[0]["triplets"] == ("0:left lower lung zone|atelectasis|uncertain; "
                                 "1:cardiac silhouette|cardiomegaly|absent")
  assert rows[1]["nih:Atelectasis"] == "" and rows[1]["triplets"] == ""
  assert rows[2]["nih:Cardiomegaly"] == "1" and rows[2]["nih:Edema"] == "0"
  recs = [json.loads(line) for line in open(jsonl)]
  assert [r["error"] for r in recs] == [None, "no value in the text column (short row)", None]
  assert recs[1]["triplets"] == [] and recs[1]["id"] == "b"
  # the uncertain policies
  assert cli_main(["--in", str(src), "--out", str(out), "--no-progress",
                   "--uncertain-as", "0", "--nih14-uncertain-as", "-1"]) == 0
  rows = list(csv.DictReader(open(out, newline="")))
  assert rows[0]["tag:atelectasis"] == "0" and rows[0]["nih:Atelectasis"] == "1"


def test_cli_bad_json_is_a_clear_error(tmp_path, capsys):
  bad = tmp_path / "a.json"
  bad.write_text("[1, 2]")
  assert cli_main(["--in", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
  assert "not an R2Gen annotation file" in capsys.readouterr().err
  bad.write_text("{")
  assert cli_main(["--in", str(bad), "--out", str(tmp_path / "o.csv")]) == 2
  assert "not valid JSON" in capsys.readouterr().err
