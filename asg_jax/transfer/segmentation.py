"""Segmentation transfer evaluator (data.md "Evaluation protocols"; docs/transfer.md
"Segmentation").

The pre-trained image tower (frozen by default, `freeze_encoder=False` fine-tunes it) plus
a decoder (`asg_jax.models.segmentation`: SETR-style for ViT, U-Net for ResNet-50) trained
on a downstream segmentation set (`cxr_siim`, `cxr_rsna`, `cxr_siim/demo`: the builders'
`mask` feature) at 1 / 10 / 100 % of the training split (`select_fraction`, the rule of
`asg_jax.data.builders.fraction_ids`, seed 42; `balance=True` first keeps SIIM's
positives + as many negatives, `balanced_ids`). Recipe: loss `10 * focal(gamma 2) -
log(soft Dice)` (`asg_jax.losses.segmentation`), AdamW lr 5e-4, weight decay 0.05
(constant lr), batch 8 (SIIM) / 16 (RSNA), MGCA's ShiftScaleRotate augmentation (image and
mask together, in the model), <= `max_epochs` epochs with early stopping on the validation
loss (`patience`), the best epoch's parameters tested.

Training uses the project's one train step, `asg_jax.train.make_train_step`, jitted as
`train.py` does (state replicated and donated, batch sharded over the `data` mesh,
measurements returned), compiled once per evaluator and reused for every init, fraction
and seed: `asg_jax.transfer.training.Trainer`, shared with the fine-tuning
classifier.

Geometry: the tower's own input size (`config.data.image_size` of the pre-trained model)
and normalisation; images and masks go through the SAME `geometry.crop` (longest side to
`resize` — default `image_size`, MGCA's `resize_img` — centred zero pad, centre crop), the
mask resampled as 255·mask then thresholded at 128, so they stay aligned pixel for pixel.

Metric: per-image Dice at threshold 0.5 with the empty-mask rule, mean over the test images
(`dice`); `dice_positive` = the mean over test images with a non-empty ground truth.
Chance = the all-empty prediction's Dice (= the share of empty test masks).
`figures` > 0: PNG overlays (ground truth green outline, prediction red) of a few test images,
`segmentation_<dataset>_<init>.png` in `figure_dir` (default: beside `cache_dir`, i.e. next
to results.md).

    config_lib.add_eval(c, "seg", type="segmentation", downstream="cxr_siim", balance=True,
                        batch_size=8)
"""
from __future__ import annotations

import functools
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from asg_jax.data import geometry
from asg_jax.losses import segmentation as seg_loss
from asg_jax.models import segmentation as seg
from asg_jax.transfer import features
from asg_jax.transfer import table
from asg_jax.transfer import training

PROTOCOL = "segmentation"
def protocol(batch_size: int, runlocal: bool = False) -> dict:
  """The evaluator keywords of the papers' recipe (configs/transfer/siim.py, rsna_seg.py);
  `runlocal`: tiny decoder, 1 epoch, batch 8, 2-image figures (tests, smoke runs)."""
  out = dict(fractions=table.FRACTIONS, seeds=(0,), lr=5e-4, weight_decay=0.05,
             batch_size=batch_size, max_epochs=50, patience=10, freeze_encoder=True,
             channels=(), figures=4, num_devices=0, head_prior=0.0)
  if runlocal:
    out.update(batch_size=8, max_epochs=1, patience=0, channels=(8,),
               setr_hidden=16, figures=2)
  return out


# --------------------------------------------------------------------------- data

def load_split(b, split: str, *, image_size: int, resize: int = 0,
               ids: Sequence[str] | None = None, max_examples: int = 0) -> dict:
  """A split's images and masks in memory, cropped together (module docstring).

  Returns {"image" uint8 [N, S, S, 1], "mask" uint8 [N, S, S, 1] in {0, 1}, "labels"
  float32 [N, C], "image_id" [N] str}, in the stored order (`training.load_split`).
  """
  return training.load_split(b, split, image_size=image_size, resize=resize, ids=ids,
                             max_examples=max_examples, with_mask=True,
                             who="the segmentation evaluator")


training_ids = training.training_ids


# ----------------------------------------------------------------------- evaluator

