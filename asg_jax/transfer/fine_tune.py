"""Full fine-tuning classification (docs/transfer.md "Fine-tuning"): the linear probe's
protocol with the image tower trainable — declared as a linear-probe option,

    evaluate.add(c, "fine_tune", type="linear_probe", fine_tune=True, encoder_lr=1e-5,
                 downstream="cxr_covidx", fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2))

(`linear_probe.Evaluator` delegates to `Evaluator` here), rows with protocol "fine_tune".

Model (`Classifier`): the pre-trained image tower (`config.model.image`, registry `build` /
`features`, `input_resize` as the pre-training model) -> global feature (ViT CLS / ResNet
pooled) -> dropout -> one linear layer ("head", torch.nn.Linear's init). AdamW (wd 1e-6 on
both): head lr `lr` (5e-4, the probe's), encoder lr `encoder_lr` (1e-5; data.md gives no
fine-tuning lr; 0 = the encoder frozen: inference-mode BatchNorm, no update, i.e. a linear
probe trained on images). Loss: BCE-with-logits averaged over classes (multi-label) or
softmax cross-entropy (single-label, `task`), `linear_probe.logits_loss`. Batch 48, <= 50
epochs, early stopping on the validation loss (patience 10), the best epoch's variables
tested. No augmentation. Trained by the project's one train step through
`training.Trainer` (shared with segmentation), compiled once per evaluator; the
splits are held in memory as uint8 (`training.load_split`, the probe's geometry:
`config.data.resize` then the centre crop to `image_size`).

Fractions: the builders' rule (`fraction_ids`, seed 42) as the probe. Seeds vary the head
init, the batch order and the dropout masks (the step counter starts at seed * 2^20).
Metrics (`linear_probe.classification_rows`): macro + per-class AUROC, top-1 accuracy for
single-label sets (COVIDx); mean ± sample std over seeds. results.md has no fine-tuning
numbers: `published` stays empty.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from asg_jax.transfer import classification
from asg_jax.transfer import features
from asg_jax.transfer import table
from asg_jax.transfer import training

PROTOCOL = "fine_tune"
STEP0 = 2 ** 20          # step counter start per seed (the train step's rng is fold_in(step))


class Classifier(nn.Module):
  """Image tower -> global feature -> dropout -> Dense(num_classes) "head".

  Called as the pre-training model: `apply(variables, {"image" [B, S, S, 3] normalised,
  "labels" [B, C]}, train=...)` -> {"logits" [B, C] float32, "labels" [B, C]}.
  `freeze_encoder`: the tower in inference mode and its feature `stop_gradient`-ed.
  """
  image: Any
  num_classes: int
  dropout: float = 0.0
  freeze_encoder: bool = False
  dtype: str = "float32"

  @nn.compact
  def __call__(self, batch, *, train: bool, tag_queries=None) -> dict[str, jax.Array]:
    del tag_queries
    from asg_jax import registry  # pylint: disable=import-outside-toplevel
    images = batch["image"]
    if self.image.get("input_resize", 0):
      size = self.image.input_resize
      images = jax.image.resize(images, (images.shape[0], size, size, images.shape[-1]),
                                method="bilinear")
    dtype = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[self.dtype]
    tower = registry.image_tower(self.image.name)
    feature, _ = tower.features(tower.build(self.image, dtype, name="image_encoder")(
        images, train=train and not self.freeze_encoder))
    feature = feature.astype(jnp.float32)
    if self.freeze_encoder:
      feature = jax.lax.stop_gradient(feature)
    feature = nn.Dropout(self.dropout, deterministic=not train)(feature)
    logits = nn.Dense(self.num_classes, name="head")(feature)
    return {"logits": logits, "labels": batch["labels"].astype(jnp.float32)}


def init_head(shapes: dict, seed: int) -> dict:
  """torch.nn.Linear's init (NumPy RandomState(seed)): kernel [D, C] and bias
  U(-1/sqrt(D), 1/sqrt(D))."""
  rng = np.random.RandomState(seed)
  p = shapes["params"]
  dim = p["kernel"].shape[0]
  bound = 1.0 / np.sqrt(dim)
  return {"params": {k: rng.uniform(-bound, bound, p[k].shape).astype(np.float32)
                     for k in ("kernel", "bias")}, "batch_stats": {}}


def make_objective(multiclass: bool):
  """The train step's objective: `logits_loss` of outputs["logits"] vs outputs["labels"]."""

  def objective(outputs, batch):
    del batch
    logits, y = outputs["logits"], outputs["labels"]
    return classification.logits_loss(logits, y, jnp.ones(logits.shape[0]), multiclass), {}
  return objective


