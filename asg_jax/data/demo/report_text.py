"""Report text of the embedded demo: sampled findings and the MIMIC-style reports about them.

A finding is a dict(tag, existence in {present, uncertain}, side, zone, variant, size ...)
drawn by `_sample_findings`; `_report` writes the report (FINDINGS / IMPRESSION sections,
negations, fillers) and the intended sentence list with the tags and regions each names.
Used by `asg_jax.data.demo.synthetic` and the downstream demo; the pictures of the same
findings are drawn by `asg_jax.data.demo.drawing`.
"""
from __future__ import annotations

FINDINGS = ("pleural effusion", "opacity", "consolidation", "pneumothorax", "cardiomegaly",
            "nodule", "tube", "line", "edema", "atelectasis")
LUNG_FINDINGS = frozenset({"pleural effusion", "opacity", "consolidation", "pneumothorax",
                           "nodule", "edema", "atelectasis"})
CHEXPERT_OF = {"pleural effusion": "Pleural Effusion", "opacity": "Lung Opacity",
               "consolidation": "Consolidation", "pneumothorax": "Pneumothorax",
               "cardiomegaly": "Cardiomegaly", "nodule": "Lung Lesion", "tube": "Support Devices",
               "line": "Support Devices", "edema": "Edema", "atelectasis": "Atelectasis"}
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
  return [sample_finding(rng, FINDINGS[t]) for t in tags]


def sample_finding(rng, tag: str, existence: str | None = None) -> dict:
  """One finding of `tag` with its sampled side / zone / size ...; `existence` None =
  sampled (15 % uncertain, never for devices). Also used by the downstream demo."""
  if existence is None:
    existence = ("uncertain" if (rng.random() < 0.15 and tag not in ("tube", "line"))
                 else "present")
  f = {"tag": tag, "existence": existence, "side": None, "zone": None, "variant": ""}
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
  return f


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
