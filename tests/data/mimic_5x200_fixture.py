"""The MIMIC-CXR-JPG 2.0.0 layout exactly, for `mimic_cxr/5x200` (tests/data/test_mimic_5x200.py)
and the transfer tests that build `demo_5x200` on it (tests/test_inference.py,
tests/transfer/test_transfer_reports.py).

The three CSVs gzipped with the released headers, 1.0 / 0.0 / -1.0 / blank label cells,
`files/pXX/pSUBJECT/sSTUDY/DICOM.jpg` images and `sSTUDY.txt` reports beside them.
../shared/realdata/layouts/ holds no MIMIC file (credentialed data), so the rows are
hand-made: the first subject's ids are those the public MIMIC-CXR-JPG documentation shows
(p10000032, studies s50414267 …, official train split), the others ids in the real forms.
Expected values are worked out by hand in the comments.
"""
import csv
import gzip
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

import asg_jax.data.builders  # noqa: F401  (registers the builders)
from asg_jax.data.builders import downstream
from asg_jax.data.builders.mimic_cxr import MimicCxr

META_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
               "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
               "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
               "PatientOrientationCodeSequence_CodeMeaning"]
SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
CHX_HEADER = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
              "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity",
              "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax",
              "Support Devices"]
TASKS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def dicom_id(n):
  """A dicom id in the real 8hex-8hex-8hex-8hex-8hex form."""
  h = f"{n:08x}"
  return "-".join([h, "0badf00d", "c0ffee00", "12345678", f"{n * 7919:08x}"[-8:]])


def _report(finding, impression):
  return ("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n"
          " INDICATION:  ___ year old woman with cough  // eval for pneumonia\n\n"
          " COMPARISON:  ___\n\n FINDINGS:\n \n " + finding + "\n \n IMPRESSION:\n \n "
          + impression + "\n")


