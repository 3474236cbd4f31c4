"""Figures of a trained workdir: grounding heat maps, retrieval panels, t-SNE, training curves.

    python -m asg_jax.visualize --workdir workdir/demo            # -> workdir/demo/figures/*.png
    python -m asg_jax.visualize --workdir W --images a.png b.jpg --phrases "pleural effusion"

    from asg_jax import visualize
    paths = visualize.write_figures("workdir/demo")               # {"grounding": ".../grounding.png", ...}
    fig = visualize.curves_figure(visualize.read_scalars("workdir/demo"))

The four figures (docs/figures.md shows them on the demo):

- `grounding.png` — where a phrase is grounded (GLoRIA / ASG figure 3): for examples of the
  evaluation split, the stored image with its true region boxes; the word–patch similarity map
  of the region's sentence (`Pretrained.heatmap`: mean over the words of patch·word); and, for
  models with region–sentence alignment (ASG), the region–sentence map (patch·S_r, S_r the mean
  word embedding of the region's sentence set in its report, as ARSA and the pointing game
  use) with the region's true box and the arg-max patch. With `--images`, one row per image
  and one map per phrase. Every map is drawn on the ORIGINAL image: the patch grid lives on
  the centre crop of the resized, zero-padded image (asg_jax/data/geometry.py), and
  `heatmap_to_original` maps it back through exactly that geometry (the dashed square is the
  crop the model saw). Only examples with boxes of their own are shown (not the atlas);
  without any, the figure is skipped with a one-line reason.
- `retrieval.png` — RECLF figure 5: for query reports, the top-5 images of the split, and for
  query images the top-5 reports; green = the query's own pair, orange = same class (the same
  set of positive CheXpert findings), red = another class.
- `tsne.png` — t-SNE (scikit-learn) of the global image and report embeddings of the split,
  coloured by class (RECLF figure 4).
- `curves.png` — the workdir's TensorBoard scalars: train loss and its terms, learning rate,
  validation loss terms, validation metrics with their chance levels (summary.json).

Matplotlib is used through its object API on the Agg canvas (no pyplot, no GUI backend).
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import math
import os
import textwrap
from typing import Mapping, Sequence

import numpy as np

FIGURES_DIR = "figures"
FIGURE_NAMES = ("grounding", "retrieval", "tsne", "curves")
CORRECT, SAME_CLASS, WRONG = "#2ca02c", "#ff7f0e", "#d62728"
DEFAULT_PHRASES = ("pleural effusion", "cardiomegaly", "pneumothorax")
_NOT_A_CLASS = ("No Finding", "Support Devices")


# ----------------------------------------------------------------------------- geometry
@dataclasses.dataclass(frozen=True)
class CropGeometry:
  """Where the model's `image_size` crop lies in an original `height x width` image.

  Evaluation geometry of asg_jax/data/geometry.py: resize (longest side `resize`, short side
  rounded), centred zero padding to `resize x resize`, centre crop `image_size`. A point `x`
  of the original (continuous pixel coordinates, pixel centres at `i + 0.5`) lies at
  `x * scale_x + left - offset_x` in the crop (likewise for y).
  """
  height: int
  width: int
  resize: int
  image_size: int
  scale_x: float
  scale_y: float
  left: int
  top: int
  offset_x: int
  offset_y: int

  def to_crop(self, x, y):
    """Original coordinates -> crop coordinates."""
    return (np.asarray(x, np.float64) * self.scale_x + self.left - self.offset_x,
            np.asarray(y, np.float64) * self.scale_y + self.top - self.offset_y)

  def to_original(self, u, v):
    """Crop coordinates -> original coordinates."""
    return ((np.asarray(u, np.float64) - self.left + self.offset_x) / self.scale_x,
            (np.asarray(v, np.float64) - self.top + self.offset_y) / self.scale_y)

  def crop_box(self) -> tuple[float, float, float, float]:
    """The crop square `(x1, y1, x2, y2)` in original coordinates (may exceed the image)."""
    x1, y1 = self.to_original(0.0, 0.0)
    x2, y2 = self.to_original(float(self.image_size), float(self.image_size))
    return float(x1), float(y1), float(x2), float(y2)


def crop_geometry(height: int, width: int, resize: int, image_size: int) -> CropGeometry:
  """The evaluation crop of an original `height x width` image (see `CropGeometry`);
  the same arithmetic as `geometry.resized_shape` / `geometry.crop(train=False)`."""
  if image_size > resize:
    raise ValueError(f"image_size={image_size} is larger than resize={resize}")
  scale = resize / max(height, width)
  new_h = max(int(math.floor(height * scale + 0.5)), 1)
  new_w = max(int(math.floor(width * scale + 0.5)), 1)
  offset = (resize - image_size) // 2
  return CropGeometry(height=int(height), width=int(width), resize=int(resize),
                      image_size=int(image_size), scale_x=new_w / width, scale_y=new_h / height,
                      left=(resize - new_w) // 2, top=(resize - new_h) // 2,
                      offset_x=offset, offset_y=offset)


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


# ----------------------------------------------------------------------------- data
def class_of(chexpert: np.ndarray) -> str:
  """A one-word class of a CheXpert-14 label row (vocab order, 1 = positive): its single
  positive finding, "No Finding" (none), or "Multiple"; Support Devices is not a class."""
  from asg_jax.data.reports import CHEXPERT  # pylint: disable=import-outside-toplevel
  found = _findings(chexpert, CHEXPERT)
  if not found:
    return "No Finding"
  return found[0] if len(found) == 1 else "Multiple"


def _findings(chexpert, names) -> tuple[str, ...]:
  row = np.asarray(chexpert, np.float64)
  return tuple(n for n, v in zip(names, row) if v == 1 and n not in _NOT_A_CLASS)


def same_findings(a: np.ndarray, b: np.ndarray) -> bool:
  """Whether two CheXpert rows have the same set of positive findings (retrieval colour)."""
  from asg_jax.data.reports import CHEXPERT  # pylint: disable=import-outside-toplevel
  return _findings(a, CHEXPERT) == _findings(b, CHEXPERT)


def load_examples(workdir: str, config=None, split: str | None = None,
                  max_examples: int = 200) -> list[dict]:
  """The first `max_examples` stored examples (interfaces.md §1) of `split` (default
  `config.data.eval_split`) of the workdir's dataset, in split order: `image` uint8
  `[H, W, 1]`, `sentences` list[str], `caption`, `region_boxes` `[R, 4]` (stored pixels),
  `region_ids` `[R]`, `region_sentence_index` `[R, S]`, `chexpert` `[14]`, `tags` `[40]`,
  `region_source` ("imagenome" / "annotation": the image's own boxes; "atlas" / "none").

  Raises:
    FileNotFoundError / ValueError: naming the dataset folder or split (not built yet).
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from asg_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from asg_jax.data import source as source_lib  # pylint: disable=import-outside-toplevel
  config = config or workdir_lib.read_config(workdir)
  dc = config.data
  data_dir = dc.data_dir or os.path.join(workdir, "data")
  src = source_lib.open_split(dc.name, dc.builder_config, data_dir, split or dc.eval_split)
  first = src.shards[0].start if src.shards else 0
  src = src.select(first, first + max_examples)
  out = []
  for shard in src.shards:
    ds = tf.data.TFRecordDataset(shard.file).skip(shard.skip).take(shard.take).map(src.decode)
    for ex in ds.as_numpy_iterator():
      sentences = [s.decode("utf-8") if isinstance(s, bytes) else str(s)
                   for s in ex["sentences"]]
      out.append({"image": np.asarray(ex["image"], np.uint8), "sentences": sentences,
                  "caption": " ".join(sentences),
                  "region_boxes": np.asarray(ex["region_boxes"], np.float32).reshape(-1, 4),
                  "region_ids": np.asarray(ex["region_ids"], np.int32).reshape(-1),
                  "region_sentence_index": np.asarray(ex["region_sentence_index"], np.int32),
                  "chexpert": np.asarray(ex["chexpert"], np.float32),
                  "tags": np.asarray(ex["tags"], np.int32),
                  "region_source": _text(ex.get("region_source", b""))})
  return out


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _chunks(n: int, size: int):
  for start in range(0, n, size):
    yield start, min(start + size, n)


def encode_examples(model, examples: Sequence[Mapping], batch_size: int = 32) -> dict:
  """Model outputs of `examples` (stored images + captions) through `model` (a `Pretrained`):
  `image_emb [N,E]`, `patch_emb [N,M,E]`, `text_emb [N,E]`, `word_emb [N,L-1,E]`,
  `word_mask [N,L-1]`, `word_starts [N,L-1]` (character offset of each word slot in the
  cleaned caption). Batches are padded to `batch_size` (one compilation per encoder)."""
  from asg_jax import inference  # pylint: disable=import-outside-toplevel
  n = len(examples)
  if n == 0:
    raise ValueError("no examples to encode")
  batch_size = min(batch_size, n)
  parts: dict[str, list] = {}
  for lo, hi in _chunks(n, batch_size):
    idx = list(range(lo, hi)) + [hi - 1] * (batch_size - (hi - lo))
    images = [examples[i]["image"] for i in idx]
    captions = [inference.caption_of(examples[i]["caption"]) for i in idx]
    img = model.image_outputs(images)
    txt = model.text_outputs(captions)
    tokens = model.tokenizer.encode_batch(captions, return_word_starts=True)
    for key, value in (("image_emb", img["image_emb"]), ("patch_emb", img["patch_emb"]),
                       ("text_emb", txt["text_emb"]), ("word_emb", txt["word_emb"]),
                       ("word_mask", txt["word_mask"]), ("word_starts", tokens["word_starts"])):
      parts.setdefault(key, []).append(np.asarray(value)[: hi - lo])
  return {k: np.concatenate(v) for k, v in parts.items()}


def region_sentence_maps(example: Mapping, encoded: Mapping, i: int, grid: tuple[int, int]
                         ) -> np.ndarray:
  """`[R, gh, gw]` patch·S_r of each region of example `i`, S_r the mean embedding of the
  words of the region's sentence set in the caption (zeros for a region without words)."""
  from asg_jax import inference  # pylint: disable=import-outside-toplevel
  from asg_jax.data import host  # pylint: disable=import-outside-toplevel
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


# ----------------------------------------------------------------------------- drawing helpers
def _figure(width: float, height: float):
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save(fig, path: str) -> str:
  """Saves `fig` as PNG at `path` (folders created) and returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png", dpi=fig.dpi, bbox_inches="tight")
  return path


def _grey(image: np.ndarray) -> np.ndarray:
  image = np.asarray(image)
  if image.ndim == 3:
    image = image.mean(-1) if image.shape[-1] == 3 else image[..., 0]
  return image


def _show_image(ax, image):
  ax.imshow(_grey(image), cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
  ax.set_xticks([])
  ax.set_yticks([])


def _overlay(ax, image, heat, geometry, title: str = "", cbar: bool = True):
  """The original image with `heat` (`[gh, gw]`) mapped back onto it; the crop dashed."""
  from matplotlib.patches import Rectangle  # pylint: disable=import-outside-toplevel
  _show_image(ax, image)
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


def _box(ax, box, color, label: str | None = None, lw: float = 1.5):
  from matplotlib.patches import Rectangle  # pylint: disable=import-outside-toplevel
  x1, y1, x2, y2 = (float(v) for v in box)
  ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=lw, ec=color))
  if label:
    ax.text(x1 + 1, y1 + 1, label, color=color, fontsize=6, va="top",
            bbox={"facecolor": "black", "alpha": 0.4, "pad": 0.5, "lw": 0})


def _wrap(text: str, width: int, lines: int) -> str:
  wrapped = textwrap.wrap(text, width) or [""]
  if len(wrapped) > lines:
    wrapped = wrapped[:lines]
    wrapped[-1] = wrapped[-1][: max(width - 1, 1)] + "…"
  return "\n".join(wrapped)


# ----------------------------------------------------------------------------- grounding
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
  from asg_jax.data.stream import PRIOR_REGION_SOURCES  # pylint: disable=import-outside-toplevel
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
  fig = _figure(4.2 * cols, 3.6 * len(pairs))
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
    _show_image(ax, image)
    for k, box in enumerate(np.asarray(ex["region_boxes"]).reshape(-1, 4)):
      if (rsi[k] >= 0).any():
        _box(ax, box, "yellow" if k == r else "cyan",
             REGIONS[int(ex["region_ids"][k])] if k == r else None, lw=2 if k == r else 0.8)
    ax.set_title(_wrap(f"[{class_of(ex['chexpert'])}] {ex['caption']}", 60, 4), fontsize=7)
    heat = model.heatmap(image, sentence)
    _overlay(axes[row, 1], image, heat, geo,
             _wrap(f"word–patch: \"{sentence}\"", 55, 3))
    _box(axes[row, 1], ex["region_boxes"][r], "white")
    maps = region_sentence_maps(ex, encoded, i, grid)
    best = int(np.argmax(maps[r]))
    x, y = cell_center_in_original(best, grid, geo)
    x1, y1, x2, y2 = (float(v) for v in ex["region_boxes"][r])
    hit = x1 <= x <= x2 and y1 <= y <= y2
    title = (f"region–sentence ({'ARSA' if asg else 'no ARSA in this model'}): {region}\n"
             f"arg-max patch {'inside' if hit else 'outside'} the true box")
    _overlay(axes[row, 2], image, maps[r], geo, title)
    _box(axes[row, 2], ex["region_boxes"][r], "white", region)
    axes[row, 2].plot([x], [y], marker="x", ms=9, mew=2.5, color=CORRECT if hit else WRONG)
  fig.suptitle("Phrase grounding: similarity maps on the original images (dashed: the "
               "model's crop; white: the true region box)", fontsize=10)
  return fig


def phrase_figure(model, images: Sequence[np.ndarray], phrases: Sequence[str],
                  names: Sequence[str] | None = None):
  """One row per image: the image, then the word–patch map of each phrase."""
  config = model.config
  phrases = list(phrases)
  cols = 1 + len(phrases)
  fig = _figure(3.6 * cols, 3.4 * len(images))
  axes = fig.subplots(len(images), cols, squeeze=False)
  for row, image in enumerate(images):
    image = np.asarray(image)
    h, w = image.shape[:2]
    geo = crop_geometry(h, w, config.data.resize, config.data.image_size)
    _show_image(axes[row, 0], image)
    axes[row, 0].set_title(names[row] if names else f"image {row}", fontsize=8)
    for col, phrase in enumerate(phrases, start=1):
      _overlay(axes[row, col], image, model.heatmap(image, phrase), geo,
               _wrap(f"\"{phrase}\"", 40, 2))
  fig.suptitle("Word–patch similarity maps on the original images (dashed: the model's crop)",
               fontsize=10)
  return fig


# ----------------------------------------------------------------------------- retrieval
def _outcome(examples, query: int, candidate: int) -> str:
  if candidate == query:
    return CORRECT
  if same_findings(examples[query]["chexpert"], examples[candidate]["chexpert"]):
    return SAME_CLASS
  return WRONG


def pick_queries(examples: Sequence[Mapping], count: int) -> list[int]:
  """`count` query examples of distinct classes (single findings first), in split order."""
  order = sorted(range(len(examples)), key=lambda i: (
      class_of(examples[i]["chexpert"]) in ("Multiple", "No Finding"), i))
  chosen, seen = [], set()
  for i in order:
    cls = class_of(examples[i]["chexpert"])
    if cls not in seen:
      chosen.append(i)
      seen.add(cls)
    if len(chosen) == count:
      return chosen
  return (chosen + [i for i in order if i not in chosen])[:count]


def retrieval_figure(examples: Sequence[Mapping], encoded: Mapping, k: int = 5,
                     num_queries: int = 3):
  """Report -> top-k images rows, then image -> top-k reports rows; borders / boxes coloured
  green (the query's pair), orange (same findings), red (other)."""
  from matplotlib.patches import Patch  # pylint: disable=import-outside-toplevel
  n = len(examples)
  k = min(k, n)
  sim = encoded["text_emb"] @ encoded["image_emb"].T                  # [N texts, N images]
  queries = pick_queries(examples, min(num_queries, n))
  rows = 2 * len(queries)
  fig = _figure(2.5 * (k + 1), 2.7 * rows)
  axes = fig.subplots(rows, k + 1, squeeze=False)

  def frame(ax, color):
    for spine in ax.spines.values():
      spine.set_edgecolor(color)
      spine.set_linewidth(4)

  for row, q in enumerate(queries):                                    # report -> images
    ax = axes[row, 0]
    ax.axis("off")
    ax.text(0, 1, _wrap(f"QUERY REPORT [{class_of(examples[q]['chexpert'])}]: "
                        f"{examples[q]['caption']}", 30, 11),
            fontsize=7, va="top", ha="left", transform=ax.transAxes)
    for rank, j in enumerate(np.argsort(-sim[q])[:k], start=1):
      ax = axes[row, rank]
      _show_image(ax, examples[j]["image"])
      frame(ax, _outcome(examples, q, int(j)))
      ax.set_title(f"#{rank}  cos {sim[q, j]:.2f}\n{class_of(examples[j]['chexpert'])}",
                   fontsize=7)
  for row, q in enumerate(queries, start=len(queries)):               # image -> reports
    q = int(q)
    ax = axes[row, 0]
    _show_image(ax, examples[q]["image"])
    frame(ax, "black")
    ax.set_title(f"QUERY IMAGE [{class_of(examples[q]['chexpert'])}]", fontsize=7)
    for rank, j in enumerate(np.argsort(-sim[:, q])[:k], start=1):
      ax = axes[row, rank]
      ax.set_xticks([])
      ax.set_yticks([])
      color = _outcome(examples, q, int(j))
      frame(ax, color)
      ax.set_facecolor(color + "22")
      ax.text(0.04, 0.96, _wrap(examples[j]["caption"], 28, 11), fontsize=6, va="top",
              ha="left", transform=ax.transAxes)
      ax.set_title(f"#{rank}  cos {sim[j, q]:.2f}\n{class_of(examples[j]['chexpert'])}",
                   fontsize=7)
  fig.legend(handles=[Patch(color=CORRECT, label="the query's own pair"),
                      Patch(color=SAME_CLASS, label="same findings"),
                      Patch(color=WRONG, label="other findings")],
             loc="upper right", ncol=3, fontsize=8)
  fig.suptitle(f"Retrieval among {n} examples: report → top-{k} images (top rows), "
               f"image → top-{k} reports (bottom rows)", fontsize=10, x=0.35)
  return fig


# ----------------------------------------------------------------------------- t-SNE
def tsne_embedding(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
  """`[N, 2]` t-SNE (scikit-learn, cosine metric, PCA init) of `[N, E]` embeddings."""
  from sklearn.manifold import TSNE  # pylint: disable=import-outside-toplevel
  x = np.asarray(embeddings, np.float64)
  n = len(x)
  if n < 3:
    raise ValueError(f"t-SNE needs at least 3 points, got {n}")
  perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
  return TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
              random_state=seed).fit_transform(x)


def tsne_figure(examples: Sequence[Mapping], encoded: Mapping, seed: int = 0):
  """t-SNE of the global image (and report) embeddings, coloured by `class_of`."""
  from matplotlib import colormaps  # pylint: disable=import-outside-toplevel
  classes = [class_of(ex["chexpert"]) for ex in examples]
  names = sorted(set(classes), key=lambda c: (c == "Multiple", -classes.count(c), c))
  tab10 = colormaps["tab10"].colors
  palette = tab10[:7] + tab10[8:] + colormaps["Dark2"].colors     # tab10's grey is "Multiple"
  colors = {c: ("#bbbbbb" if c == "Multiple" else palette[i % len(palette)])
            for i, c in enumerate(names)}
  panels = [("image embeddings", encoded["image_emb"]), ("report embeddings",
                                                         encoded["text_emb"])]
  fig = _figure(6.5 * len(panels), 6)
  axes = fig.subplots(1, len(panels), squeeze=False)[0]
  for ax, (title, emb) in zip(axes, panels):
    xy = tsne_embedding(emb, seed)
    for c in names:
      idx = [i for i, k in enumerate(classes) if k == c]
      ax.scatter(xy[idx, 0], xy[idx, 1], s=16, color=colors[c], label=f"{c} ({len(idx)})",
                 alpha=0.85, edgecolors="none", zorder=1 if c == "Multiple" else 2)
    ax.set_title(f"t-SNE of the global {title} ({len(examples)} examples)", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.5)
  return fig


# ----------------------------------------------------------------------------- curves
def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Every scalar of the workdir's TensorBoard event files: {tag: (steps, values)}, sorted
  by step, the last value of a step kept (a resumed run writes some steps again)."""
  from tensorboard.backend.event_processing import event_file_loader  # pylint: disable=import-outside-toplevel
  from tensorboard.util import tensor_util  # pylint: disable=import-outside-toplevel
  series: dict[str, dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*"))):
    for event in event_file_loader.EventFileLoader(path).Load():
      if not event.HasField("summary"):
        continue
      for value in event.summary.value:
        if value.HasField("tensor"):
          array = tensor_util.make_ndarray(value.tensor)
          if array.size != 1 or array.dtype.kind not in "fiu":
            continue
          scalar = float(array.reshape(()))
        elif value.HasField("simple_value"):
          scalar = float(value.simple_value)
        else:
          continue
        series.setdefault(value.tag, {})[int(event.step)] = scalar
  return {tag: (np.array(sorted(d)), np.array([d[s] for s in sorted(d)]))
          for tag, d in series.items()}


def curves_figure(scalars: Mapping[str, tuple[np.ndarray, np.ndarray]],
                  chance: Mapping[str, float] | None = None):
  """2x2: train loss + terms | learning rate | validation loss terms | validation metrics
  (chance levels dashed)."""
  if not scalars:
    raise ValueError("no scalars to plot (no TensorBoard events in the workdir?)")
  chance = dict(chance or {})
  skip = {"train/lr", "train/grad_norm", "train/steps_per_sec"}
  train_terms = sorted(t for t in scalars if t.startswith("train/") and t not in skip
                       and "top" not in t)
  val_loss = sorted(t for t in scalars if t.startswith("val/") and "loss" in t)
  val_loss += sorted(t for t in scalars if t.startswith("val/val_") and t not in val_loss)
  val_metrics = sorted(t for t in scalars if t.startswith("val/") and t not in val_loss
                       and np.all((scalars[t][1] >= 0) & (scalars[t][1] <= 1)))  # no counts
  # retrieval: the mean of both directions when recorded (i2t_/t2i_ are in TensorBoard)
  val_metrics = [t for t in val_metrics if not (
      t.split("/", 1)[1][:4] in ("i2t_", "t2i_") and f"val/{t.split('/', 1)[1][4:]}" in scalars)]
  fig = _figure(13, 8.5)
  axes = fig.subplots(2, 2, sharex=True)

  def plot(ax, tags, title, log=False):
    for tag in tags:
      steps, values = scalars[tag]
      style = {"marker": "o", "ms": 3} if len(steps) < 20 else {}
      lw = 2.2 if tag.endswith("/loss") or tag.endswith("val_loss") else 1.2
      line, = ax.plot(steps, values, label=tag.split("/", 1)[1], lw=lw, **style)
      level = chance.get(tag.split("/", 1)[1])
      if level is not None:
        ax.axhline(level, ls="--", lw=0.8, color=line.get_color())
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if log and tags and all(np.all(scalars[t][1] > 0) for t in tags):
      ax.set_yscale("log")
    if tags:
      ax.legend(fontsize=7, ncol=2)
    else:
      ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)

  plot(axes[0, 0], train_terms, "train loss and its terms", log=True)
  plot(axes[0, 1], [t for t in ("train/lr",) if t in scalars], "learning rate")
  plot(axes[1, 0], val_loss, "validation loss terms", log=True)
  plot(axes[1, 1], val_metrics, "validation metrics (dashed: chance)")
  fig.suptitle("Training curves (TensorBoard scalars of the workdir)", fontsize=11)
  return fig


# ----------------------------------------------------------------------------- all of them
def write_figures(workdir: str, out: str | None = None, *, images: Sequence[str] = (),
                  phrases: Sequence[str] = (), split: str | None = None,
                  max_examples: int = 200, model=None, examples: Sequence[Mapping] | None = None,
                  log=print) -> dict[str, str]:
  """Writes the figures of `workdir` into `out` (default `<workdir>/figures`).

  Args:
    images: image files (PNG / JPEG / DICOM) for the grounding figure, with `phrases`
      (default `DEFAULT_PHRASES`); without them it shows examples of the split.
    split: the split of the workdir's dataset (default `config.data.eval_split`).
    max_examples: how many of its first examples retrieval and t-SNE use.
    model: a `Pretrained` (default: loaded from the workdir's best checkpoint).
    examples: stored examples (default `load_examples(workdir, ...)`).
    log: where the one-line notes go (figures skipped and why).
  Returns:
    {figure name: PNG path} of the figures written.
  """
  out = out or os.path.join(workdir, FIGURES_DIR)
  written: dict[str, str] = {}
  from asg_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  summary = workdir_lib.read_summary(workdir) or {}
  scalars = read_scalars(workdir)
  if scalars:
    written["curves"] = save(curves_figure(scalars, summary.get("chance")),
                             os.path.join(out, "curves.png"))
  else:
    log(f"curves: no TensorBoard events in {workdir}")
  if model is None:
    from asg_jax import inference  # pylint: disable=import-outside-toplevel
    model = inference.Pretrained.from_workdir(workdir)
  if examples is None:
    try:
      examples = load_examples(workdir, model.config, split, max_examples)
    except (FileNotFoundError, ValueError) as e:
      log(f"retrieval, t-SNE{'' if images else ', grounding'}: no stored examples ({e})")
      examples = []
  examples = list(examples)[:max_examples]
  encoded = encode_examples(model, examples) if examples else None
  if images:
    loaded = [read_image(p) for p in images]
    written["grounding"] = save(phrase_figure(model, loaded, phrases or DEFAULT_PHRASES,
                                              [os.path.basename(p) for p in images]),
                                os.path.join(out, "grounding.png"))
  elif examples:
    try:
      written["grounding"] = save(grounding_figure(model, examples, encoded),
                                  os.path.join(out, "grounding.png"))
    except ValueError as e:
      log(f"grounding: {e}")
  if examples and len(examples) >= 2:
    written["retrieval"] = save(retrieval_figure(examples, encoded),
                                os.path.join(out, "retrieval.png"))
  if examples and len(examples) >= 3:
    written["tsne"] = save(tsne_figure(examples, encoded), os.path.join(out, "tsne.png"))
  return written


def read_image(path: str) -> np.ndarray:
  """uint8 `[H, W]` grey pixels of a JPEG / PNG (8 or 16 bit) / DICOM file (the builders'
  reader, `asg_jax.data.builders.common.read_image`).

  Raises:
    FileNotFoundError / ValueError: naming the file.
  """
  from asg_jax.data.builders import common  # pylint: disable=import-outside-toplevel
  if not os.path.isfile(path):
    raise FileNotFoundError(f"--images: {path} not found")
  try:
    pixels, _ = common.read_image(path)
  except common.Skip as e:
    raise ValueError(f"--images: cannot read {path}: {e}") from e
  return pixels


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
  parser = argparse.ArgumentParser(
      prog="python -m asg_jax.visualize",
      description="Write the figures of a trained workdir (grounding heat maps, retrieval "
                  "panels, t-SNE, training curves) as PNG files.")
  parser.add_argument("--workdir", required=True, help="a training workdir")
  parser.add_argument("--images", nargs="*", default=(), help="image files for the grounding "
                      "figure (default: examples of the split)")
  parser.add_argument("--phrases", nargs="*", default=(),
                      help=f"phrases to ground on --images (default {list(DEFAULT_PHRASES)})")
  parser.add_argument("--out", default=None, help="output folder (default <workdir>/figures)")
  parser.add_argument("--split", default=None, help="split of the workdir's dataset "
                      "(default config.data.eval_split)")
  parser.add_argument("--max_examples", type=int, default=200)
  parser.add_argument("--verbosity", type=int, default=None,
                      help="show library log lines (absl levels: 0 = INFO)")
  args = parser.parse_args(argv)
  from asg_jax import console  # pylint: disable=import-outside-toplevel
  console.configure(verbose=args.verbosity is not None)
  with console.quiet_native_stderr(args.verbosity is None):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  written = write_figures(args.workdir, args.out, images=args.images, phrases=args.phrases,
                          split=args.split, max_examples=args.max_examples)
  for name in FIGURE_NAMES:
    if name in written:
      print(f"{name:10s} {written[name]}")
  return written


if __name__ == "__main__":
  main()
