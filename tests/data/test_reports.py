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


NOTE = ("Day 4: bilateral consolidations intubated. History: 73 year old male with fever and "
        "coughing. PCR positive. Follow-up: extubated after 9 days of mechanical ventilation.")


def test_whole_text_fallback_keeps_clinical_notes_with_labels():
  # `History:` is a known section title, so the note counts as headed and, without FINDINGS /
  # IMPRESSION, gives no text (MIMIC-CXR's rule) ...
  assert extract_sections(NOTE)["history"].startswith("73 year old male")
  assert report_text(NOTE) is None
  # ... while "whole_text" (the image_text_csv builder) keeps all of it, labels included
  assert report_text(NOTE, fallback="whole_text") == NOTE
  assert report_text("History:  cough\n\nFollow-up:\nbetter", fallback="whole_text") == \
      "History: cough Follow-up: better"
  # FINDINGS / IMPRESSION still win; a header-less text is unchanged; garbage fails loudly
  headed = "History: cough.\nFINDINGS: The lungs are clear.\nIMPRESSION: Normal chest."
  assert report_text(headed, fallback="whole_text") == "Normal chest. The lungs are clear."
  assert report_text("Lungs clear.", fallback="whole_text") == "Lungs clear."
  with pytest.raises(ValueError, match="whole_text"):
    report_text(NOTE, fallback="everything")
  from asg_jax.data.builders import chest_builder
  assert chest_builder._parse(NOTE).sentences == []                  # MIMIC: the study is dropped
  assert chest_builder._parse(NOTE, "whole_text").sentences == [
      "day 4 bilateral consolidations intubated",
      "history 73 year old male with fever and coughing", "pcr positive",
      "follow up extubated after 9 days of mechanical ventilation"]


def test_whole_text_fallback_on_the_real_covid_notes(realdata_dir):
  """Every non-empty clinical note of covid-chestxray with >= 3 words gives sentences under
  the image_text_csv rule; the ones with `History:` were dropped by the MIMIC rule."""
  from asg_jax.data.builders import chest_builder
  with open(realdata_dir / "covid-chestxray" / "metadata.csv", newline="") as f:
    notes = [r["clinical_notes"] for r in csv.DictReader(f) if r["clinical_notes"].strip()]
  dropped_before = [n for n in notes if not chest_builder._parse(n).sentences]
  lost_now = [n for n in notes if not chest_builder._parse(n, "whole_text").sentences]
  headed = [n for n in dropped_before if "History:" in n]
  assert len(headed) == 5 and all(chest_builder._parse(n, "whole_text").sentences for n in headed)
  # what is still lost is too short to be a caption ("pleural effusion"), nothing else
  assert lost_now and all(len(n.split()) < 3 for n in lost_now)
  assert len(dropped_before) == len(lost_now) + len(headed)


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


# ---------------------------------------------------------------- added after the IU X-ray hand-checks

def test_chexpert_sample_reports_csv_matches_labeled_reports(realdata_dir):
  """The labeler's own input file (one report per row, no header) -> its output file."""
  base = realdata_dir / "chexpert-labeler"
  with open(base / "sample_reports.csv", newline="", encoding="utf-8") as f:
    reports = [row[0] for row in csv.reader(f) if row]
  with open(base / "labeled_reports.csv", newline="", encoding="utf-8") as f:
    labeled = list(csv.DictReader(f))
  assert len(reports) == len(labeled) == 4
  for text, row in zip(reports, labeled):
    assert text == row["Reports"]
    want = np.array([float(row[c]) if row[c] else np.nan for c in CHEXPERT], np.float32)
    assert np.array_equal(parse_report(text).chexpert, want, equal_nan=True), text


def test_negation_runs_through_to_suggest():
  text = "There are no airspace opacities to suggest pneumonia."
  assert existence(text, "pneumonia") == ["absent"]
  assert existence(text, "opacity") == ["absent"]
  assert parse_report(text, sections=False).chexpert[CHEXPERT.index("Pneumonia")] == 0.0
  # two bridges in one negated sentence (real IU X-ray wording)
  text = ("There is no pleural line to suggest pneumothorax or costophrenic blunting to "
          "suggest large pleural effusion.")
  for tag in ("pneumothorax", "blunt", "pleural effusion"):
    assert existence(text, tag) == ["absent"], tag
  # without a negation "to suggest" stays an uncertainty cue
  assert existence("Patchy opacity to suggest pneumonia.", "pneumonia") == ["uncertain"]


