"""Tests of asg_jax.data.reports: sections, cleaning, negation scope, regions, tags, CLI."""
import csv
import json
import math
import subprocess
import sys
import time

import numpy as np
import pytest

from asg_jax.data.reports import (CHEXPERT, REGIONS, TAGS, Triplet, clean_report,
                                  extract_sections, parse_report, report_text)
from asg_jax.data.reports.__main__ import main as cli_main

MIMIC_STYLE = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough  // pneumonia?

 COMPARISON:  ___

 FINDINGS:

 PA and lateral views of the chest provided.  There is no focal consolidation,
 effusion, or pneumothorax.  The cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute intrathoracic process.
"""


def existence(text, tag):
  """The existences of `tag` in a one-report parse (sections off)."""
  p = parse_report(text, sections=False)
  return sorted({m.existence for m in p.mentions if m.finding == tag})


# ---------------------------------------------------------------- sections

def test_sections_mimic_layout():
  s = extract_sections(MIMIC_STYLE)
  assert s["findings"].startswith("PA and lateral views of the chest provided.")
  assert s["findings"].endswith("The cardiomediastinal silhouette is normal.")
  assert s["impression"] == "No acute intrathoracic process."
  assert s["indication"].startswith("___ year old woman")
  assert s["has_headers"] is True
  text = report_text(MIMIC_STYLE)
  assert text.startswith("No acute intrathoracic process. PA and lateral views")
  assert "\n" not in text


def test_sections_header_variants_inline_and_case():
  s = extract_sections("findings: heart is normal.  impression:  stable chest.")
  assert s["findings"] == "heart is normal."
  assert s["impression"] == "stable chest."
  s = extract_sections("FINDINGS :\nLungs clear.\nIMPRESSIONS:\nNormal.\nCONCLUSION: ok chest")
  assert s["findings"] == "Lungs clear."
  assert s["impression"] == "Normal. ok chest"   # repeated impression-type sections joined


def test_sections_findings_and_impression_counts_as_impression():
  s = extract_sections("FINDINGS AND IMPRESSION: No pneumothorax.")
  assert s["impression"] == "No pneumothorax." and s["findings"] is None


def test_sections_addendum_kept_apart():
  raw = "FINDINGS: Lungs clear.\nIMPRESSION: Normal.\n\nADDENDUM:\nRight PICC tip in SVC."
  s = extract_sections(raw)
  assert s["addendum"] == "Right PICC tip in SVC."
  assert report_text(raw) == "Normal. Lungs clear."


def test_report_text_fallbacks():
  assert report_text("The lungs are clear. No effusion.") == "The lungs are clear. No effusion."
  headed = "INDICATION: cough\n\nCOMPARISON: none\n\nThe lungs are clear.  No effusion."
  assert report_text(headed) is None
  assert report_text(headed, fallback="last_paragraph") == "The lungs are clear. No effusion."
  assert report_text("   ") is None


def test_section_titles_resource_has_the_438_negbio_titles():
  from asg_jax.data.reports import vocabulary
  lines = (vocabulary.RESOURCES / "section_titles.txt").read_text().splitlines()
  assert len([l for l in lines if l.strip()]) == 438
  assert len(vocabulary.section_titles()) == 435     # 3 differ only by double spaces
  assert "IMPRESSION" in vocabulary.section_titles()


# ---------------------------------------------------------------- cleaning (data.md)

def test_cleaning_rules():
  c = clean_report("1. Left effusion.  2. Stable cardiomegaly. Ok. Café sign present.\nNo PTX")
  # numbered markers split, "Ok" (1 token) dropped, non-ASCII dropped from tokens
  assert c.sentences == ["left effusion", "stable cardiomegaly", "caf sign present", "no ptx"]
  assert c.sentence_word_spans == [(0, 2), (2, 4), (4, 7), (7, 9)]
  assert c.caption.split()[4:7] == ["caf", "sign", "present"]


def test_cleaning_thresholds():
  assert clean_report("Normal.") is None                 # 1 token: piece dropped
  assert clean_report("Normal chest.") is None           # 2 tokens < 3 in total
  assert clean_report("Normal chest. Ok.") is None       # "ok" dropped -> 2 tokens
  c = clean_report("Normal chest. No PTX.")
  assert c.sentences == ["normal chest", "no ptx"] and c.num_words == 4
  # "2." is a numbered-list marker in MGCA's splitter: "measures 2.5 cm here" -> "measures", "5 cm here"
  assert clean_report("it measures 2.5 cm here").sentences == ["it measures", "5 cm here"]


def test_non_string_input_raises():
  for fn in (extract_sections, report_text, clean_report, parse_report):
    with pytest.raises(ValueError, match="str"):
      fn(None)
  with pytest.raises(ValueError, match="uncertain_as"):
    parse_report("No effusion.", uncertain_as=2)


def test_empty_reports_do_not_crash():
  for text in ("", "   ", "FINAL REPORT", ".", "INDICATION: cough", "\ufffd\ufffd"):
    p = parse_report(text)
    assert p.sentences == [] and (p.tags == -1).all() and np.isnan(p.chexpert).all()


# ---------------------------------------------------------------- negation scope

def test_negation_list_negates_every_item():
  assert existence("No pneumothorax or effusion.", "pneumothorax") == ["absent"]
  assert existence("No pneumothorax or effusion.", "pleural effusion") == ["absent"]
  assert existence("There is no focal consolidation, effusion, or pneumothorax.",
                   "consolidation") == ["absent"]


def test_negation_post_cues():
  assert existence("The left effusion has resolved.", "pleural effusion") == ["absent"]
  assert existence("Pneumothorax is not seen.", "pneumothorax") == ["absent"]
  assert existence("The endotracheal tube has been removed.", "tube") == ["absent"]
  assert existence("Atelectasis has improved and the effusion has resolved.",
                   "atelectasis") == ["present"]


def test_uncertainty_beats_negation():
  assert existence("Cannot exclude pneumonia.", "pneumonia") == ["uncertain"]
  assert existence("Pneumonia cannot be excluded.", "pneumonia") == ["uncertain"]
  assert existence("Possible left lower lobe pneumonia.", "pneumonia") == ["uncertain"]
  assert existence("Opacity may represent atelectasis.", "opacity") == ["present"]
  assert existence("Opacity may represent atelectasis.", "atelectasis") == ["uncertain"]


def test_clause_boundary_but():
  text = "No new consolidation but persistent left base atelectasis."
  assert existence(text, "consolidation") == ["absent"]
  assert existence(text, "atelectasis") == ["present"]
  p = parse_report(text, sections=False)
  assert Triplet("left lower lung zone", "atelectasis", "present") in p.triplets[0]
  # CheXpert's labeler calls "no new X" uncertain
  assert p.chexpert[CHEXPERT.index("Consolidation")] == -1.0
  assert p.chexpert[CHEXPERT.index("Atelectasis")] == 1.0


def test_clause_boundaries_semicolon_however_and_new_clause():
  assert existence("No effusion; small pneumothorax.", "pneumothorax") == ["present"]
  assert existence("No effusion, however there is a small pneumothorax.", "pneumothorax") == ["present"]
  assert existence("No pneumothorax and stable cardiomegaly.", "cardiomegaly") == ["present"]
  assert existence("No effusion is seen and there is mild edema.", "edema") == ["present"]


def test_alternatives_are_uncertain():
  assert existence("Atelectasis or pneumonia at the left base.", "atelectasis") == ["uncertain"]
  assert existence("No atelectasis or pneumonia.", "pneumonia") == ["absent"]


def test_normal_heart_and_mediastinum_compounds():
  assert existence("Heart size is normal.", "cardiomegaly") == ["absent"]
  assert existence("The heart is not enlarged.", "cardiomegaly") == ["absent"]
  assert existence("The heart is mildly enlarged.", "cardiomegaly") == ["present"]
  assert existence("Normal cardiomediastinal silhouette.", "enlarged cardiomediastinum") == ["absent"]
  assert existence("The mediastinum is widened.", "enlarged cardiomediastinum") == ["present"]


# ---------------------------------------------------------------- tags

def test_tag_vector_and_uncertain_option():
  text = "Small left effusion. No pneumothorax. Possible pneumonia."
  p = parse_report(text, sections=False)
  t = dict(zip(TAGS, p.tags.tolist()))
  assert t["pleural effusion"] == 1 and t["pneumothorax"] == 0 and t["pneumonia"] == 1
  assert t["edema"] == -1 and p.tags.dtype == np.int8 and p.tags.shape == (40,)
  assert dict(zip(TAGS, parse_report(text, sections=False, uncertain_as=0).tags))["pneumonia"] == 0
  assert dict(zip(TAGS, parse_report(text, sections=False, uncertain_as=-1).tags))["pneumonia"] == -1


def test_present_wins_over_absent_across_sentences():
  p = parse_report("No left effusion. Small right effusion.", sections=False)
  assert p.tags[TAGS.index("pleural effusion")] == 1


def test_device_synonyms():
  p = parse_report("Right PICC tip in the SVC. ET tube and NG tube in place.", sections=False)
  t = p.tag_dict()
  assert t["line"] == 1 and t["tube"] == 1 and t["tip"] == 1
  assert [m.finding for m in p.mentions].count("tube") == 2   # "et tube", "ng tube"


# ---------------------------------------------------------------- regions

def regions_of(text):
  return parse_report(text, sections=False).regions


def test_region_mapping():
  assert regions_of("Left base atelectasis.") == {"left lower lung zone": [0]}
  assert regions_of("Retrocardiac opacity is seen.") == {"left lower lung zone": [0]}
  assert regions_of("Bibasilar atelectasis is seen.") == {"right lower lung zone": [0], "left lower lung zone": [0]}
  assert regions_of("Bilateral pleural effusions.") == {"right lung": [0], "left lung": [0]}
  assert regions_of("The heart is enlarged.") == {"cardiac silhouette": [0]}
  assert regions_of("Right upper lobe nodule.") == {"right upper lung zone": [0]}
  assert regions_of("Opacity in the right middle lobe.") == {"right mid lung zone": [0]}
  assert regions_of("Blunting of the costophrenic angles.") == {
      "right costophrenic angle": [0], "left costophrenic angle": [0]}
  assert regions_of("PICC tip at the cavoatrial junction.") == {"cavoatrial junction": [0]}
  assert regions_of("Right and left lower lobe opacities.") == {
      "right lower lung zone": [0], "left lower lung zone": [0]}


def test_regions_in_vocab_order_and_word_index():
  p = parse_report("The heart is enlarged. Left base atelectasis. Right pneumothorax.", sections=False)
  assert list(p.regions) == [r for r in REGIONS if r in p.regions]
  assert p.regions == {"right lung": [2], "left lower lung zone": [1], "cardiac silhouette": [0]}
  assert p.region_ids.tolist() == [REGIONS.index(r) for r in p.regions]
  wi = p.region_word_index(max_words=8)
  words = p.caption.split()
  left = list(p.regions).index("left lower lung zone")
  assert [words[i] for i in wi[left] if i >= 0] == ["left", "base", "atelectasis"]
  assert wi.shape == (3, 8) and (wi[left, 3:] == -1).all()
  assert p.region_sentence_index().tolist() == [[2], [1], [0]]


def test_triplets_carry_several_regions_and_findings():
  p = parse_report("Bilateral pleural effusions and bibasilar atelectasis.", sections=False)
  trip = set(p.triplets[0])
  assert Triplet("right lung", "pleural effusion", "present") in trip
  assert Triplet("left lung", "pleural effusion", "present") in trip
  assert Triplet("right lower lung zone", "atelectasis", "present") in trip
  assert Triplet("left lower lung zone", "atelectasis", "present") in trip


# ---------------------------------------------------------------- CheXpert labeler agreement

def test_chexpert_sample_reports_match_labeler(realdata_dir):
  path = realdata_dir / "chexpert-labeler" / "labeled_reports.csv"
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 4
  for row in rows:
    want = np.array([float(row[c]) if row[c] else np.nan for c in CHEXPERT], np.float32)
    got = parse_report(row["Reports"]).chexpert
    assert np.array_equal(want, got, equal_nan=True), (row["Reports"], got)


def test_chexpert_rules():
  p = parse_report("Findings suggest CHF.", sections=False)
  c = dict(zip(CHEXPERT, p.chexpert.tolist()))
  assert c["Edema"] == -1.0 and c["Cardiomegaly"] == -1.0 and math.isnan(c["No Finding"])
  p = parse_report("Lungs are clear. Left PICC in place.", sections=False)
  c = dict(zip(CHEXPERT, p.chexpert.tolist()))
  assert c["No Finding"] == 1.0 and c["Support Devices"] == 1.0   # devices do not count


# ---------------------------------------------------------------- real IU X-ray reports

def test_iu_xray_reports_parse_fast_without_crash(realdata_dir):
  data = json.loads((realdata_dir / "iu-xray-reports" / "annotation.json").read_text())
  reports = [e["report"] for split in data.values() for e in split]
  assert len(reports) == 2955
  t0 = time.perf_counter()
  parsed = [parse_report(r) for r in reports]
  elapsed = time.perf_counter() - t0
  assert elapsed < 15.0, elapsed
  assert sum(1 for p in parsed if p.sentences) >= 2950
  tags = np.stack([p.tags for p in parsed])
  # the most common calls of this normal-heavy set
  assert (tags[:, TAGS.index("cardiomegaly")] == 0).mean() > 0.7
  assert (tags[:, TAGS.index("pneumothorax")] == 0).mean() > 0.6
  for p in parsed:
    for sent, (a, b) in zip(p.sentences, p.sentence_word_spans):
      assert p.caption.split()[a:b] == sent.split()


# ---------------------------------------------------------------- CLI

def test_cli_labels_a_csv(tmp_path):
  src = tmp_path / "reports.csv"
  with open(src, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["study", "report"])
    w.writerow(["s1", "FINDINGS: Small left effusion.\nIMPRESSION: No pneumothorax."])
    w.writerow(["s2", ""])
  out = tmp_path / "labels.csv"
  assert cli_main(["--in", str(src), "--text-column", "report", "--out", str(out)]) == 0
  rows = list(csv.DictReader(open(out, newline="")))
  assert [r["study"] for r in rows] == ["s1", "s2"]
  assert rows[0]["Pleural Effusion"] == "1.0" and rows[0]["Pneumothorax"] == "0.0"
  assert rows[0]["tag:pleural effusion"] == "1" and rows[0]["tag:edema"] == "-1"
  assert rows[0]["regions"] == "left lung=1"
  assert rows[0]["sentences"] == "no pneumothorax | small left effusion"
  assert rows[1]["sentences"] == "" and rows[1]["Atelectasis"] == ""
  assert "report" not in rows[0]
  assert cli_main(["--in", str(src), "--text-column", "nope", "--out", str(out)]) == 2
