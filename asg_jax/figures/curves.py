"""`curves.png`: the workdir's TensorBoard scalars: train loss and its terms, learning rate,
validation loss terms, validation metrics with their chance levels (summary.json)."""
from __future__ import annotations

import glob
import os
from typing import Mapping

import numpy as np

from asg_jax.figures import drawing


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
  fig = drawing.figure(13, 8.5)
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