def make_tx(lr: float, encoder_lr: float, weight_decay: float):
  """AdamW with the head's lr on "head" and `encoder_lr` on "image_encoder" (0: frozen,
  `set_to_zero`: no update, no weight decay)."""
  adamw = lambda r: optax.adamw(r, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)  # noqa: E731
  encoder = adamw(encoder_lr) if encoder_lr > 0 else optax.set_to_zero()
  labels = lambda params: {k: jax.tree.map(lambda _: "encoder" if k == "image_encoder"  # noqa: E731
                                            else "head", v) for k, v in params.items()}
  return optax.multi_transform({"encoder": encoder, "head": adamw(lr)}, labels)


class Evaluator:
  """Fine-tuned classifier of one downstream dataset per label fraction and seed.

  Args (config.evals entry keys, as `linear_probe` with `fine_tune=True`):
    downstream, data_dir, train/val/test_split, fractions, fraction_seed, seeds, task: as
      the linear probe.
    lr (head), encoder_lr, weight_decay, batch_size, max_epochs, patience, dropout: the
      recipe (module docstring).
    eval_batch_size (0 = batch_size), num_devices (0 = all), max_examples (> 0: first N of
      each split).
  """

  def __init__(self, predict_fns, *, data=None, downstream: str, data_dir: str = "",
               train_split: str = "train", val_split: str = "validation",
               test_split: str = "test", fractions: Sequence[float] = (0.01, 0.1, 1.0),
               seeds: Sequence[int] = (0, 1, 2), fraction_seed: int = 42, lr: float = 5e-4,
               encoder_lr: float = 1e-5, weight_decay: float = 1e-6, batch_size: int = 48,
               eval_batch_size: int = 0, max_epochs: int = 50, patience: int = 10,
               dropout: float = 0.0, task: str = "auto", num_devices: int = 0,
               max_examples: int = 0):
    del data
    self.fns = predict_fns
    self.info = predict_fns.info
    self.downstream, self.data_dir = downstream, data_dir
    self.splits = (train_split, val_split, test_split)
    self.fractions = tuple(float(f) for f in fractions)
    self.seeds = tuple(int(s) for s in seeds)
    self.fraction_seed = int(fraction_seed)
    self.lr, self.encoder_lr, self.weight_decay = float(lr), float(encoder_lr), float(weight_decay)
    self.batch_size = int(batch_size)
    self.eval_batch_size = int(eval_batch_size) or self.batch_size
    self.max_epochs, self.patience, self.dropout = int(max_epochs), int(patience), float(dropout)
    self.task, self.num_devices, self.max_examples = task, int(num_devices), int(max_examples)
    self.image_size = self.info.image_size
    self.resize = self.info.resize
    self.normalization = self.info.normalization
    self.timing: dict = {}
    self.history: list[dict] = []
    self._data: dict | None = None
    self._trainers: dict = {}
    self._evals: dict = {}

  # ------------------------------------------------------------------ data

  def load(self) -> dict:
    """The three splits in memory (once per evaluator, shared by every init)."""
    if self._data is None:
      from asg_jax.data.pipeline import downstream_input  # pylint: disable=import-outside-toplevel
      t = time.time()
      b = downstream_input.builder(self.downstream, self.data_dir)
      self._builder = b
      self._data = {split: training.load_split(b, split, image_size=self.image_size,
                                               resize=self.resize, max_examples=self.max_examples)
                    if split in b.info.splits else None for split in self.splits}
      for split in (self.splits[0], self.splits[2]):
        if not self._data[split] or not self._data[split]["image_id"]:
          raise ValueError(f"{self.downstream}/{split}: no example")
      self.timing["load_s"] = time.time() - t
    return self._data

  def multiclass(self) -> bool:
    return classification.is_multiclass(self.load()[self.splits[0]]["labels"], self.task)

  def fraction_rows(self, fraction: float) -> np.ndarray:
    train_ids = self.load()[self.splits[0]]["image_id"]
    return training.fraction_rows(self._builder, self.splits[0], train_ids, fraction,
                                  self.fraction_seed, False, self.max_examples)

  def _host_batch(self, data: dict):
    from asg_jax.data import geometry  # pylint: disable=import-outside-toplevel
    return lambda idx: {"image": geometry.normalize_numpy(data["image"][idx], self.normalization),
                        "labels": data["labels"][idx]}

  # ------------------------------------------------------------------ model + steps

  def model(self) -> Classifier:
    c = self.load()[self.splits[0]]["labels"].shape[1]
    return Classifier(image=self.info.image,
                      num_classes=int(c), dropout=self.dropout,
                      freeze_encoder=self.encoder_lr <= 0, dtype=self.info.dtype)

  def trainer(self) -> training.Trainer:
    """The shared trainer (one per evaluator: compiled once for every init/fraction/seed)."""
    if "trainer" not in self._trainers:
      s = self.image_size
      c = self.load()[self.splits[0]]["labels"].shape[1]
      self._trainers["trainer"] = training.Trainer(
          self.model(), make_tx(self.lr, self.encoder_lr, self.weight_decay), self.lr,
          make_objective(self.multiclass()), head="head", init_head=init_head,
          dummy_batch={"image": jax.ShapeDtypeStruct((2, s, s, 3), jnp.float32),
                       "labels": jax.ShapeDtypeStruct((2, c), jnp.float32)},
          trainable=("head",) if self.encoder_lr <= 0 else ("image_encoder", "head"),
          name=f"fine_tune {self.downstream}")
    return self._trainers["trainer"]

  def mesh(self):
    return training.make_mesh(self.num_devices, {"batch_size": self.batch_size,
                                                 "eval_batch_size": self.eval_batch_size},
                              "fine_tune")

  def eval_step(self):
    """(variables, batch) -> {"scores" [B, C] (sigmoid / softmax), "loss" (valid rows)}."""
    if "eval" not in self._evals:
      model, multiclass = self.trainer().model, self.multiclass()

      def fn(variables, batch):
        logits = model.apply(variables, batch, train=False)["logits"]
        y = batch["labels"].astype(jnp.float32)
        scores = jax.nn.softmax(logits) if multiclass else jax.nn.sigmoid(logits)
        loss = classification.logits_loss(logits, y, batch["valid"], multiclass)
        return {"scores": scores, "loss": loss}
      self._evals["eval"] = jax.jit(fn)
    return self._evals["eval"]

  def evaluate(self, variables, data: dict, mesh) -> dict:
    """{"scores" [N, C], "loss" (mean over the split)}."""
    return training.predict(self.eval_step(), variables, data, self.eval_batch_size,
                            self._host_batch(data), mesh)

  def fit(self, state, rows: np.ndarray, seed: int, mesh) -> tuple[dict, dict]:
    """Train one run on the training rows; (best variables, info)."""
    data = self.load()
    train, val = data[self.splits[0]], data[self.splits[1]]

    def validate(variables):
      return {"val_loss": self.evaluate(variables, val, mesh)["loss"]}
    return self.trainer().fit(state, rows, seed, mesh, train_batch=self._host_batch(train),
                              validate=validate if val and val["image_id"] else None,
                              batch_size=self.batch_size, max_epochs=self.max_epochs,
                              patience=self.patience, step0=seed * STEP0)

  # ------------------------------------------------------------------ rows

  def rows(self, state, init: str = "pretrained") -> list[dict]:
    data = self.load()
    test = data[self.splits[2]]
    multiclass = self.multiclass()
    mesh = self.mesh()
    scores, runs = [], []
    with jax.set_mesh(mesh):
      for frac in self.fractions:
        rows = self.fraction_rows(frac)
        scores.append([])
        for seed in self.seeds:
          features.progress(f"  fine-tune {self.downstream} ({init}): {100 * frac:g} % = "
                            f"{len(rows)} images, seed {seed}")
          variables, info = self.fit(state, rows, seed, mesh)
          sc = self.evaluate(variables, test, mesh)["scores"]
          scores[-1].append(sc)
          macro, _ = classification.macro_auroc(sc, test["labels"])
          info.update(fraction=frac, seed=seed, test_auroc=macro)
          runs.append(info)
          features.progress(f"  fine-tune {self.downstream} ({init}): {100 * frac:g} % "
                            f"seed {seed}: "
                            f"test AUROC {100 * macro:.1f} (best epoch {info['best_epoch']} of "
                            f"{info['epochs']}, {info['images_per_s']:.1f} train images/s)")
    self.history = runs
    self.timing.update(
        runs=[{k: v for k, v in r.items() if k != "history"} for r in runs],
        train_images_per_s=float(np.mean([r["images_per_s"] for r in runs])))
    names = features.class_names(self.downstream, self.data_dir)
    return classification.classification_rows(self.downstream, PROTOCOL, self.fractions, scores,
                                              test["labels"], names, multiclass, init)

  def run(self, state):
    yield from table.yield_rows(self.rows(state, getattr(state, "init", "pretrained")))
