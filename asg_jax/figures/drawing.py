"""Matplotlib helpers shared by the figures: object API on the Agg canvas (no pyplot, no GUI
backend), and the colours of an outcome (the query's own pair, same findings, other)."""
from __future__ import annotations

import os
import textwrap

import numpy as np

CORRECT, SAME_CLASS, WRONG = "#2ca02c", "#ff7f0e", "#d62728"


def figure(width: float, height: float):
  """A new `width x height` inch figure (100 dpi, constrained layout)."""
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save(fig, path: str) -> str:
  """Saves `fig` as PNG at `path` (folders created) and returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format="png", dpi=fig.dpi, bbox_inches="tight")
  return path


def grey(image: np.ndarray) -> np.ndarray:
  """`[H, W]` grey pixels of a `[H, W]`, `[H, W, 1]` or `[H, W, 3]` image."""
  image = np.asarray(image)
  if image.ndim == 3:
    image = image.mean(-1) if image.shape[-1] == 3 else image[..., 0]
  return image


def show_image(ax, image):
  """`image` in grey levels 0..255, without ticks."""
  ax.imshow(grey(image), cmap="gray", vmin=0, vmax=255, interpolation="bilinear")
  ax.set_xticks([])
  ax.set_yticks([])


def draw_box(ax, box, color, label: str | None = None, lw: float = 1.5):
  """The box `(x1, y1, x2, y2)` outlined, with `label` at its top left corner."""
  from matplotlib.patches import Rectangle  # pylint: disable=import-outside-toplevel
  x1, y1, x2, y2 = (float(v) for v in box)
  ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, lw=lw, ec=color))
  if label:
    ax.text(x1 + 1, y1 + 1, label, color=color, fontsize=6, va="top",
            bbox={"facecolor": "black", "alpha": 0.4, "pad": 0.5, "lw": 0})


def wrap(text: str, width: int, lines: int) -> str:
  """`text` wrapped at `width` characters, cut to `lines` lines (an ellipsis ends a cut)."""
  wrapped = textwrap.wrap(text, width) or [""]
  if len(wrapped) > lines:
    wrapped = wrapped[:lines]
    wrapped[-1] = wrapped[-1][: max(width - 1, 1)] + "…"
  return "\n".join(wrapped)
