"""The embedded demo: a miniature MIMIC-CXR-JPG + reports + Chest ImaGenome, generated.

`generate(out_dir, num_studies, seed)` writes, in the real on-disk layout (data.md):

  files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg    chest-like grayscale radiographs, 200–320 px,
                                            varied aspect; frontal (PA/AP) and, for some
                                            studies, a second LATERAL / LL view
  files/pXX/pSUBJECT/sSTUDY.txt             MIMIC-style reports (FINAL REPORT, EXAMINATION,
                                            INDICATION, ..., FINDINGS:, IMPRESSION:)
  mimic-cxr-2.0.0-{metadata,split,chexpert,negbio}.csv.gz   the CSVs with the real headers
  silver_dataset/scene_graph/DICOM_ID_SceneGraph.json       per frontal image: the TRUE boxes
                                            of the 29 regions (+2 extra objects), original
                                            pixels (`original_x1..`) and a 224-scaled copy
  demo_truth.jsonl                          (not part of MIMIC) the generator's findings

Each study has 0–3 findings (~20% normal) among ten visually distinct ASG tags, drawn as
patterns INSIDE the anatomical region its report sentence names: pleural effusion
(bright fluid with a meniscus in the lower zone / costophrenic angle), opacity (soft
blob in a zone), consolidation (dense irregular blob with air bronchograms), pneumothorax
(dark rim without lung markings and a pleural line at an apex), cardiomegaly (enlarged
heart), nodule (small round bright spot), tube (endotracheal tube down the trachea), line
(jugular / PICC catheter ending in the SVC or at the cavoatrial junction), edema
(bilateral perihilar haze with septal lines) and atelectasis (plate-like band at a base).
Uncertain findings ("possible ...") are drawn faintly; negated ones ("no pleural
effusion") are not drawn. Deterministic for a seed.

`prepare_demo(data_dir, manual_dir, num_studies, seed)` generates (if needed) and builds
`mimic_cxr/demo`. The generator writes only into a folder it created (or found empty) and
marked as its own (`owned_dir`); it refuses any other folder and never deletes one. CLI: `python -m asg_jax.data.synthetic --out DIR --num_studies N --seed S`.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import logging
import os
import time

import numpy as np
from PIL import Image
from scipy import ndimage

from asg_jax.data import owned_dir
from asg_jax.data.reports import CHEXPERT, REGIONS

logger = logging.getLogger(__name__)

FINDINGS = ("pleural effusion", "opacity", "consolidation", "pneumothorax", "cardiomegaly",
            "nodule", "tube", "line", "edema", "atelectasis")
LUNG_FINDINGS = frozenset({"pleural effusion", "opacity", "consolidation", "pneumothorax",
                           "nodule", "edema", "atelectasis"})
CHEXPERT_OF = {"pleural effusion": "Pleural Effusion", "opacity": "Lung Opacity",
               "consolidation": "Consolidation", "pneumothorax": "Pneumothorax",
               "cardiomegaly": "Cardiomegaly", "nodule": "Lung Lesion", "tube": "Support Devices",
               "line": "Support Devices", "edema": "Edema", "atelectasis": "Atelectasis"}
METADATA_HEADER = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
                   "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
                   "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
                   "PatientOrientationCodeSequence_CodeMeaning"]
SPLIT_HEADER = ["dicom_id", "study_id", "subject_id", "split"]
LABEL_HEADER = ["subject_id", "study_id"] + list(CHEXPERT)
EXTRA_OBJECTS = ("right cardiophrenic angle", "left cardiophrenic angle")
OWNER = "asg_jax.data.synthetic"
OWN_DATA_HINT = ("To train on your own image-report pairs use configs/own_data.py (builder "
                 "image_text_csv, data.demo_num_studies=0); to generate the demo leave "
                 "config.data.manual_dir empty (it then goes into <workdir>/data/demo_manual) "
                 "or name a new folder.")
GENERATOR_VERSION = 1
ZONES = ("upper", "mid", "lower")
_ZONE_PHRASES = {"upper": ("{s} upper lung zone", "{s} upper lobe"),
                 "mid": ("{s} mid lung zone", "{s} mid lung"),
                 "lower": ("{s} lower lung zone", "{s} lower lobe", "{s} lung base")}


# ----------------------------------------------------------------------------- reports
# A finding: dict(tag, existence in {present, uncertain}, side, zone, variant, size ...).
# Each template gives (sentence, regions the parser links to it).

def _cap(s: str) -> str:
  return s[0].upper() + s[1:]


def _zone_phrase(rng, side: str, zone: str) -> str:
  return rng.choice(_ZONE_PHRASES[zone]).format(s=side)


def _sentence(rng, f: dict, impression: bool = False) -> tuple[str, set[str]]:
  """(report sentence, regions the parser links to it) for one drawn finding."""
  tag, side, zone, unc = f["tag"], f.get("side"), f.get("zone"), f["existence"] == "uncertain"
  zr = f"{side} {zone} lung zone" if zone else None
  size = f.get("size", "small")
  if tag == "pleural effusion":
    if side == "bilateral":
      s = (f"Possible {size} bilateral pleural effusions at the lung bases." if unc else
           f"{_cap(size)} bilateral pleural effusions at the lung bases.")
      return s, {"right lung", "left lung", "right lower lung zone", "left lower lung zone"}
    if f["variant"] == "cp":
      if unc:
        return f"Possible {size} {side} pleural effusion.", {f"{side} lung"}
      return (f"{_cap(size)} {side} pleural effusion in the {side} costophrenic angle.",
              {f"{side} lung", f"{side} costophrenic angle"})
    if unc:
      return rng.choice([(f"Possible {size} {side} pleural effusion.", {f"{side} lung"}),
                         (f"A {size} {side} pleural effusion cannot be excluded.", {f"{side} lung"})])
    if impression:
      return f"{_cap(size)} {side} pleural effusion.", {f"{side} lung"}
    return rng.choice([(f"{_cap(size)} {side} pleural effusion at the {side} base.",
                        {f"{side} lung", f"{side} lower lung zone"}),
                       (f"There is a {size} {side} pleural effusion.", {f"{side} lung"})])
  if tag in ("opacity", "consolidation", "nodule"):
    zp = _zone_phrase(rng, side, zone)
    if tag == "opacity":
      adj = rng.choice(["patchy", "hazy", "ill-defined", "focal"])
      opts = ([f"Possible {adj} opacity in the {zp}."] if unc else
              [f"{_cap(adj)} opacity in the {zp}.",
               f"There is a {adj} opacity projecting over the {zp}."])
    elif tag == "consolidation":
      opts = ([f"Possible focal consolidation in the {zp}."] if unc else
              [f"Focal consolidation in the {zp}.", f"There is consolidation of the {zp}.",
               f"Dense consolidation in the {zp}."])
    else:
      mm = f.get("mm", 8)
      opts = ([f"Possible nodule in the {zp}.", f"Questionable nodule in the {zp}."] if unc else
              [f"There is a {mm} mm nodule in the {zp}.", f"A {mm} mm nodule projects over the {zp}.",
               f"Small nodule in the {zp}."])
    return rng.choice(opts), {zr}
  if tag == "pneumothorax":
    reg = {f"{side} apical zone"}
    if unc:
      return f"Cannot exclude {size} {side} apical pneumothorax.", reg
    return rng.choice([f"{_cap(size)} {side} apical pneumothorax.",
                       f"There is a {size} {side} pneumothorax at the apex.",
                       f"{_cap(side)} apical pneumothorax is {size}."]), reg
  if tag == "cardiomegaly":
    deg = f.get("degree", "mild")
    opts = (["Heart is possibly enlarged.", "Cardiomegaly is possible."] if unc else
            ["The heart is enlarged.", f"There is {deg} cardiomegaly.",
             "The cardiac silhouette is enlarged.", f"Heart size is {deg}ly enlarged."])
    return rng.choice(opts), {"cardiac silhouette"}
  if tag == "tube":
    return rng.choice([("Endotracheal tube in standard position in the trachea.", {"trachea"}),
                       ("Endotracheal tube is in the trachea above the carina.", {"trachea", "carina"}),
                       ("Endotracheal tube ends in the trachea at the level of the carina.",
                        {"trachea", "carina"})])
  if tag == "line":
    if f["route"] == "picc":
      where = "in the svc" if f["variant"] == "svc" else "at the cavoatrial junction"
      return f"Right PICC line ends {where}.", {"svc" if f["variant"] == "svc" else "cavoatrial junction"}
    if f["variant"] == "svc":
      return rng.choice(["Right internal jugular central line ends in the svc.",
                         "Right internal jugular line in the svc."]), {"svc"}
    return ("Right internal jugular central venous line ends at the cavoatrial junction.",
            {"cavoatrial junction"})
  if tag == "edema":
    if unc:
      return "Possible mild pulmonary edema in both lungs.", {"right lung", "left lung"}
    return rng.choice([("Mild pulmonary edema in both lungs.", {"right lung", "left lung"}),
                       ("Moderate bilateral interstitial edema.", {"right lung", "left lung"}),
                       ("Mild interstitial pulmonary edema is seen in both lungs.",
                        {"right lung", "left lung"}),
                       ("Interval worsening of bilateral perihilar edema.",
                        {"right hilar structures", "left hilar structures"})])
  if tag == "atelectasis":
    reg = {f"{side} lower lung zone"}
    if unc:
      return f"Probable {side} basilar atelectasis.", reg
    return rng.choice([f"Plate-like atelectasis at the {side} base.", f"{_cap(side)} basilar atelectasis.",
                       f"Linear atelectasis in the {side} lower lung zone.",
                       f"Subsegmental atelectasis at the {side} lung base."]), reg
  raise ValueError(f"unknown demo finding {tag!r}")


_NEGATIONS = {  # sentence -> (tags it negates, regions it names)
    "No pleural effusion.": ({"pleural effusion"}, set()),
    "There is no pleural effusion.": ({"pleural effusion"}, set()),
    "There is no pneumothorax.": ({"pneumothorax"}, set()),
    "No pneumothorax is seen.": ({"pneumothorax"}, set()),
    "No pleural effusion or pneumothorax.": ({"pleural effusion", "pneumothorax"}, set()),
    "No focal consolidation.": ({"consolidation"}, set()),
    "There is no focal consolidation, pleural effusion or pneumothorax.":
        ({"consolidation", "pleural effusion", "pneumothorax"}, set()),
    "No pulmonary edema.": ({"edema"}, set()),
    "No pulmonary edema is seen.": ({"edema"}, set()),
    "Heart size is normal.": ({"cardiomegaly"}, {"cardiac silhouette"}),
    "The cardiac silhouette is within normal limits.": ({"cardiomegaly"}, {"cardiac silhouette"}),
    "No suspicious pulmonary nodules.": ({"nodule"}, set()),
}
_FILLERS = ["Osseous structures are unremarkable.", "The visualized osseous structures are intact.",
            "Hilar contours are unremarkable."]
_NORMAL_IMPRESSIONS = ["No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality.",
                       "Normal chest radiograph."]
_INDICATIONS = ["cough", "shortness of breath", "fever", "chest pain", "evaluate for pneumonia",
                "line placement", "intubated patient", "follow-up"]


def _sample_findings(rng) -> list[dict]:
  k = int(rng.choice(4, p=[0.2, 0.35, 0.28, 0.17]))
  tags = list(rng.choice(len(FINDINGS), size=k, replace=False))
  out = []
  for t in tags:
    tag = FINDINGS[t]
    f = {"tag": tag, "existence": "uncertain" if (rng.random() < 0.15 and tag not in ("tube", "line"))
         else "present", "side": None, "zone": None, "variant": ""}
    if tag in ("pleural effusion", "pneumothorax", "opacity", "consolidation", "nodule", "atelectasis"):
      f["side"] = str(rng.choice(["right", "left"]))
    if tag == "pleural effusion":
      if rng.random() < 0.2:
        f["side"] = "bilateral"
      f["variant"] = "cp" if (f["side"] != "bilateral" and rng.random() < 0.3) else "base"
      f["size"] = "small" if f["variant"] == "cp" else str(rng.choice(["small", "moderate", "large"]))
    if tag in ("opacity", "consolidation", "nodule"):
      f["zone"] = str(rng.choice(ZONES))
    if tag == "atelectasis":
      f["zone"] = "lower"
    if tag == "pneumothorax":
      f["size"] = str(rng.choice(["small", "tiny", "moderate"]))
    if tag == "cardiomegaly":
      f["degree"] = str(rng.choice(["mild", "moderate"]))
    if tag == "nodule":
      f["mm"] = int(rng.integers(6, 15))
    if tag == "line":
      f["variant"] = str(rng.choice(["svc", "caj"]))
      f["route"] = str(rng.choice(["ij", "picc"]))
    out.append(f)
  return out


def _wrap(text: str, width: int = 76) -> str:
  lines, line = [], ""
  for word in text.split():
    if line and len(line) + 1 + len(word) > width:
      lines.append(line)
      line = word
    else:
      line = f"{line} {word}" if line else word
  lines.append(line)
  return "\n ".join(lines)


def _report(rng, findings: list[dict], view: str) -> tuple[str, list[dict]]:
  """MIMIC-style report text and the intended sentence list [{text, tags, regions}]."""
  present = {f["tag"] for f in findings}
  body = []
  for f in findings:
    text, regions = _sentence(rng, f)
    body.append({"text": text, "tags": {f["tag"]: f["existence"]}, "regions": sorted(regions)})
  negs = [s for s, (tags, _) in _NEGATIONS.items() if not tags & present]
  rng.shuffle(negs)
  used: set = set()
  for s in negs[:int(rng.integers(1, 4))]:
    tags, regions = _NEGATIONS[s]
    if tags & used:
      continue
    used |= tags
    body.append({"text": s, "tags": {t: "absent" for t in tags}, "regions": sorted(regions)})
  if not present & LUNG_FINDINGS and rng.random() < 0.7:
    body.append({"text": "The lungs are clear.", "tags": {}, "regions": ["left lung", "right lung"]})
  if rng.random() < 0.5:
    body.append({"text": str(rng.choice(_FILLERS)), "tags": {}, "regions": []})
  order = rng.permutation(len(body))
  body = [body[i] for i in order]
  if findings:
    impression = []
    for f in findings:
      text, regions = _sentence(rng, f, impression=True)
      impression.append({"text": text, "tags": {f["tag"]: f["existence"]}, "regions": sorted(regions)})
  else:
    impression = [{"text": str(rng.choice(_NORMAL_IMPRESSIONS)), "tags": {}, "regions": []}]
  exam = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
  parts = ["                                 FINAL REPORT",
           f" EXAMINATION:  {exam}", "",
           f" INDICATION:  ___ year old {rng.choice(['woman', 'man'])} with "
           f"{rng.choice(_INDICATIONS)}  // ?", "",
           f" TECHNIQUE:  {'Chest PA and lateral' if view == 'PA' else 'Portable AP chest'}", "",
           f" COMPARISON:  {rng.choice(['None.', '___.', 'Chest radiograph from ___.'])}", ""]
  impression_only = rng.random() < 0.1
  if not impression_only:
    parts += [" FINDINGS:", "", " " + _wrap(" ".join(s["text"] for s in body)), ""]
  parts += [" IMPRESSION:", "", " " + _wrap(" ".join(s["text"] for s in impression)), ""]
  # report_text() order: IMPRESSION then FINDINGS
  sentences = impression + ([] if impression_only else body)
  return "\n".join(parts), sentences


# ------------------------------------------------------------------------------ images

class _Canvas:
  """Normalised-coordinate drawing on an [H, W] float32 image."""

  def __init__(self, h: int, w: int):
    self.h, self.w = h, w
    self.img = np.zeros((h, w), np.float32)
    self.y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    self.x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]

  def ellipse(self, cx, cy, rx, ry, soft=0.0):
    d = np.sqrt(((self.x - cx) / rx) ** 2 + ((self.y - cy) / ry) ** 2)
    if soft <= 0:
      return (d <= 1).astype(np.float32)
    return np.clip((1 + soft - d) / (2 * soft), 0, 1).astype(np.float32)

  def box_mask(self, box):
    x1, y1, x2, y2 = box
    return ((self.x >= x1) & (self.x <= x2) & (self.y >= y1) & (self.y <= y2)).astype(np.float32)

  def polyline(self, pts, width_px: float, value: float, out=None):
    """Max-blend `value` along a polyline [(x, y)] (normalised), `width_px` thick."""
    return self.polylines([pts], width_px, value, out)

  def polylines(self, lines, width_px: float, value: float, out=None):
    """Max-blend `value` along several polylines of the same width (one dilation)."""
    out = self.img if out is None else out
    layer = np.zeros(out.shape, bool)
    scale = np.array([self.w, self.h], np.float32)
    for pts in lines:
      pts = np.asarray(pts, np.float32) * scale
      seg = np.hypot(*np.diff(pts, axis=0).T)
      cum = np.concatenate([[0.0], np.cumsum(seg)])
      t = np.linspace(0.0, cum[-1], max(2, int(cum[-1] * 2)))
      xi = np.clip(np.round(np.interp(t, cum, pts[:, 0])).astype(int), 0, self.w - 1)
      yi = np.clip(np.round(np.interp(t, cum, pts[:, 1])).astype(int), 0, self.h - 1)
      layer[yi, xi] = True
    r = width_px / 2
    if r > 0.75 and layer.any():
      k = int(np.ceil(r))
      yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
      rows, cols = np.nonzero(layer.any(axis=1))[0], np.nonzero(layer.any(axis=0))[0]
      y0, y1 = max(rows[0] - k, 0), min(rows[-1] + k + 1, self.h)
      x0, x1 = max(cols[0] - k, 0), min(cols[-1] + k + 1, self.w)
      layer[y0:y1, x0:x1] = ndimage.binary_dilation(
          layer[y0:y1, x0:x1], structure=(xx * xx + yy * yy) <= r * r + 0.25)
    out[layer] = np.maximum(out[layer], value)
    return out


def _lung_mask(cv: _Canvas, box, medial_right: bool):
  """A lung shape filling `box` exactly: rounded apex, diaphragm dome, sharp CP angle."""
  x1, y1, x2, y2 = box
  u = (cv.x - x1) / (x2 - x1)
  v = (cv.y - y1) / (y2 - y1)
  if not medial_right:      # left lung (image right): mirror so that u = 1 is medial
    u = 1 - u
  apex = 0.62
  top = np.where(u < apex, 0.45 * ((apex - u) / apex) ** 2, 0.9 * ((u - apex) / (1 - apex)) ** 2)
  bottom = 1 - 0.16 * np.sin(np.pi * np.clip(u, 0, 1)) ** 0.7
  return ((u >= 0) & (u <= 1) & (v >= top) & (v <= bottom)).astype(np.float32)


def _bbox(mask, cv: _Canvas):
  """Normalised bounding box of a mask (None if empty)."""
  ys, xs = np.nonzero(mask > 0.5)
  if len(xs) == 0:
    return None
  return (xs.min() / cv.w, ys.min() / cv.h, (xs.max() + 1) / cv.w, (ys.max() + 1) / cv.h)


def _geometry(rng, cardiomegaly: bool) -> dict:
  """Normalised anatomy of one frontal image: the atlas, scaled, shifted and jittered."""
  from asg_jax.data.builders.common import load_atlas  # pylint: disable=import-outside-toplevel
  atlas = load_atlas()
  s = rng.uniform(0.9, 1.04)
  dx, dy = rng.uniform(-0.03, 0.03, 2)

  def tf(b, jitter=0.0):
    b = np.asarray(b, np.float64) + rng.uniform(-jitter, jitter, 4)
    return (0.5 + s * (b[0] - 0.5) + dx, 0.5 + s * (b[1] - 0.5) + dy,
            0.5 + s * (b[2] - 0.5) + dx, 0.5 + s * (b[3] - 0.5) + dy)
  g = {"rl": tf(atlas["right lung"], 0.02), "ll": tf(atlas["left lung"], 0.02),
       "trachea": tf(atlas["trachea"], 0.005), "carina": tf(atlas["carina"], 0.005),
       "spine": tf(atlas["spine"]), "rclav": tf(atlas["right clavicle"], 0.01),
       "lclav": tf(atlas["left clavicle"], 0.01), "arch": tf(atlas["aortic arch"], 0.008),
       "svc": tf(atlas["svc"], 0.005), "caj": tf(atlas["cavoatrial junction"], 0.005),
       "mediastinum": tf(atlas["mediastinum"], 0.01),
       "upper mediastinum": tf(atlas["upper mediastinum"], 0.01)}
  heart = list(tf(atlas["cardiac silhouette"], 0.015))
  if cardiomegaly:   # widen mostly to the patient's left (image right) and a little down
    w = heart[2] - heart[0]
    heart[0] -= 0.12 * w * rng.uniform(0.8, 1.2)
    heart[2] += 0.28 * w * rng.uniform(0.8, 1.2)
    heart[3] += 0.03
  g["heart"] = tuple(heart)
  g["carina"] = (g["carina"][0], g["trachea"][3] - 0.02, g["carina"][2], g["trachea"][3] + 0.06)
  return g


def _draw_frontal(rng, h: int, w: int, findings: list[dict]):
  """-> (uint8 [h, w] image, {region: (x1, y1, x2, y2) original pixels})."""
  tone_rng = np.random.default_rng(int(rng.integers(2 ** 32)))   # noise + tone, finding-independent
  cardio = [f for f in findings if f["tag"] == "cardiomegaly"]
  g = _geometry(rng, bool(cardio))
  cv = _Canvas(h, w)
  boxes: dict[str, tuple] = {}
  # body and soft tissue
  body = cv.ellipse(0.5, 0.62, 0.47, 0.75, soft=0.06)
  img = 0.06 + 0.40 * body
  neck = cv.box_mask((0.36, 0.0, 0.64, 0.2))
  img = np.maximum(img, 0.42 * neck)
  # lungs
  lungs = {}
  for side, key, medial_right in (("right", "rl", True), ("left", "ll", False)):
    m = _lung_mask(cv, g[key], medial_right)
    lungs[side] = m
    img = np.where(m > 0, 0.17, img)
  # lung markings: vessels radiating from the hila, ribs
  marks = np.zeros_like(img)
  hila, vessels, ribs = {}, [], []
  for side, key in (("right", "rl"), ("left", "ll")):
    x1, y1, x2, y2 = g[key]
    lw, lh = x2 - x1, y2 - y1
    hx = x2 - 0.2 * lw if side == "right" else x1 + 0.2 * lw
    hy = y1 + 0.46 * lh
    hila[side] = (hx, hy)
    for _ in range(9):
      ang = rng.uniform(-np.pi * 0.95, np.pi * 0.95) if side == "left" else rng.uniform(np.pi * 0.05, np.pi * 1.95)
      length = rng.uniform(0.35, 0.8) * lw
      pts = [(hx, hy)]
      for k in range(1, 4):
        a = ang + rng.normal(0, 0.15)
        pts.append((hx + np.cos(a) * length * k / 3, hy + np.sin(a) * length * k / 3 * 1.3))
      vessels.append(pts)
    for k in range(7):   # posterior ribs as faint arcs
      yy = y1 + (k + 0.5) * lh / 7
      xs = np.linspace(x1 - 0.02, x2 + 0.02, 12)
      ribs.append(list(zip(xs, yy + 0.05 * ((xs - (x1 + x2) / 2) / lw) ** 2)))
  cv.polylines(ribs, 2.0, 0.05, out=marks)
  cv.polylines(vessels, 1.2, 0.07, out=marks)
  lung_any = np.maximum(lungs["right"], lungs["left"])
  # pneumothorax: remove markings at the apex, darken, pleural line
  ptx_masks = []
  for f in findings:
    if f["tag"] != "pneumothorax":
      continue
    side = f["side"]
    x1, y1, x2, y2 = g["rl" if side == "right" else "ll"]
    lw, lh = x2 - x1, y2 - y1
    depth = {"tiny": 0.10, "small": 0.16, "moderate": 0.24}[f["size"]]
    cx = x1 + 0.62 * lw if side == "right" else x2 - 0.62 * lw
    inner = cv.ellipse(cx, y1 + 0.5 * lh, lw * (0.62 - depth * 0.8), lh * (0.5 - depth))
    zone = cv.box_mask((x1, y1, x2, y1 + 0.17 * lh))   # the apical zone (atlas: top 17%)
    m = lungs[side] * (1 - inner) * zone
    ptx_masks.append((m, inner, zone, f))
  marks = marks * lung_any
  for m, *_ in ptx_masks:
    marks = marks * (1 - m)
  img = img + marks
  for m, inner, zone, f in ptx_masks:
    amp = 1.0 if f["existence"] == "present" else 0.5
    img = np.where(m > 0, img - 0.12 * amp, img)
    edge = (ndimage.binary_dilation(inner > 0, iterations=1) & ~(inner > 0)) & (zone * lungs[f["side"]] > 0)
    img = np.where(edge, img + 0.18 * amp, img)
  # mediastinum, spine, trachea, heart, aortic knob, clavicles, diaphragm / abdomen
  sp = g["spine"]
  img = np.maximum(img, 0.32 * cv.box_mask((sp[0] + 0.015, 0, sp[2] - 0.015, 1)) * body)
  for k in range(24):
    yy = k / 22.0
    img = np.maximum(img, 0.40 * cv.box_mask((sp[0] + 0.02, yy, sp[2] - 0.02, yy + 0.028)) * body)
  um = g["upper mediastinum"]
  img = np.maximum(img, 0.5 * cv.ellipse((um[0] + um[2]) / 2, (um[1] + um[3]) / 2 + 0.05,
                                         (um[2] - um[0]) / 2, (um[3] - um[1]) / 2 + 0.08, soft=0.1))
  tr = g["trachea"]
  trachea = cv.box_mask(((tr[0] + tr[2]) / 2 - 0.018, 0.0, (tr[0] + tr[2]) / 2 + 0.018, tr[3]))
  img = np.where(trachea > 0, img - 0.13, img)
  ca = g["carina"]
  ccx, ccy = (ca[0] + ca[2]) / 2, tr[3]
  for dxb in (-1, 1):
    br = np.zeros_like(img)
    cv.polyline([(ccx, ccy), (ccx + dxb * 0.045, ccy + 0.06)], 4.0, 1.0, out=br)
    img = np.where(br > 0, img - 0.1, img)
  hb = g["heart"]
  hcx, hcy = (hb[0] + hb[2]) / 2, (hb[1] + hb[3]) / 2
  heart = cv.ellipse(hcx, hcy, (hb[2] - hb[0]) / 2, (hb[3] - hb[1]) / 2, soft=0.04)
  img = np.maximum(img, 0.58 * heart)
  ar = g["arch"]
  img = np.maximum(img, 0.56 * cv.ellipse((ar[0] + ar[2]) / 2, (ar[1] + ar[3]) / 2,
                                          (ar[2] - ar[0]) / 2, (ar[3] - ar[1]) / 2, soft=0.1))
  for key in ("rclav", "lclav"):
    c = g[key]
    pts = [(c[0], c[1] + 0.02), ((c[0] + c[2]) / 2, c[3] - 0.02), (c[2], c[1] + 0.04)]
    cv.polyline(pts, max(2.0, 0.025 * h), 0.62)
  img = np.maximum(img, cv.img)
  # abdomen below the domes: lungs stop there; gastric bubble under the left dome
  x1, y1, x2, y2 = g["ll"]
  bubble = cv.ellipse(x1 + 0.45 * (x2 - x1), y2 + 0.05, 0.06, 0.03, soft=0.3)
  img = img - 0.15 * bubble * body
  # ---- findings (in the lung not hidden by the heart) ----
  vis = {sd: lungs[sd] * (heart < 0.5) for sd in lungs}
  for f in findings:
    amp = 1.0 if f["existence"] == "present" else 0.5
    tag, side = f["tag"], f["side"]
    sides = ["right", "left"] if side == "bilateral" else [side]
    if tag == "pleural effusion":
      for sd in sides:
        x1, y1, x2, y2 = g["rl" if sd == "right" else "ll"]
        lw, lh = x2 - x1, y2 - y1
        zone_top = y1 + 2 * lh / 3
        frac = {"small": 0.35, "moderate": 0.65, "large": 0.95}[f["size"]]
        u = (cv.x - x1) / lw if sd == "right" else (x2 - cv.x) / lw
        level = y2 - frac * (y2 - zone_top) * (0.7 + 0.3 * np.clip(1 - u, 0, 1))   # meniscus
        fluid = vis[sd] * (cv.y >= np.maximum(level, zone_top))
        if f["variant"] == "cp":
          cpb = (x1, y2 - 0.18 * lh, x1 + 0.35 * lw, y2) if sd == "right" else (x2 - 0.35 * lw, y2 - 0.18 * lh, x2, y2)
          fluid = fluid * cv.box_mask(cpb)
        img = np.where(fluid > 0, np.maximum(img, 0.17 + 0.33 * amp), img)
    elif tag in ("opacity", "consolidation", "nodule"):
      x1, y1, x2, y2 = g["rl" if side == "right" else "ll"]
      lh = y2 - y1
      k = ZONES.index(f["zone"])
      zb = (x1, y1 + k * lh / 3, x2, y1 + (k + 1) * lh / 3)
      zmask = vis[side] * cv.box_mask(zb)
      ys, xs = np.nonzero(zmask)
      if len(xs) == 0:
        continue
      i = rng.integers(len(xs))
      cx, cy = (xs[i] + 0.5) / w, (ys[i] + 0.5) / h
      zw, zh = zb[2] - zb[0], zb[3] - zb[1]
      if tag == "opacity":
        blob = np.exp(-(((cv.x - cx) / (0.22 * zw)) ** 2 + ((cv.y - cy) / (0.3 * zh)) ** 2))
        img = img + 0.24 * amp * blob * zmask
      elif tag == "consolidation":
        blob = np.zeros_like(img)
        for _ in range(4):
          bx, by = cx + rng.normal(0, 0.08 * zw), cy + rng.normal(0, 0.1 * zh)
          blob = np.maximum(blob, np.exp(-(((cv.x - bx) / (0.16 * zw)) ** 2 + ((cv.y - by) / (0.22 * zh)) ** 2)))
        dense = np.clip((blob - 0.35) * 4, 0, 1) * zmask
        img = np.where(dense > 0, np.maximum(img, 0.17 + 0.36 * amp * dense), img)
        air = np.zeros_like(img)
        for _ in range(2):
          a = rng.uniform(0, np.pi)
          cv.polyline([(cx - 0.08 * zw * np.cos(a), cy - 0.08 * zh * np.sin(a)),
                       (cx + 0.08 * zw * np.cos(a), cy + 0.08 * zh * np.sin(a))], 1.0, 1.0, out=air)
        img = np.where((air > 0) & (dense > 0.5), img - 0.12 * amp, img)
      else:
        r = max(3.0 / max(h, w), 0.0018 * f.get("mm", 8))
        ys2, xs2 = np.nonzero(zmask * cv.box_mask((zb[0] + r, zb[1] + r, zb[2] - r, zb[3] - r)))
        if len(xs2):
          j = rng.integers(len(xs2))
          cx, cy = (xs2[j] + 0.5) / w, (ys2[j] + 0.5) / h
        disk = cv.ellipse(cx, cy, r * max(h, w) / w, r * max(h, w) / h, soft=0.15)
        img = img + 0.32 * amp * disk
    elif tag == "edema":
      for sd in ("right", "left"):
        hx, hy = hila[sd]
        x1, y1, x2, y2 = g["rl" if sd == "right" else "ll"]
        haze = np.exp(-(((cv.x - hx) / (0.45 * (x2 - x1))) ** 2 + ((cv.y - hy) / (0.4 * (y2 - y1))) ** 2))
        img = img + 0.17 * amp * haze * vis[sd]
        septal = np.zeros_like(img)
        for _ in range(6):   # Kerley B lines near the lateral lower lung
          yy = rng.uniform(y1 + 0.6 * (y2 - y1), y2 - 0.05 * (y2 - y1))
          xe = x1 + 0.03 if sd == "right" else x2 - 0.03
          cv.polyline([(xe, yy), (xe + (0.04 if sd == "right" else -0.04), yy)], 1.0, 0.08 * amp, out=septal)
        img = img + septal * vis[sd]
    elif tag == "atelectasis":
      x1, y1, x2, y2 = g["rl" if side == "right" else "ll"]
      lw, lh = x2 - x1, y2 - y1
      yy = rng.uniform(y1 + 0.72 * lh, y1 + 0.84 * lh)
      band = np.zeros_like(img)
      cv.polyline([(x1 + 0.15 * lw, yy + rng.uniform(-0.02, 0.02)), (x2 - 0.15 * lw, yy)],
                  max(2.0, 0.022 * h), 1.0, out=band)
      band = ndimage.gaussian_filter(band, 0.8) * vis[side]
      img = img + 0.3 * amp * band
    elif tag == "tube":
      t = g["trachea"]
      tip = g["carina"][1] + 0.015
      tx = (t[0] + t[2]) / 2 + rng.uniform(-0.005, 0.005)
      cv.img[:] = 0
      cv.polyline([(tx + 0.01, 0.0), (tx, 0.1), (tx, tip)], max(2.0, 0.012 * w), 1.0)
      img = np.where(cv.img > 0, np.maximum(img, 0.8), img)
    elif tag == "line":
      tb = g["svc"] if f["variant"] == "svc" else g["caj"]
      tipx, tipy = (tb[0] + tb[2]) / 2, tb[1] + 0.7 * (tb[3] - tb[1])
      sv = g["svc"]
      cv.img[:] = 0
      if f["route"] == "ij":   # internal jugular from the right neck
        pts = [(0.36, 0.0), (0.40, 0.1), ((sv[0] + sv[2]) / 2, sv[1]), (tipx, tipy)]
      else:                    # PICC from the right arm
        pts = [(0.0, 0.22), (0.2, 0.17), (0.38, 0.2), ((sv[0] + sv[2]) / 2, sv[1]), (tipx, tipy)]
      cv.polyline(pts, max(1.5, 0.008 * w), 1.0)
      img = np.where(cv.img > 0, np.maximum(img, 0.78), img)
  # true boxes (normalised) of the 29 regions + extras, from the drawn anatomy
  for side, key in (("right", "rl"), ("left", "ll")):
    x1, y1, x2, y2 = g[key]
    lw, lh = x2 - x1, y2 - y1
    m = lungs[side]
    boxes[f"{side} lung"] = _bbox(m, cv)
    for k, z in enumerate(ZONES):
      boxes[f"{side} {z} lung zone"] = _bbox(m * cv.box_mask((0, y1 + k * lh / 3, 1, y1 + (k + 1) * lh / 3)), cv)
    boxes[f"{side} apical zone"] = _bbox(m * cv.box_mask((0, 0, 1, y1 + 0.17 * lh)), cv)
    hx, hy = hila[side]
    boxes[f"{side} hilar structures"] = (hx - 0.065, hy - 0.09, hx + 0.065, hy + 0.09)
    if side == "right":
      boxes["right costophrenic angle"] = (x1 - 0.01, y2 - 0.18 * lh, x1 + 0.35 * lw, y2 + 0.02)
      boxes["right cardiophrenic angle"] = (x2 - 0.3 * lw, y2 - 0.2 * lh, x2 + 0.02, y2)
    else:
      boxes["left costophrenic angle"] = (x2 - 0.35 * lw, y2 - 0.18 * lh, x2 + 0.01, y2 + 0.02)
      boxes["left cardiophrenic angle"] = (x1 - 0.02, y2 - 0.2 * lh, x1 + 0.3 * lw, y2)
    boxes[f"{side} hemidiaphragm"] = (x1, y2 - 0.16 * lh, x2, y2 + 0.05)
  boxes["trachea"] = ((tr[0] + tr[2]) / 2 - 0.03, 0.02, (tr[0] + tr[2]) / 2 + 0.03, tr[3])
  boxes["carina"] = g["carina"]
  boxes["spine"] = (sp[0], 0.0, sp[2], 1.0)
  boxes["right clavicle"], boxes["left clavicle"] = g["rclav"], g["lclav"]
  boxes["aortic arch"] = g["arch"]
  boxes["upper mediastinum"] = g["upper mediastinum"]
  boxes["svc"], boxes["cavoatrial junction"] = g["svc"], g["caj"]
  boxes["cardiac silhouette"] = _bbox(heart, cv)
  hb = boxes["cardiac silhouette"]
  boxes["right atrium"] = (hb[0], hb[1] + 0.08 * (hb[3] - hb[1]), hb[0] + 0.35 * (hb[2] - hb[0]), hb[3] - 0.05 * (hb[3] - hb[1]))
  md = g["mediastinum"]
  boxes["mediastinum"] = (min(md[0], hb[0]), md[1], max(md[2], hb[2]), max(md[3], hb[3]))
  boxes["abdomen"] = (0.12, max(g["rl"][3], g["ll"][3]) - 0.02, 0.88, 1.0)
  # noise, blur, tone
  img = ndimage.gaussian_filter(img, 0.7) + tone_rng.normal(0, 0.018, img.shape).astype(np.float32)
  img = np.clip(img, 0, 1) ** tone_rng.uniform(0.85, 1.15)
  out = np.clip(img * 255, 0, 255).astype(np.uint8)
  px = {}
  for name, b in boxes.items():
    x1, y1, x2, y2 = b
    px[name] = (float(np.clip(x1, 0, 1) * w), float(np.clip(y1, 0, 1) * h),
                float(np.clip(x2, 0, 1) * w), float(np.clip(y2, 0, 1) * h))
  return out, px


def _draw_lateral(rng, h: int, w: int) -> np.ndarray:
  """A simple lateral view (anterior to the image left)."""
  cv = _Canvas(h, w)
  body = cv.ellipse(0.5, 0.58, 0.42, 0.62, soft=0.06)
  img = 0.06 + 0.42 * body
  lung = cv.ellipse(0.5 + rng.uniform(-0.03, 0.03), 0.45, 0.3, 0.33, soft=0.05)
  img = img - 0.25 * lung * body
  img = np.maximum(img, 0.55 * cv.ellipse(0.38, 0.62, 0.17, 0.15, soft=0.1))
  for k in range(14):
    img = np.maximum(img, 0.45 * cv.box_mask((0.76, 0.1 + k * 0.06, 0.84, 0.14 + k * 0.06)))
  img = np.where(cv.y > 0.78, np.maximum(img, 0.45 * body), img)
  img = ndimage.gaussian_filter(img, 0.7) + rng.normal(0, 0.018, img.shape).astype(np.float32)
  return np.clip(np.clip(img, 0, 1) * 255, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ writing

def _hex_id(rng) -> str:
  return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2 ** 32, 5))


def _size(rng) -> tuple[int, int]:
  longest = int(rng.integers(200, 321))
  aspect = rng.uniform(0.8, 1.25)   # h / w
  if aspect >= 1:
    return longest, max(64, int(round(longest / aspect)))
  return max(64, int(round(longest * aspect))), longest


def _write_csv_gz(path: str, header: list[str], rows: list[list]) -> None:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator="\n")
  writer.writerow(header)
  writer.writerows(rows)
  with gzip.GzipFile(path, "wb", mtime=0) as f:
    f.write(buf.getvalue().encode("utf-8"))


def _scene_graph(dicom_id, subject, study, view, boxes, h, w, sentences) -> dict:
  objects = []
  sx, sy = 224.0 / w, 224.0 / h
  for name in list(REGIONS) + list(EXTRA_OBJECTS):
    x1, y1, x2, y2 = boxes[name]
    ox1, oy1, ox2, oy2 = (int(round(v)) for v in (x1, y1, x2, y2))
    objects.append({
        "object_id": f"{dicom_id}_{name}", "bbox_name": name, "name": name.capitalize(),
        "synsets": [], "x1": int(round(x1 * sx)), "y1": int(round(y1 * sy)),
        "x2": int(round(x2 * sx)), "y2": int(round(y2 * sy)),
        "width": int(round((x2 - x1) * sx)), "height": int(round((y2 - y1) * sy)),
        "original_x1": ox1, "original_y1": oy1, "original_x2": ox2, "original_y2": oy2,
        "original_width": ox2 - ox1, "original_height": oy2 - oy1})
  attributes = []
  for name in REGIONS:
    phrases = [s["text"] for s in sentences if name in s["regions"]]
    if phrases:
      attributes.append({"bbox_name": name, "name": name.capitalize(), name: True,
                         "phrases": phrases, "object_id": f"{dicom_id}_{name}"})
  return {"image_id": dicom_id, "viewpoint": view, "patient_id": int(subject),
          "study_id": int(study), "objects": objects, "attributes": attributes,
          "relationships": []}


def generate(out_dir: str, num_studies: int, seed: int = 0) -> dict:
  """Write the miniature MIMIC-CXR-JPG + reports + CSVs + Chest ImaGenome dataset.

  Args:
    out_dir: destination: a new or empty folder, or one this generator wrote before (it is
      marked, `owned_dir.MARKER_FILE`); the files of an earlier generation there are removed
      first — only those. Any other non-empty folder raises `owned_dir.NotOwnedError`.
    num_studies: number of studies (each with one frontal image; ~30% also a lateral).
    seed: the generator seed (same seed, same bytes).
  Returns:
    a summary dict: counts of studies / images / frontal / lateral per split and of each
    drawn finding, and the paths written.
  """
  if num_studies < 1:
    raise ValueError(f"num_studies must be >= 1, got {num_studies}")
  t0 = time.time()
  folder = owned_dir.OwnedDir.claim(out_dir, OWNER, hint=OWN_DATA_HINT)
  folder.start(_params(num_studies, seed))
  rec = folder.record
  rng = np.random.default_rng(seed)
  graph_dir = os.path.join(out_dir, "silver_dataset", "scene_graph")
  os.makedirs(graph_dir, exist_ok=True)
  meta, split_rows, labels, truth = [], [], [], []
  counts = {"studies": 0, "images": 0, "frontal": 0, "lateral": 0, "normal": 0,
            "splits": {"train": 0, "validate": 0, "test": 0}, "findings": {t: 0 for t in FINDINGS}}
  subject_base = int(rng.integers(10_000_000, 10_900_000))
  study_ids: list[int] = []
  while len(study_ids) < num_studies:
    sid = int(rng.integers(50_000_000, 60_000_000))
    if sid not in study_ids:
      study_ids.append(sid)
  subject, n_left, split = subject_base, 0, "train"
  for i in range(num_studies):
    if n_left == 0:
      subject += int(rng.integers(1, 50))
      n_left = int(rng.integers(1, 4))
      split = str(rng.choice(["train", "validate", "test"], p=[0.8, 0.1, 0.1]))
    n_left -= 1
    srng = np.random.default_rng([seed, i])
    subj, study = str(subject), str(int(study_ids[i]))
    view = "PA" if srng.random() < 0.6 else "AP"
    findings = _sample_findings(srng)
    report, sentences = _report(srng, findings, view)
    study_dir = os.path.join(out_dir, "files", f"p{subj[:2]}", f"p{subj}")
    os.makedirs(os.path.join(study_dir, f"s{study}"), exist_ok=True)
    with open(rec(os.path.join(study_dir, f"s{study}.txt")), "w") as f:
      f.write(report)
    date = f"21{int(srng.integers(10, 99)):02d}{int(srng.integers(1, 13)):02d}{int(srng.integers(1, 29)):02d}"
    time_ = f"{int(srng.integers(0, 24)):02d}{int(srng.integers(0, 60)):02d}{int(srng.integers(0, 60)):02d}.000"
    images = [(view, _hex_id(srng))]
    if srng.random() < 0.3:
      images.append((str(srng.choice(["LATERAL", "LL"])), _hex_id(srng)))
    for vp, dicom in images:
      h, w = _size(srng)
      if vp in ("PA", "AP"):
        pixels, boxes = _draw_frontal(srng, h, w, findings)
        with open(rec(os.path.join(graph_dir, f"{dicom}_SceneGraph.json")), "w") as f:
          json.dump(_scene_graph(dicom, subj, study, vp, boxes, h, w, sentences), f)
        counts["frontal"] += 1
      else:
        pixels = _draw_lateral(srng, h, w)
        counts["lateral"] += 1
      Image.fromarray(pixels, mode="L").save(
          rec(os.path.join(study_dir, f"s{study}", f"{dicom}.jpg")), quality=92)
      proc = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
      view_name = {"PA": "postero-anterior", "AP": "antero-posterior", "LATERAL": "lateral",
                   "LL": "left lateral"}[vp]
      meta.append([dicom, subj, study, proc, vp, h, w, date, time_, proc, view_name,
                   "Erect" if view == "PA" else "Recumbent"])
      split_rows.append([dicom, study, subj, split])
      counts["images"] += 1
    label = {c: "" for c in CHEXPERT}
    for f in findings:
      obs = CHEXPERT_OF[f["tag"]]
      value = "1.0" if f["existence"] == "present" else "-1.0"
      if label[obs] != "1.0":
        label[obs] = value
    for s in sentences:
      for tag, ex in s["tags"].items():
        if ex == "absent" and label[CHEXPERT_OF[tag]] == "":
          label[CHEXPERT_OF[tag]] = "0.0"
    if not findings:
      label["No Finding"] = "1.0"
      counts["normal"] += 1
    labels.append([subj, study] + [label[c] for c in CHEXPERT])
    for f in findings:
      counts["findings"][f["tag"]] += 1
    counts["studies"] += 1
    counts["splits"][split] += 1
    truth.append({"subject_id": subj, "study_id": study, "split": split,
                  "dicom_ids": {d: vp for vp, d in images}, "findings": findings,
                  "sentences": [{**s, "tags": s["tags"]} for s in sentences]})
  splits_used = {t["split"] for t in truth}
  if "train" in splits_used and splits_used == {"train"} and truth[0]["subject_id"] != truth[-1]["subject_id"]:
    last = truth[-1]["subject_id"]   # tiny demos: make sure there is a validation split
    for row in split_rows:
      if row[2] == last:
        row[3] = "test"
    for t in truth:
      if t["subject_id"] == last:
        counts["splits"]["train"] -= 1
        counts["splits"]["test"] += 1
        t["split"] = "test"
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-metadata.csv.gz")), METADATA_HEADER, meta)
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-split.csv.gz")), SPLIT_HEADER, split_rows)
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-chexpert.csv.gz")), LABEL_HEADER, labels)
  _write_csv_gz(rec(os.path.join(out_dir, "mimic-cxr-2.0.0-negbio.csv.gz")), LABEL_HEADER, labels)
  with open(rec(os.path.join(out_dir, "demo_truth.jsonl")), "w") as f:
    for t in truth:
      f.write(json.dumps(t) + "\n")
  folder.finish()
  counts["seconds"] = round(time.time() - t0, 2)
  counts["out_dir"] = out_dir
  logger.info("generated %d demo studies (%d images) in %s in %.1f s", counts["studies"],
              counts["images"], out_dir, counts["seconds"])
  return counts


def read_truth(out_dir: str) -> list[dict]:
  """The generator's per-study findings and intended sentences (demo_truth.jsonl)."""
  with open(os.path.join(out_dir, "demo_truth.jsonl")) as f:
    return [json.loads(line) for line in f]


