"""Phrase grounding figures: patch-grid similarity maps drawn on the ORIGINAL image.

- `grounding_figure` (`grounding.png`, GLoRIA / ASG figure 3): for examples of the split with
  region boxes of their own, the image with its true boxes; the word–patch map of a region's
  sentence (`Pretrained.heatmap`: mean over the words of patch·word); and the region–sentence
  map (patch·S_r, S_r the mean word embedding of the region's sentence set in its report, as
  ARSA and the pointing game use) with the region's true box and the arg-max patch.
- `phrase_figure` (`--images`): one row per image, one word–patch map per phrase.

The patch grid lives on the centre crop of the resized, zero-padded image; `heatmap_to_original`
maps it back through the pipeline's own geometry (`asg_jax.data.geometry.crop_geometry`; the
dashed square is the crop the model saw).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from asg_jax.figures import drawing
from asg_jax.figures.examples import class_of

if TYPE_CHECKING:
  from asg_jax.data.geometry import CropGeometry


# ----------------------------------------------------------------------------- maps
def heatmap_to_original(heat: np.ndarray, geometry: CropGeometry, smooth: bool = False
                        ) -> np.ndarray:
  """A `[gh, gw]` patch-grid map -> `[H, W]` on the original image (NaN outside the crop).

  Each original pixel centre is moved into the crop (`CropGeometry.to_crop`); it takes the
  value of the patch cell it falls in (`smooth=False`, exact cells) or the bilinear
  interpolation between cell centres (`smooth=True`, for display).
  """
  heat = np.asarray(heat, np.float64)
  gh, gw = heat.shape
  s = geometry.image_size
  u, v = geometry.to_crop(np.arange(geometry.width) + 0.5, np.arange(geometry.height) + 0.5)
  cols, rows = u * gw / s, v * gh / s                       # [W], [H] in cell units
  inside = (v[:, None] >= 0) & (v[:, None] < s) & (u[None, :] >= 0) & (u[None, :] < s)
  if smooth:
    cx = np.clip(cols - 0.5, 0, gw - 1)
    cy = np.clip(rows - 0.5, 0, gh - 1)
    x0, y0 = np.floor(cx).astype(int), np.floor(cy).astype(int)
    x1, y1 = np.minimum(x0 + 1, gw - 1), np.minimum(y0 + 1, gh - 1)
    fx, fy = (cx - x0)[None, :], (cy - y0)[:, None]
    out = ((1 - fy) * ((1 - fx) * heat[np.ix_(y0, x0)] + fx * heat[np.ix_(y0, x1)]) +
           fy * ((1 - fx) * heat[np.ix_(y1, x0)] + fx * heat[np.ix_(y1, x1)]))
  else:
    ci = np.clip(np.floor(cols).astype(int), 0, gw - 1)
    ri = np.clip(np.floor(rows).astype(int), 0, gh - 1)
    out = heat[np.ix_(ri, ci)]
  return np.where(inside, out, np.nan)


def cell_center_in_original(index: int, grid: tuple[int, int], geometry: CropGeometry
                            ) -> tuple[float, float]:
  """(x, y) in original pixels of the centre of patch `index` (row-major on `grid`)."""
  gh, gw = grid
  r, c = divmod(int(index), gw)
  x, y = geometry.to_original((c + 0.5) * geometry.image_size / gw,
                              (r + 0.5) * geometry.image_size / gh)
  return float(x), float(y)


def region_sentence_maps(example: Mapping, encoded: Mapping, i: int, grid: tuple[int, int]
                         ) -> np.ndarray:
  """`[R, gh, gw]` patch·S_r of each region of example `i`, S_r the mean embedding of the
  words of the region's sentence set in the caption (zeros for a region without words)."""
  from asg_jax import inference  # pylint: disable=import-outside-toplevel
  from asg_jax.data.pipeline import host  # pylint: disable=import-outside-toplevel
  sentences = [inference.caption_of(s) for s in example["sentences"]]
  lengths = np.array([len(s) for s in sentences], np.int64)
  starts = (np.cumsum(lengths + 1) - (lengths + 1)).astype(np.int32)
  word_emb = encoded["word_emb"][i]                                    # [N, E]
  rsi = np.asarray(example["region_sentence_index"], np.int32)
  if rsi.ndim != 2 or len(starts) == 0:
    return np.zeros((len(example["region_ids"]),) + tuple(grid), np.float32)
  rwi = host.region_word_index(encoded["word_starts"][i][None], starts[None], rsi[None],
                               word_emb.shape[0])[0]                   # [R, K]
  counts = np.zeros((rwi.shape[0], word_emb.shape[0]), np.float32)
  for r in range(rwi.shape[0]):
    for w in rwi[r][rwi[r] >= 0]:
      counts[r, w] += 1
  sentence_emb = counts @ word_emb / np.maximum(counts.sum(-1, keepdims=True), 1.0)
  sim = encoded["patch_emb"][i] @ sentence_emb.T                       # [M, R]
  return sim.T.reshape((-1,) + tuple(grid))