def test_aeration_normal_forms():
  assert existence("The lungs are well-inflated and clear.", "aerate") == ["absent"]
  assert existence("Lungs are expanded and clear of airspace disease.", "aerate") == ["absent"]
  assert existence("The lungs are not well expanded.", "aerate") == ["present"]
  assert existence("The lungs are poorly expanded.", "aerate") == ["present"]
  assert existence("Low lung volumes with bronchovascular crowding.", "aerate") == ["present"]
  assert existence("Interface between the heart and aerated lung.", "aerate") == []


def test_normal_and_stable_is_one_clause():
  text = "Normal and stable cardiomediastinal contours."
  assert existence(text, "enlarged cardiomediastinum") == ["absent"]
  # but "and" + a clause starter still separates clauses elsewhere
  assert existence("No effusion and stable cardiomegaly.", "cardiomegaly") == ["present"]


def test_section_titles_do_not_span_lines():
  s = extract_sections("ADDENDUM\nImpression: No effusion.\nFINDINGS: Lungs clear.")
  assert s["impression"] == "No effusion." and s["findings"] == "Lungs clear."
  # a known title after a sentence end on the same line is a header; "Note:" (not a title,
  # not upper case at a line start) is prose
  s = extract_sections("FINDINGS: Lungs clear. IMPRESSION: Normal. Note: called to Dr. X.")
  assert s["impression"] == "Normal. Note: called to Dr. X."
  assert s["findings"] == "Lungs clear."


def test_sentence_word_positions_map_into_the_caption():
  raw = ("FINDINGS: 1. Retrocardiac opacity.  2. Café-au-lait? No; the heart is enlarged. "
         "OK. Right PICC tip in the SVC.\nIMPRESSION: Left base atelectasis.")
  p = parse_report(raw)
  words = p.caption.split()
  assert p.caption == " ".join(p.sentences)
  for sent, (a, b) in zip(p.sentences, p.sentence_word_spans):
    assert words[a:b] == sent.split()
  assert p.sentences[0] == "left base atelectasis"        # impression first (data.md)
  wi = p.region_word_index(max_words=20)
  for k, (region, idx) in enumerate(p.regions.items()):
    want = [i for s in idx for i in range(*p.sentence_word_spans[s])]
    assert wi[k][wi[k] >= 0].tolist() == want, region
  assert p.regions["left lower lung zone"] == [0, 1]       # "left base", "retrocardiac"
  assert p.regions["cardiac silhouette"] == [2]
  assert p.regions["svc"] == [3]