class Evaluator:
  """Decoder (+ optionally the encoder) trained per label fraction and seed; test Dice.

  Args (config.evals entry keys):
    downstream: tfds name of a built segmentation set (`cxr_siim`, `cxr_rsna`,
      `cxr_siim/demo`); data_dir its tfds folder; train/val/test_split its splits.
    fractions, fraction_seed, balance: the training subsets (module docstring).
    seeds: decoder init and batch order of each run (MGCA reports one run).
    lr, weight_decay, batch_size, max_epochs, patience: the recipe (early stopping on the
      validation loss; no validation split -> the last epoch). `min_steps` > 0: at least
      that many steps per run (epochs repeat), for tiny fractions.
    freeze_encoder: the papers' protocol (True) or fine-tune the encoder too.
    channels, setr_hidden: decoder widths (`()` = the paper's).
    augment: MGCA's ShiftScaleRotate in training.
    resize: longest side before the centre crop (0 = the tower's image_size: no crop).
    head_prior: the decoder head's initial foreground probability (0 = smp's bias 0, the
      papers' recipe; `asg_jax.models.segmentation.init_decoder`).
    eval_batch_size (0 = batch_size), num_devices (0 = all), max_examples (> 0: first N
      of each split), figures (overlay images per init), figure_dir / cache_dir.
  """

  def __init__(self, predict_fns, *, data=None, downstream: str, data_dir: str = "",
               train_split: str = "train", val_split: str = "validation",
               test_split: str = "test", fractions: Sequence[float] = table.FRACTIONS,
               fraction_seed: int = 42, balance: bool = False, seeds: Sequence[int] = (0,),
               lr: float = 5e-4, weight_decay: float = 0.05, batch_size: int = 8,
               eval_batch_size: int = 0, max_epochs: int = 50, patience: int = 10,
               min_steps: int = 0, freeze_encoder: bool = True, channels: Sequence[int] = (),
               setr_hidden: int = 768, augment: bool = True, resize: int = 0,
               num_devices: int = 0, max_examples: int = 0, figures: int = 4,
               figure_dir: str = "", cache_dir: str = "", augment_seed: int = 0,
               head_prior: float = 0.0):
    del data                      # the pre-training SplitPass: not used
    self.fns = predict_fns
    self.info = predict_fns.info
    self.downstream, self.data_dir = downstream, data_dir
    self.splits = (train_split, val_split, test_split)
    self.fractions = tuple(float(f) for f in fractions)
    self.fraction_seed, self.balance = int(fraction_seed), bool(balance)
    self.seeds = tuple(int(s) for s in seeds)
    self.lr, self.weight_decay = float(lr), float(weight_decay)
    self.batch_size = int(batch_size)
    self.eval_batch_size = int(eval_batch_size) or self.batch_size
    self.max_epochs, self.patience, self.min_steps = int(max_epochs), int(patience), int(min_steps)
    self.freeze_encoder, self.augment = bool(freeze_encoder), bool(augment)
    self.channels, self.setr_hidden = tuple(int(c) for c in channels), int(setr_hidden)
    self.resize, self.num_devices = int(resize), int(num_devices)
    self.max_examples, self.figures = int(max_examples), int(figures)
    self.figure_dir = figure_dir or (os.path.dirname(os.path.abspath(cache_dir)) if cache_dir else "")
    self.augment_seed = int(augment_seed)
    self.head_prior = float(head_prior)
    seg.head_prior_bias(self.head_prior)     # a bad value fails here, before any data loads
    self.image_size = self.info.image_size
    self.normalization = self.info.normalization
    self.timing: dict = {}
    self.history: list[dict] = []
    self.figure_paths: list[str] = []
    self._data: dict | None = None
    self._eval = None
    self.model = self._model()
    self.trainer = self._trainer()

  # ------------------------------------------------------------------ model + steps

  def _model(self):
    mean, std = geometry.normalization_constants(self.normalization)
    border = tuple(float(-m / s) for m, s in zip(mean, std))     # a black pixel, normalised
    return seg.Segmenter(image=self.info.image,
                         channels=self.channels,
                         setr_hidden=self.setr_hidden, freeze_encoder=self.freeze_encoder,
                         augment=self.augment, border=border, dtype=self.info.dtype)

  def optimizer(self):
    """AdamW on the decoder (and the encoder when fine-tuning); frozen leaves never move
    (no weight decay either)."""
    adamw = optax.adamw(self.lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=self.weight_decay)
    if not self.freeze_encoder:
      return adamw
    labels = lambda params: {k: jax.tree.map(lambda _: "frozen" if k == "image_encoder"  # noqa: E731
                                              else "train", v) for k, v in params.items()}
    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, labels)

  def mesh(self):
    return training.make_mesh(self.num_devices, {"batch_size": self.batch_size,
                                                 "eval_batch_size": self.eval_batch_size},
                              "segmentation")

  def _trainer(self) -> training.Trainer:
    s = self.image_size
    return training.Trainer(
        self.model, self.optimizer(), self.lr, seg_loss.objective, head="decoder",
        init_head=functools.partial(seg.init_decoder, head_prior=self.head_prior),
        dummy_batch={"image": jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32),
                     "mask": jax.ShapeDtypeStruct((2, s, s, 1), jnp.float32)},
        trainable=("decoder",) if self.freeze_encoder else ("image_encoder", "decoder"),
        rng_seed=self.augment_seed, name=f"segmentation {self.downstream}")

  def init_state(self, state, seed: int, mesh):
    """(TrainState, tx): decoder freshly initialised (seed, `segmentation.init_decoder`),
    the encoder from `state` (`training.Trainer.init_state`)."""
    return self.trainer.init_state(state, seed, mesh)

  def train_step(self, ts, tx, mesh):
    """The project's train step (asg_jax.train.make_train_step), jitted as train.py does;
    compiled once per evaluator and mesh."""
    del tx
    return self.trainer.train_step(ts, mesh)

  def eval_step(self):
    """(variables, batch) -> {"dice" [B], "loss" (valid rows), "pred" bool [B, S, S]}."""
    if self._eval is None:
      def fn(variables, batch):
        out = self.model.apply(variables, batch, train=False)
        loss, _ = seg_loss.segmentation_loss(out["logits"], out["mask"], batch["valid"])
        return {"dice": seg_loss.per_image_dice(out["logits"], out["mask"]), "loss": loss,
                "pred": out["logits"][..., 0] > 0}
      self._eval = jax.jit(fn)
    return self._eval

  # ------------------------------------------------------------------ data

  def load(self) -> dict:
    """The three splits in memory (once per evaluator, shared by every init)."""
    if self._data is None:
      from asg_jax.data.pipeline import downstream_input  # pylint: disable=import-outside-toplevel
      t = time.time()
      b = downstream_input.builder(self.downstream, self.data_dir)
      self._builder = b
      self._data = {split: load_split(b, split, image_size=self.image_size, resize=self.resize,
                                      max_examples=self.max_examples)
                    if split in b.info.splits else None for split in self.splits}
      if not self._data[self.splits[0]] or not self._data[self.splits[0]]["image_id"]:
        raise ValueError(f"{self.downstream}/{self.splits[0]}: no training example")
      if not self._data[self.splits[2]] or not self._data[self.splits[2]]["image_id"]:
        raise ValueError(f"{self.downstream}/{self.splits[2]}: no test example")
      self.timing["load_s"] = time.time() - t
    return self._data

  def fraction_rows(self, fraction: float) -> np.ndarray:
    """Row positions in the loaded training split of a fraction's images."""
    train_ids = self.load()[self.splits[0]]["image_id"]
    return training.fraction_rows(self._builder, self.splits[0], train_ids, fraction,
                                  self.fraction_seed, self.balance, self.max_examples)

  # ------------------------------------------------------------------ fit / predict

  def _host_batch(self, data: dict):
    return lambda idx: {"image": geometry.normalize_numpy(data["image"][idx], self.normalization),
                        "mask": data["mask"][idx].astype(np.float32)}

  def evaluate(self, variables, data: dict, mesh) -> dict:
    """{"dice" [N], "loss" (mean over batches, weighted by valid rows), "pred" [N, S, S]}."""
    return training.predict(self.eval_step(), variables, data, self.eval_batch_size,
                            self._host_batch(data), mesh)

  def fit(self, state, rows: np.ndarray, seed: int, mesh) -> tuple[dict, dict]:
    """Train one run on the training rows; (best variables, info)."""
    data = self.load()
    train, val = data[self.splits[0]], data[self.splits[1]]

    def validate(variables):
      v = self.evaluate(variables, val, mesh)
      return {"val_loss": v["loss"], "val_dice": float(np.mean(v["dice"]))}
    return self.trainer.fit(state, rows, seed, mesh, train_batch=self._host_batch(train),
                            validate=validate if val and val["image_id"] else None,
                            batch_size=self.batch_size, max_epochs=self.max_epochs,
                            patience=self.patience, min_steps=self.min_steps)

  def rows(self, state, init: str = "pretrained") -> list[dict]:
    data = self.load()
    test = data[self.splits[2]]
    gt_empty = test["mask"].reshape(len(test["image_id"]), -1).max(1) == 0
    chance = float(np.mean(gt_empty))
    mesh = self.mesh()
    out, runs = [], []
    with jax.set_mesh(mesh):
      for frac in self.fractions:
        rows = self.fraction_rows(frac)
        dice, dice_pos = [], []
        for seed in self.seeds:
          features.progress(f"  segmentation {self.downstream} ({init}): {100 * frac:g} % = "
                            f"{len(rows)} images, seed {seed}")
          variables, info = self.fit(state, rows, seed, mesh)
          res = self.evaluate(variables, test, mesh)
          dice.append(float(np.mean(res["dice"])))
          dice_pos.append(float(np.mean(res["dice"][~gt_empty])) if (~gt_empty).any() else np.nan)
          info.update(fraction=frac, seed=seed, test_dice=dice[-1])
          runs.append(info)
          features.progress(f"  segmentation {self.downstream} ({init}): {100 * frac:g} % "
                            f"seed {seed}: "
                            f"test Dice {100 * dice[-1]:.1f} (best epoch {info['best_epoch']} of "
                            f"{info['epochs']}, {info['images_per_s']:.1f} train images/s)")
          last = (variables, res)
        std = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else None  # noqa: E731
        out.append(table.row(self.downstream, PROTOCOL, "dice", float(np.mean(dice)),
                             fraction=frac, std=std(dice), chance=chance, init=init))
        if (~gt_empty).any():
          out.append(table.row(self.downstream, PROTOCOL, "dice_positive",
                               float(np.nanmean(dice_pos)), fraction=frac, std=std(dice_pos),
                               chance=0.0, init=init))
    if self.figures > 0 and self.figure_dir:
      name = features._safe(self.downstream)  # pylint: disable=protected-access
      path = os.path.join(self.figure_dir, f"segmentation_{name}_{init}.png")
      if jax.process_index() == 0:   # several processes: one writes
        write_figure(path, test, last[1], self.figures,
                     title=f"{self.downstream} ({init}, {100 * self.fractions[-1]:g} % labels)")
      self.figure_paths.append(path)
    self.history = runs
    self.timing.update(
        runs=[{k: v for k, v in r.items() if k != "history"} for r in runs],
        train_images_per_s=float(np.mean([r["images_per_s"] for r in runs])))
    return out

  def run(self, state):
    yield from table.yield_rows(self.rows(state, getattr(state, "init", "pretrained")))