# ----------------------------------------------------------------------------- drawing
def _overlay(ax, image, heat, geometry, title: str = "", cbar: bool = True):
  """The original image with `heat` (`[gh, gw]`) mapped back onto it; the crop dashed."""
  from matplotlib.patches import Rectangle  # pylint: disable=import-outside-toplevel
  drawing.show_image(ax, image)
  on_image = heatmap_to_original(heat, geometry, smooth=True)
  im = ax.imshow(on_image, cmap="jet", alpha=0.45, interpolation="nearest",
                 vmin=float(np.nanmin(heat)), vmax=float(np.nanmax(heat)))
  x1, y1, x2, y2 = geometry.crop_box()
  ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ls="--", lw=1, ec="white"))
  ax.set_xlim(-0.5, geometry.width - 0.5)
  ax.set_ylim(geometry.height - 0.5, -0.5)
  if title:
    ax.set_title(title, fontsize=8)
  if cbar:
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
  return im


# ----------------------------------------------------------------------------- figures
_DEVICES = frozenset({"tube", "line", "tip", "device", "wire", "pacemaker", "drainage",
                      "stent", "hardware"})


def _present_findings(sentence: str) -> set[str]:
  """The findings a (cleaned) sentence states as present, devices left out (the parser)."""
  from asg_jax.data.reports import PRESENT, parse_report  # pylint: disable=import-outside-toplevel
  parsed = parse_report(f"FINDINGS: {sentence}.")
  return {t.finding for ts in parsed.triplets for t in ts
          if t.existence == PRESENT and t.finding not in _DEVICES}


def has_own_boxes(example: Mapping) -> bool:
  """Whether `example` has region boxes of its own (Chest ImaGenome, a `boxes` column): not
  none, not the atlas (a prior drawn on every image alike). An example that does not say
  where its boxes come from counts as having its own."""
  from asg_jax.data.pipeline.stream import PRIOR_REGION_SOURCES  # pylint: disable=import-outside-toplevel
  return (len(example["region_ids"]) > 0
          and example.get("region_source", "") not in PRIOR_REGION_SOURCES)


def _region_sentences(example: Mapping) -> np.ndarray:
  """`region_sentence_index` as `[R, S]` (also for R = 0)."""
  rsi = np.asarray(example["region_sentence_index"])
  return rsi.reshape(len(example["region_ids"]), rsi.shape[-1] if rsi.ndim == 2 else -1)


def pick_grounding(examples: Sequence[Mapping], count: int = 4) -> list[tuple[int, int]]:
  """(example, region) pairs to show, in split order, distinct classes first: examples with
  boxes of their own (`has_own_boxes`) and a positive finding, each with the smallest of its
  regions whose sentence states a present finding (the report parser; devices are not
  findings)."""
  candidates = []
  for i, ex in enumerate(examples):
    cls = class_of(ex["chexpert"])
    if cls == "No Finding" or not has_own_boxes(ex):
      continue
    rsi = _region_sentences(ex)
    boxes = np.asarray(ex["region_boxes"]).reshape(-1, 4)
    good = [r for r in range(len(ex["region_ids"]))
            if any(_present_findings(ex["sentences"][k]) for k in rsi[r]
                   if 0 <= k < len(ex["sentences"]))]
    if good:
      area = lambda r: (boxes[r, 2] - boxes[r, 0]) * (boxes[r, 3] - boxes[r, 1])  # noqa: E731
      candidates.append((i, min(good, key=area), cls))
    if len({c for _, _, c in candidates}) >= count and len(candidates) >= count:
      break
  chosen, seen = [], set()
  for i, r, cls in candidates:
    if cls not in seen and len(chosen) < count:
      chosen.append((i, r))
      seen.add(cls)
  for i, r, _ in candidates:
    if (i, r) not in chosen and len(chosen) < count:
      chosen.append((i, r))
  return chosen


