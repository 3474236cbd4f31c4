"""NIH-14 labels of the report parser (`ParsedReport.nih14`) and their agreement with the
Open-i gold standard (NegBio's hand labels; the dev half in ../shared/realdata)."""
import numpy as np
import pytest

from asg_jax.data.reports import parse_report
from asg_jax.data.reports.nih14 import NIH14, load_openi, score


def nih(text, **kw):
  """{label: value} of the mentioned NIH-14 labels of a one-report parse (sections off)."""
  return parse_report(text, sections=False, **kw).nih14_dict()


def test_order_is_vocab_json(reference_dir):
  import json
  vocab = json.loads((reference_dir / "vocab.json").read_text())
  assert list(NIH14) == vocab["nih_chestxray14_classes"]
  p = parse_report("Heart size normal. No effusion.", sections=False)
  assert p.nih14.dtype == np.int8 and p.nih14.shape == (14,)
  assert p.nih14.tolist() == [-1, 0, 0] + [-1] * 11


def test_empty_report_is_not_mentioned():
  assert parse_report("", sections=False).nih14.tolist() == [-1] * 14


def test_granuloma_is_not_a_nodule_but_a_nodule_is():
  # ASG's tag calls a calcified granuloma a nodule; the NIH / Open-i label does not.
  p = parse_report("Left lower lobe calcified granuloma. Heart size normal.", sections=False)
  assert p.tag_dict()["nodule"] == 1 and "Nodule" not in p.nih14_dict()
  assert nih("Calcified right upper lobe nodule, likely a granuloma.")["Nodule"] == 1
  assert "Nodule" not in nih("Nodular densities consistent with chronic granulomatous disease.")
  assert nih("No pulmonary nodules or masses.") == {"Nodule": 0, "Mass": 0}


def test_uncertainty_and_its_policy():
  text = "Right lower lobe opacity may represent pneumonia."
  assert nih(text) == {"Pneumonia": 0}                     # default: uncertain -> 0
  assert nih(text, nih14_uncertain_as=1) == {"Pneumonia": 1}
  assert nih(text, nih14_uncertain_as=-1) == {}
  # the ASG tag keeps its own policy (uncertain_as=1 by default)
  assert parse_report(text, sections=False, nih14_uncertain_as=0).tag_dict()["pneumonia"] == 1
  with pytest.raises(ValueError, match="nih14_uncertain_as"):
    parse_report(text, nih14_uncertain_as=2)


def test_open_i_hedges_and_alternatives_are_present():
  # "probable", "borderline", "X versus Y", "A or B": the annotators coded the finding
  assert nih("Probable left basilar atelectasis.")["Atelectasis"] == 1
  assert nih("Borderline cardiomegaly. Lungs are clear.")["Cardiomegaly"] == 1
  assert nih("Borderline heart size. Lungs are clear.")["Cardiomegaly"] == 1
  assert nih("Streaky right lower lobe infiltrate versus atelectasis.") == {
      "Atelectasis": 1, "Infiltration": 1}
  assert nih("Focal area of scarring or atelectasis in the lingula.")["Atelectasis"] == 1
  # ... while the ASG tags keep them uncertain
  p = parse_report("Streaky right lower lobe infiltrate versus atelectasis.", sections=False)
  assert {m.existence for m in p.mentions} == {"uncertain"}


def test_vocabulary_differences():
  assert "Emphysema" not in nih("Hyperexpanded lungs consistent with COPD.")
  assert nih("Mild emphysema. Heart size normal.")["Emphysema"] == 1
  assert "Pneumonia" not in nih("Opacities most consistent with atypical infectious process.")
  assert "Mass" not in nih("This represents degenerative spurring rather than metastasis.")
  assert "Edema" not in nih("Findings consistent with mild congestive heart failure.")
  assert nih("Complete collapse of the left lung.")["Atelectasis"] == 1
  assert "Atelectasis" not in nih("Compression collapse of the T8 vertebral body.")
  assert nih("A large hiatal hernia is noted.")["Hernia"] == 1
  assert nih("Interlobar fissural thickening.")["Pleural_Thickening"] == 1


def test_one_word_sentences_count():
  # MGCA cleaning drops one-word pieces from the sentences; the labels still read them
  p = parse_report("Cardiomegaly. No effusions or edema. Clear chest", sections=False)
  assert p.sentences == ["no effusions or edema", "clear chest"]
  assert p.nih14_dict() == {"Cardiomegaly": 1, "Effusion": 0, "Edema": 0}
  assert "cardiomegaly" not in p.tag_dict()       # ASG tags follow the sentences


def test_scoring_against_hand_computed_counts():
  gold = np.array([[1, 0], [1, 1], [0, 0], [1, 0]])
  pred = np.array([[1, -1], [0, 1], [1, 0], [1, 1]])
  s = score(pred, gold, labels=("a", "b"), min_positives=1)
  assert s["labels"]["a"] == {"positives": 3, "tp": 2, "fp": 1, "fn": 1,
                              "precision": 2 / 3, "recall": 2 / 3, "f1": pytest.approx(2 / 3)}
  assert s["labels"]["b"]["precision"] == 0.5 and s["labels"]["b"]["recall"] == 1.0
  assert s["micro_f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
  assert s["macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
  assert score(pred, gold, labels=("a", "b"), min_positives=2)["macro_f1"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def openi_dev(realdata_dir):
  d = realdata_dir / "openi-gold-dev"
  if not (d / "labels.csv").is_file():
    pytest.skip(f"Open-i gold standard (dev half) not found at {d}")
  uids, texts, gold = load_openi(d)
  pred = np.stack([parse_report(t, sections=False).nih14 for t in texts])
  return uids, gold, pred


def test_open_i_dev_half_agreement(openi_dev):
  """nih14 == 1 against the gold (1,927 even-numbered reports): the issue's targets."""
  uids, gold, pred = openi_dev
  assert len(uids) == 1927 and gold.shape == (1927, 14)
  s = score(pred, gold)
  assert s["micro_f1"] >= 0.90 and s["macro_f1"] >= 0.85, (s["micro_f1"], s["macro_f1"])
  # the measured figures (docs/reports.md), so a regression shows
  assert s["micro_f1"] >= 0.92 and s["macro_f1"] >= 0.90
  for label, v in s["labels"].items():
    if v["positives"] >= 5:
      assert v["f1"] >= 0.70, (label, v)
  # Hernia: the gold has no positive at all (the annotators did not label hiatal hernias)
  assert s["labels"]["Hernia"]["positives"] == 0 and s["labels"]["Hernia"]["fp"] > 0
  keep = [i for i, c in enumerate(NIH14) if c != "Hernia"]
  assert score(pred[:, keep], gold[:, keep], [NIH14[i] for i in keep])["micro_f1"] >= 0.94