# ------------------------------------------------------------------------- figures

def pick_examples(masks: np.ndarray, count: int) -> list[int]:
  """Up to `count` test images: the largest ground truths first, then one empty one."""
  area = masks.reshape(len(masks), -1).sum(1)
  pos = [int(i) for i in np.argsort(-area, kind="stable") if area[i] > 0]
  neg = [int(i) for i in np.flatnonzero(area == 0)]
  picked = pos[:max(count - 1, 1)] + neg[:1]
  return (picked + [i for i in pos + neg if i not in picked])[:count]


def write_figure(path: str, test: dict, result: dict, count: int, title: str = "") -> str:
  """PNG: a row of test images with the ground truth (green outline) and the prediction
  (red) overlaid, the image's Dice above each."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from matplotlib.colors import ListedColormap  # pylint: disable=import-outside-toplevel
  idx = pick_examples(test["mask"], count)
  fig, axes = plt.subplots(1, len(idx), figsize=(2.6 * len(idx), 2.9), squeeze=False)
  for ax, i in zip(axes[0], idx):
    gt = test["mask"][i, ..., 0] > 0
    pred = np.asarray(result["pred"][i], bool)
    ax.imshow(test["image"][i, ..., 0], cmap="gray", vmin=0, vmax=255)
    ax.imshow(np.ma.masked_where(~pred, pred.astype(float)), cmap=ListedColormap(["red"]),
              alpha=0.4, vmin=0, vmax=1)
    if gt.any():
      ax.contour(gt.astype(float), levels=[0.5], colors="lime", linewidths=1.0)
    ax.set_title(f"Dice {100 * float(result['dice'][i]):.0f}"
                 + ("" if gt.any() else " (empty GT)"), fontsize=8)
    ax.axis("off")
  if title:
    fig.suptitle(title + "  — green: ground truth, red: prediction", fontsize=8)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path
