"""`retrieval.png` (RECLF figure 5): for query reports, the top-k images of the split, and for
query images the top-k reports; green = the query's own pair, orange = same class (the same
set of positive CheXpert findings), red = another class."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from asg_jax.figures import drawing
from asg_jax.figures.drawing import CORRECT, SAME_CLASS, WRONG
from asg_jax.figures.examples import class_of, same_findings


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
  fig = drawing.figure(2.5 * (k + 1), 2.7 * rows)
  axes = fig.subplots(rows, k + 1, squeeze=False)

  def frame(ax, color):
    for spine in ax.spines.values():
      spine.set_edgecolor(color)
      spine.set_linewidth(4)

  for row, q in enumerate(queries):                                    # report -> images
    ax = axes[row, 0]
    ax.axis("off")
    ax.text(0, 1, drawing.wrap(f"QUERY REPORT [{class_of(examples[q]['chexpert'])}]: "
                        f"{examples[q]['caption']}", 30, 11),
            fontsize=7, va="top", ha="left", transform=ax.transAxes)
    for rank, j in enumerate(np.argsort(-sim[q])[:k], start=1):
      ax = axes[row, rank]
      drawing.show_image(ax, examples[j]["image"])
      frame(ax, _outcome(examples, q, int(j)))
      ax.set_title(f"#{rank}  cos {sim[q, j]:.2f}\n{class_of(examples[j]['chexpert'])}",
                   fontsize=7)
  for row, q in enumerate(queries, start=len(queries)):               # image -> reports
    q = int(q)
    ax = axes[row, 0]
    drawing.show_image(ax, examples[q]["image"])
    frame(ax, "black")
    ax.set_title(f"QUERY IMAGE [{class_of(examples[q]['chexpert'])}]", fontsize=7)
    for rank, j in enumerate(np.argsort(-sim[:, q])[:k], start=1):
      ax = axes[row, rank]
      ax.set_xticks([])
      ax.set_yticks([])
      color = _outcome(examples, q, int(j))
      frame(ax, color)
      ax.set_facecolor(color + "22")
      ax.text(0.04, 0.96, drawing.wrap(examples[j]["caption"], 28, 11), fontsize=6, va="top",
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