# (key, subject, study, split, [(dicom number, view)], {observation: cell}, report or None)
# Cells not named are blank. Reports: FINDINGS text, IMPRESSION text.
STUDIES = [
    # the first subject of the release (official train): never in the pool
    ("T1", "10000032", "50414267", "train", [("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "PA"),
                                             ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", "LATERAL")],
     {"No Finding": "1.0"}, ("No acute cardiopulmonary process.", "No acute process.")),
    ("T2", "10000032", "53189527", "train", [("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", "PA"),
                                             ("e084de3b-be89b11e-20fe3f9f-9c8d8dfe-4cfd202c", "LATERAL")],
     {"Atelectasis": "1.0"}, ("Mild bibasilar atelectasis.", "Bibasilar atelectasis.")),
    # Atelectasis: 3 candidates in CSV order A1, A2, A3; RandomState(0).permutation(3) =
    # [2, 1, 0] -> per_task 2 keeps A3, A2
    ("A1", "10000764", "57375967", "validate", [(1, "PA")], {"Atelectasis": "1.0", "No Finding": "0.0"},
     ("Heart size is normal. There is mild bibasilar atelectasis.", "Bibasilar atelectasis.")),
    ("A2", "10000898", "50771383", "test", [(2, "AP")], {"Atelectasis": "1.0", "Support Devices": "0.0"},
     ("Streaky left basilar opacity is likely atelectasis.", "Left basilar atelectasis.")),
    ("A3", "10000935", "50578979", "test", [(3, "PA")], {"Atelectasis": "1.0"},
     ("Linear atelectasis in the right lower lobe.", "Right basal atelectasis.")),
    # Cardiomegaly: C1 the only candidate; C2 also has Lung Opacity 1.0, C3 an uncertain Edema
    ("C1", "10001176", "53186264", "validate", [(4, "PA")], {"Cardiomegaly": "1.0"},
     ("The heart is moderately enlarged.", "Cardiomegaly without edema.")),
    ("C2", "10001217", "52067803", "test", [(5, "PA")], {"Cardiomegaly": "1.0", "Lung Opacity": "1.0"},
     ("The heart is enlarged. Right lower lobe opacity.", "Cardiomegaly and opacity.")),
    ("C3", "10001401", "51065211", "test", [(6, "AP")], {"Cardiomegaly": "1.0", "Edema": "-1.0"},
     ("Enlarged heart. Possible mild edema.", "Cardiomegaly, possible edema.")),
    # Consolidation: K1 (No Finding 1.0 does not matter), K2; K3 is official train
    ("K1", "10001884", "50376803", "validate", [(7, "PA")], {"Consolidation": "1.0", "No Finding": "1.0"},
     ("Dense consolidation in the left lower lobe.", "Left lower lobe consolidation.")),
    ("K2", "10002013", "51156722", "test", [(8, "PA")], {"Consolidation": "1.0", "Pneumothorax": "0.0"},
     ("Right upper lobe consolidation is present.", "Right upper lobe pneumonia likely."),),
    ("K3", "10002131", "52554212", "train", [(9, "PA")], {"Consolidation": "1.0"},
     ("Consolidation at the right base.", "Right basal consolidation.")),
    # Edema: E1 has two frontal images (AP, PA) and a lateral: its first frontal by dicom id
    # (number 10) is used, the other counted; E2's image file is missing (skipped)
    ("E1", "10002428", "59258773", "test", [(11, "PA"), (10, "AP"), (12, "LATERAL")], {"Edema": "1.0"},
     ("Diffuse interstitial edema.", "Moderate pulmonary edema.")),
    ("E2", "10002430", "58207136", "validate", [(13, "PA")], {"Edema": "1.0"},
     ("Mild pulmonary vascular congestion and edema.", "Mild edema.")),
    # Pleural Effusion: P1 has no report (skipped); P2 a bad cell "2.0" (skipped, bad_value,
    # not a candidate); P3 a candidate; P4 is in the pool but has no CheXpert row
    ("P1", "10002557", "55170749", "test", [(14, "PA")], {"Pleural Effusion": "1.0"}, None),
    ("P2", "10002661", "54866643", "test", [(15, "PA")], {"Pleural Effusion": "1.0", "Fracture": "2.0"},
     ("Small left pleural effusion.", "Small left effusion.")),
    ("P3", "10003019", "59467722", "validate", [(16, "PA")], {"Pleural Effusion": "1.0", "Fracture": "0.0"},
     ("Large right pleural effusion with compressive atelectasis is not seen.", "Right pleural effusion.")),
    ("P4", "10003299", "52120006", "test", [(17, "PA")], None,
     ("Bilateral pleural effusions.", "Bilateral effusions.")),
]
NOT_IN_SPLIT = (18, "10003400", "53300100")   # a frontal image absent from the split CSV
# by hand: examples A2, A3, C1, K1, K2, E1 (dicom 10), P3 = 7
EXPECTED = {"A2": "Atelectasis", "A3": "Atelectasis", "C1": "Cardiomegaly",
            "K1": "Consolidation", "K2": "Consolidation", "E1": "Edema",
            "P3": "Pleural Effusion"}


def image_id(d):
  """The dicom id (the stored `image_id`) of a STUDIES image: given, or `dicom_id(number)`."""
  return d if isinstance(d, str) else dicom_id(d)


def _csv_gz(path, header, rows):
  with gzip.open(path, "wt", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)


def write_fixture(manual):
  """Write the MIMIC-CXR-JPG layout of STUDIES into `manual`; returns it."""
  os.makedirs(manual, exist_ok=True)
  meta, split, chx = [], [], []
  for i, (key, subj, study, official, images, labels, report) in enumerate(STUDIES):
    folder = os.path.join(manual, "files", f"p{subj[:2]}", f"p{subj}")
    os.makedirs(folder, exist_ok=True)
    for j, (d, view) in enumerate(images):
      h, w = 40 + 2 * i, 32 + j
      meta.append([image_id(d), subj, study, "CHEST (PA AND LAT)", view, h, w, "21800506", "213014.531",
                   "CHEST (PA AND LAT)", "postero-anterior", "Erect"])
      split.append([image_id(d), study, subj, official])
      if key != "E2":
        os.makedirs(os.path.join(folder, f"s{study}"), exist_ok=True)
        arr = np.random.default_rng(i * 10 + j).integers(0, 255, (h, w), dtype=np.uint8)
        Image.fromarray(arr).save(os.path.join(folder, f"s{study}", f"{image_id(d)}.jpg"))
    if report is not None:
      with open(os.path.join(folder, f"s{study}.txt"), "w") as f:
        f.write(_report(*report))
    if labels is not None:
      chx.append([subj, study] + [labels.get(c, "") for c in CHX_HEADER[2:]])
  d, subj, study = NOT_IN_SPLIT
  meta.append([dicom_id(d), subj, study, "CHEST (PORTABLE AP)", "AP", 40, 40, "21800506",
               "1", "", "", ""])
  _csv_gz(os.path.join(manual, "mimic-cxr-2.0.0-metadata.csv.gz"), META_HEADER, meta)
  _csv_gz(os.path.join(manual, "mimic-cxr-2.0.0-split.csv.gz"), SPLIT_HEADER, split)
  _csv_gz(os.path.join(manual, "mimic-cxr-2.0.0-chexpert.csv.gz"), CHX_HEADER, chx)
  return manual


def build(manual, data_dir, config="demo_5x200", **config_kwargs):
  """Build `mimic_cxr/<config>` (a registered name, or a DownstreamConfig from kwargs)."""
  if config_kwargs:
    config = downstream.DownstreamConfig(name=config, subset="5x200", anatomy=False,
                                         **config_kwargs)
  b = MimicCxr(config=config, data_dir=str(data_dir))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return b


def by_key():
  """{key: STUDIES row}."""
  return {s[0]: s for s in STUDIES}