def test_cli_bad_input_is_reported_not_fatal(tmp_path, capsys):
  src = tmp_path / "reports.csv"
  src.write_text("id,report\n"
                 "a,\"No pneumothorax. Small left effusion.\"\n"
                 "b\n"                                  # short row: no report value
                 "c,\"...;;;:::\"\n"                    # unparseable: no words at all
                 "d,\"FINAL REPORT\nINDICATION: cough\"\n", encoding="utf-8")
  out = tmp_path / "labels.csv"
  assert cli_main(["--in", str(src), "--out", str(out)]) == 0
  err = capsys.readouterr().err
  assert "row 3" in err and "short row" in err
  rows = list(csv.DictReader(open(out, newline="")))
  assert [r["id"] for r in rows] == ["a", "b", "c", "d"]
  assert rows[0]["Pneumothorax"] == "0.0" and rows[0]["tag:pleural effusion"] == "1"
  assert rows[1]["tag:edema"] == "" and rows[1]["sentences"] == ""
  for r in rows[2:]:
    assert r["sentences"] == "" and r["No Finding"] == "" and r["tag:edema"] == "-1"
  bad = tmp_path / "latin1.csv"
  bad.write_bytes("id,report\n1,\"Caf\xe9 effusion\"\n".encode("latin-1"))
  assert cli_main(["--in", str(bad), "--out", str(out)]) == 2
  assert "not a UTF-8 CSV" in capsys.readouterr().err
  assert cli_main(["--in", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
  assert "no such file" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
  src = tmp_path / "reports.csv"
  with open(src, "w", newline="") as f:
    csv.writer(f).writerows([["report"], ["Cannot exclude pneumonia. Heart size is normal."]])
  out = tmp_path / "labels.csv"
  r = subprocess.run([sys.executable, "-m", "asg_jax.data.reports", "--in", str(src),
                      "--text-column", "report", "--out", str(out)],
                     capture_output=True, text=True, timeout=120, check=False)
  assert r.returncode == 0, r.stderr
  row = next(csv.DictReader(open(out, newline="")))
  assert row["Pneumonia"] == "-1.0" and row["Cardiomegaly"] == "0.0"
  assert row["tag:pneumonia"] == "1"       # uncertain counts as present by default


def test_negated_list_with_size_adjectives():
  text = "No focal consolidation, large pleural effusion, or pneumothorax."
  for tag in ("consolidation", "pleural effusion", "pneumothorax"):
    assert existence(text, tag) == ["absent"], tag
  c = dict(zip(CHEXPERT, parse_report(text, sections=False).chexpert.tolist()))
  assert c["Pleural Effusion"] == 0.0 and c["Pneumothorax"] == 0.0
  # a comma + clause starter without a following "or" still opens a new clause
  assert existence("No effusion, small pneumothorax.", "pneumothorax") == ["present"]


def test_not_significantly_enlarged_is_negated():
  p = parse_report("The heart is not significantly enlarged.", sections=False)
  assert p.tag_dict() == {"cardiomegaly": 0}
  assert p.chexpert[CHEXPERT.index("Cardiomegaly")] == 0.0
  # "stable" heart size is uncertain for CheXpert (the labeler's rule), not a finding for ASG
  p = parse_report("Heart size is not significantly changed.", sections=False)
  assert p.tag_dict() == {} and p.chexpert[CHEXPERT.index("Cardiomegaly")] == -1.0


REGION_PROBES = {
    "right lung": "Right pleural effusion.", "right upper lung zone": "Right upper lobe opacity.",
    "right mid lung zone": "Right middle lobe opacity.",
    "right lower lung zone": "Right base atelectasis.",
    "right hilar structures": "Right hilar fullness.",
    "right apical zone": "Right apical pneumothorax.",
    "right costophrenic angle": "Blunting of the right costophrenic angle.",
    "right hemidiaphragm": "Elevated right hemidiaphragm.",
    "left lung": "Left pleural effusion.", "left upper lung zone": "Left upper lobe nodule.",
    "left mid lung zone": "Left midlung opacity.",
    "left lower lung zone": "Retrocardiac opacity is seen.",
    "left hilar structures": "Left perihilar opacity.",
    "left apical zone": "Left apical scarring.",
    "left costophrenic angle": "Blunting of the left costophrenic angle.",
    "left hemidiaphragm": "Elevated left hemidiaphragm.",
    "trachea": "The trachea is midline.", "spine": "Degenerative changes of the spine.",
    "right clavicle": "Fracture of the right clavicle.",
    "left clavicle": "Old left clavicle fracture.",
    "aortic arch": "Calcification of the aortic knob.", "mediastinum": "The mediastinum is widened.",
    "upper mediastinum": "Widening of the superior mediastinum.", "svc": "PICC tip in the SVC.",
    "cardiac silhouette": "The heart is enlarged.",
    "cavoatrial junction": "Catheter tip at the cavoatrial junction.",
    "right atrium": "Line tip in the right atrium.", "carina": "ET tube 4 cm above the carina.",
    "abdomen": "Free air in the upper abdomen."}


@pytest.mark.parametrize("region", sorted(REGION_PROBES))
def test_every_vocab_region_is_reachable(region):
  assert set(REGION_PROBES) == set(REGIONS)
  assert regions_of(REGION_PROBES[region]) == {region: [0]}
