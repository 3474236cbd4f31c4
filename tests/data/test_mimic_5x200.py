"""`mimic_cxr/5x200`: CheXpert's 5×200 rule on MIMIC-CXR's official validate + test images.

The fixture (tests/data/mimic_5x200_fixture.py) is the MIMIC-CXR-JPG 2.0.0 layout exactly,
with hand-made rows; expected values are worked out by hand in its comments.
"""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from asg_jax.data.builders import chest_builder, downstream
from asg_jax.data.reports import parse_report
from tests.data.mimic_5x200_fixture import (EXPECTED, TASKS, build, by_key, dicom_id, image_id,
                                            write_fixture)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  manual = write_fixture(str(tmp_path_factory.mktemp("mimic_manual")))
  b = build(manual, tmp_path_factory.mktemp("mimic_data"), "fixture_5x200", image_size=32,
            per_task=2)
  examples = {e["image_id"].decode(): e for e in
              tfds.as_numpy(b.as_dataset(split="test", shuffle_files=False))}
  return manual, b, examples


def test_ids_labels_and_size_by_hand(built):
  _, b, examples = built
  studies = by_key()
  first = {k: sorted(image_id(d) for d, view in s[4] if view in ("PA", "AP"))[0]
           for k, s in studies.items()}
  assert list(b.info.splits) == ["test"] and b.info.splits["test"].num_examples == 7
  assert b.info.metadata["class_names"] == list(TASKS)
  assert set(examples) == {first[k] for k in EXPECTED}
  for key, task in EXPECTED.items():
    e = examples[first[key]]
    _, subj, study, *_ = studies[key]
    assert e["patient_id"].decode() == subj and e["study_id"].decode() == study
    np.testing.assert_array_equal(e["labels"], [float(t == task) for t in TASKS])
    assert e["labels"].dtype == np.float32
    assert e["image"].dtype == np.uint8 and e["image"].shape[2] == 1 and max(e["image"].shape) == 32
  # E1: the AP image 10 (lowest dicom id of the study's two frontals), stored 32 high:
  # original (40 + 2*11, 32 + 1) = (62, 33) -> (32, round(33 * 32 / 62) = 17)
  e1 = examples[dicom_id(10)]
  np.testing.assert_array_equal(e1["original_size"], [62, 33])
  assert e1["image"].shape == (32, 17, 1)


def test_report_text_is_the_pretraining_extraction(built):
  manual, _, examples = built
  a3 = examples[dicom_id(3)]
  # IMPRESSION first, then FINDINGS; lower case, \w+ tokens, pieces split on "."
  assert a3["caption"].decode() == ("right basal atelectasis linear atelectasis in the right "
                                    "lower lobe")
  assert [s.decode() for s in a3["sentences"]] == ["right basal atelectasis",
                                                   "linear atelectasis in the right lower lobe"]
  for key in EXPECTED:
    _, subj, study, *_ = by_key()[key]
    with open(os.path.join(manual, "files", f"p{subj[:2]}", f"p{subj}", f"s{study}.txt")) as f:
      parsed = parse_report(f.read())
    e = next(e for e in examples.values() if e["study_id"].decode() == study)
    assert e["caption"].decode() == " ".join(parsed.sentences)


def test_faults_are_skipped_and_counted(built):
  _, b, _ = built
  summary = chest_builder.read_summary(b.data_dir_root, b.name, b.builder_config.name, str(b.version))
  test = summary["splits"]["test"]
  assert test["examples"] == 7
  # E2: image missing; P1: no report; P2: "2.0" in Fracture
  assert test["skipped"] == {"missing_image": 1, "missing_report": 1, "bad_value": 1}
  # E1's lateral; E1's second frontal; P4 without a CheXpert row
  assert test["filtered"] == {"view_LATERAL": 1, "other_frontal_image_of_study": 1,
                              "no_chexpert_row": 1}
  assert summary["splits"]["none"]["skipped"] == {"not_in_split": 1}
  assert "train" not in summary["splits"]          # the official train split is left out
  index = downstream.read_index(b)
  assert sorted(index["test"]["image_id"]) == index["test"]["image_id"]
  assert len(index["test"]["image_id"]) == 7


def test_missing_chexpert_csv_is_a_clear_error(built, tmp_path):
  manual, _, _ = built
  for name in ("mimic-cxr-2.0.0-metadata.csv.gz", "mimic-cxr-2.0.0-split.csv.gz"):
    os.symlink(os.path.join(manual, name), tmp_path / name)
  with pytest.raises(FileNotFoundError, match=r"mimic-cxr-2\.0\.0-chexpert\.csv.*required by "
                                              r"mimic_cxr/x_5x200"):
    build(str(tmp_path), tmp_path / "data", "x_5x200", image_size=32)