def grounding_figure(model, examples: Sequence[Mapping], encoded: Mapping,
                     pairs: Sequence[tuple[int, int]] | None = None):
  """Rows of (image + true boxes | word–patch map of the region's sentence | region–
  sentence map + the region's box + arg-max patch) for `pairs` of (example, region)."""
  from asg_jax.data.geometry import crop_geometry  # pylint: disable=import-outside-toplevel
  from asg_jax.data.reports import REGIONS  # pylint: disable=import-outside-toplevel
  from asg_jax.objectives import patch_grid  # pylint: disable=import-outside-toplevel
  config = model.config
  grid = patch_grid(config)
  pairs = list(pairs if pairs is not None else pick_grounding(examples))
  if not pairs:
    own = sum(has_own_boxes(ex) for ex in examples)
    if not own:
      sources = sorted({ex.get("region_source") or "none" for ex in examples})
      raise ValueError(f"skipped: none of the {len(examples)} examples has region boxes of "
                       f"its own (region_source {', '.join(sources)}; the atlas is a prior, "
                       f"not the image's anatomy); give the data boxes (a boxes column in "
                       f"pairs.csv, Chest ImaGenome for MIMIC-CXR) or pass --images for "
                       f"phrase maps")
    raise ValueError(f"skipped: none of the {own} examples with boxes of their own has a "
                     f"finding sentence tied to a region box")
  asg = config.loss.name == "asg" and config.loss.use_arsa
  cols = 3
  fig = drawing.figure(4.2 * cols, 3.6 * len(pairs))
  axes = fig.subplots(len(pairs), cols, squeeze=False)
  for row, (i, r) in enumerate(pairs):
    ex = examples[i]
    image = ex["image"]
    h, w = image.shape[:2]
    geo = crop_geometry(h, w, config.data.resize, config.data.image_size)
    rsi = _region_sentences(ex)
    sentence = " ".join(ex["sentences"][s] for s in rsi[r] if 0 <= s < len(ex["sentences"]))
    region = REGIONS[int(ex["region_ids"][r])]
    ax = axes[row, 0]
    drawing.show_image(ax, image)
    for k, box in enumerate(np.asarray(ex["region_boxes"]).reshape(-1, 4)):
      if (rsi[k] >= 0).any():
        drawing.draw_box(ax, box, "yellow" if k == r else "cyan",
             REGIONS[int(ex["region_ids"][k])] if k == r else None, lw=2 if k == r else 0.8)
    ax.set_title(drawing.wrap(f"[{class_of(ex['chexpert'])}] {ex['caption']}", 60, 4), fontsize=7)
    heat = model.heatmap(image, sentence)
    _overlay(axes[row, 1], image, heat, geo,
             drawing.wrap(f"word–patch: \"{sentence}\"", 55, 3))
    drawing.draw_box(axes[row, 1], ex["region_boxes"][r], "white")
    maps = region_sentence_maps(ex, encoded, i, grid)
    best = int(np.argmax(maps[r]))
    x, y = cell_center_in_original(best, grid, geo)
    x1, y1, x2, y2 = (float(v) for v in ex["region_boxes"][r])
    hit = x1 <= x <= x2 and y1 <= y <= y2
    title = (f"region–sentence ({'ARSA' if asg else 'no ARSA in this model'}): {region}\n"
             f"arg-max patch {'inside' if hit else 'outside'} the true box")
    _overlay(axes[row, 2], image, maps[r], geo, title)
    drawing.draw_box(axes[row, 2], ex["region_boxes"][r], "white", region)
    axes[row, 2].plot([x], [y], marker="x", ms=9, mew=2.5, color=drawing.CORRECT if hit else drawing.WRONG)
  fig.suptitle("Phrase grounding: similarity maps on the original images (dashed: the "
               "model's crop; white: the true region box)", fontsize=10)
  return fig


def phrase_figure(model, images: Sequence[np.ndarray], phrases: Sequence[str],
                  names: Sequence[str] | None = None):
  """One row per image: the image, then the word–patch map of each phrase."""
  from asg_jax.data.geometry import crop_geometry  # pylint: disable=import-outside-toplevel
  config = model.config
  phrases = list(phrases)
  cols = 1 + len(phrases)
  fig = drawing.figure(3.6 * cols, 3.4 * len(images))
  axes = fig.subplots(len(images), cols, squeeze=False)
  for row, image in enumerate(images):
    image = np.asarray(image)
    h, w = image.shape[:2]
    geo = crop_geometry(h, w, config.data.resize, config.data.image_size)
    drawing.show_image(axes[row, 0], image)
    axes[row, 0].set_title(names[row] if names else f"image {row}", fontsize=8)
    for col, phrase in enumerate(phrases, start=1):
      _overlay(axes[row, col], image, model.heatmap(image, phrase), geo,
               drawing.wrap(f"\"{phrase}\"", 40, 2))
  fig.suptitle("Word–patch similarity maps on the original images (dashed: the model's crop)",
               fontsize=10)
  return fig