def _params(num_studies: int, seed: int) -> dict:
  return {"num_studies": int(num_studies), "seed": int(seed), "version": GENERATOR_VERSION}


def ensure_demo(manual_dir: str, num_studies: int, seed: int = 0) -> bool:
  """Generate the demo into `manual_dir` unless that folder already holds this exact
  generation. Returns whether it generated.

  `manual_dir` must be new, empty, or a folder this generator made (marked): the generator
  never writes into, nor removes, a folder it did not create (`owned_dir.NotOwnedError`,
  raised before anything is written). Other parameters in an owned folder replace the files
  of the earlier generation only.
  """
  folder = owned_dir.OwnedDir.claim(manual_dir, OWNER, hint=OWN_DATA_HINT)
  if folder.params == _params(num_studies, seed):
    return False
  generate(manual_dir, num_studies, seed)
  return True


def prepare_demo(data_dir: str, manual_dir: str, num_studies: int, seed: int = 0,
                 config: str = "demo", rebuild: str = "auto") -> dict:
  """Generate the demo into `manual_dir` (unless already there) and build mimic_cxr/<config>
  into `data_dir` (unless already built from these exact files: `build.prepare`).

  Returns {"generated": bool, "built": bool, "data_dir", "manual_dir"}.
  """
  from asg_jax.data import build  # pylint: disable=import-outside-toplevel
  generated = ensure_demo(manual_dir, num_studies, seed)
  result = build.prepare("mimic_cxr", config, data_dir, manual_dir, rebuild=rebuild)
  return {"generated": generated, "built": result["built"], "data_dir": data_dir,
          "manual_dir": manual_dir}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description="Generate the synthetic MIMIC-CXR-layout demo data.")
  parser.add_argument("--out", required=True, help="output folder (the builder's manual_dir)")
  parser.add_argument("--num_studies", type=int, default=600)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO)
  counts = generate(args.out, args.num_studies, args.seed)
  print(json.dumps(counts, indent=1))


if __name__ == "__main__":
  main()
