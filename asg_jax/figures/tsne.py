"""`tsne.png`: t-SNE (scikit-learn) of the global image and report embeddings of the split,
coloured by class (RECLF figure 4)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from asg_jax.figures import drawing
from asg_jax.figures.examples import class_of


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
  fig = drawing.figure(6.5 * len(panels), 6)
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
