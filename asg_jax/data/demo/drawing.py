"""Pictures of the embedded demo: chest-like frontal and lateral radiographs.

`_draw_frontal(rng, h, w, findings)` draws the anatomy (the atlas, scaled, shifted and
jittered) and each finding INSIDE the region its report sentence names, and returns the
image with the true boxes of the 29 regions (+2 extra objects); `_draw_lateral` draws a
simple lateral view. `_Canvas` is the normalised-coordinate drawing surface. Used by
`asg_jax.data.demo.synthetic` and the downstream demo (`asg_jax.data.demo.downstream`).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from asg_jax.data.demo.report_text import ZONES


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
  from asg_jax.data.builders.chest_builder import load_atlas  # pylint: disable=import-outside-toplevel
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


def _draw_frontal(rng, h: int, w: int, findings: list[dict], masks: list | None = None):
  """-> (uint8 [h, w] image, {region: (x1, y1, x2, y2) original pixels}).

  `masks`: a list that receives one uint8 [h, w] {0, 1} mask per pneumothorax drawn (the
  gas between chest wall and collapsed lung), in `findings` order (the SIIM stand-in)."""
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
    if masks is not None:
      masks.append((m > 0).astype(np.uint8))
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
