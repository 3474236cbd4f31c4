"""What the trained transfer protocols share (segmentation, fine-tuning classification;
docs/transfer.md): the image tower of a pre-trained `state` plus a freshly initialised head
trained with the project's one train step, `asg_jax.train.make_train_step`, jitted as
`train.py` does (state replicated and donated, batch sharded over the `data` mesh,
measurements returned), per label fraction and seed, with early stopping on the
validation loss.

- `make_mesh`: the `data` mesh, every batch size checked against its device count;
- `load_split`: a downstream split in memory (uint8 images, labels, optionally masks),
  cropped by the tower's geometry; `fraction_rows`: a label fraction's rows in it;
- `host_batches` / `predict`: fixed-size (padded, `valid`-masked) batches of a loaded
  split and a jitted eval function run over them;
- `Trainer`: builds the replicated TrainState (encoder copied from `state`, head from
  `init_head`), compiles the train step once per mesh, and `fit`s one run (epochs of
  random batches, early stopping, the best validation-loss epoch's variables kept).

Several processes (a pod, `asg_jax.main` multi-host): every process loads the whole split
and makes the same host batches (seeded orders); `parallel.shard_global_batch` places each
process's rows on its devices and `parallel.to_host` gathers the outputs back, so every
process computes the same table.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from asg_jax import parallel


def make_mesh(num_devices: int, batch_sizes: Mapping[str, int], who: str):
  """The `data` mesh of `num_devices` (0 = all); ValueError naming the batch size that
  the device count does not divide."""
  mesh = parallel.make_mesh(num_devices or None)
  n = mesh.devices.size
  for name, b in batch_sizes.items():
    if b % n:
      raise ValueError(f"{who}: {name}={b} is not divisible by the {n} devices of "
                       f"the mesh (set num_devices)")
  return mesh


# --------------------------------------------------------------------------- data

def load_split(b, split: str, *, image_size: int, resize: int = 0,
               ids: Sequence[str] | None = None, max_examples: int = 0,
               with_mask: bool = False, who: str = "this evaluator") -> dict:
  """A split's images (and masks) in memory, cropped together by `geometry.crop` (longest
  side to `resize`, 0 = `image_size`; centred zero pad; centre crop to `image_size`).

  Returns {"image" uint8 [N, S, S, 1], "labels" float32 [N, C], "image_id" [N] str} and,
  `with_mask`, "mask" uint8 [N, S, S, 1] in {0, 1} (resampled as 255·mask, threshold 128),
  in the stored order.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from asg_jax.data import geometry  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  if with_mask and "mask" not in b.info.features:
    raise ValueError(f"{b.info.full_name} has no `mask` feature: {who} needs a "
                     f"segmentation set (cxr_siim, cxr_rsna)")
  if split not in b.info.splits:
    raise KeyError(f"{b.info.full_name}: no split {split!r} (built: {sorted(b.info.splits)})")
  resize = resize or image_size
  ds = b.as_dataset(split=split, shuffle_files=False)
  if ids is not None:
    if not ids:
      ds = ds.take(0)
    else:
      table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
          tf.constant(list(ids), tf.string), tf.ones([len(ids)], tf.int32)), 0)
      ds = ds.filter(lambda ex: table.lookup(ex["image_id"]) > 0)
  if max_examples > 0:
    ds = ds.take(max_examples)
  no_boxes = tf.zeros((0, 4), tf.float32)
  keys = ("image", "mask", "labels") if with_mask else ("image", "labels")

  def prepare(ex):
    image, _, _ = geometry.crop(ex["image"], no_boxes, resize=resize, image_size=image_size,
                                train=False)
    out = {"image": image, "labels": ex["labels"], "image_id": ex["image_id"]}
    if with_mask:
      mask, _, _ = geometry.crop(tf.cast(ex["mask"], tf.uint8) * 255, no_boxes, resize=resize,
                                 image_size=image_size, train=False)
      out["mask"] = tf.cast(mask >= 128, tf.uint8)
    return out

  out = {k: [] for k in keys}
  out["image_id"] = []
  for ex in ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(256).as_numpy_iterator():
    for k in keys:
      out[k].append(ex[k])
    out["image_id"] += [i.decode("utf-8") for i in ex["image_id"]]
  c = len(b.info.metadata["class_names"])
  if not out["image_id"]:
    empty = {"image": np.zeros((0, image_size, image_size, 1), np.uint8),
             "labels": np.zeros((0, c), np.float32), "image_id": []}
    if with_mask:
      empty["mask"] = np.zeros((0, image_size, image_size, 1), np.uint8)
    return empty
  res = {k: np.concatenate(out[k]) for k in keys}
  res["labels"] = res["labels"].astype(np.float32).reshape(-1, c)
  res["image_id"] = out["image_id"]
  return res


def training_ids(b, split: str, fraction: float, seed: int = 42, balance: bool = False
                 ) -> list[str]:
  """The image ids (sorted) trained on at a label fraction: `select_fraction` of the split
  (`fraction_ids`), of SIIM's balanced set (`balanced_ids`) when `balance`."""
  from asg_jax.data.builders import downstream as ds_lib  # pylint: disable=import-outside-toplevel
  if balance:
    return ds_lib.select_fraction(ds_lib.balanced_ids(b, split, seed), fraction, seed)
  return ds_lib.fraction_ids(b, split, fraction, seed)


def fraction_rows(b, split: str, loaded_ids: Sequence[str], fraction: float, seed: int = 42,
                  balance: bool = False, max_examples: int = 0) -> np.ndarray:
  """Row positions in a loaded split (`loaded_ids`) of a fraction's images (`training_ids`
  of the built split; with `max_examples` > 0 only those loaded, at least the first)."""
  from asg_jax.data.pipeline import downstream_input  # pylint: disable=import-outside-toplevel
  wanted = training_ids(b, split, fraction, seed, balance)
  if max_examples > 0:
    present = set(loaded_ids)
    wanted = [i for i in wanted if i in present]
    if not wanted:    # the subset loaded holds none of the fraction: its first image
      wanted = sorted(loaded_ids)[:1]
  return downstream_input.select_rows(loaded_ids, wanted)


def host_batches(data: dict, batch_size: int, to_batch: Callable[[np.ndarray], dict]):
  """Fixed-size host batches of a loaded split in order: (idx, valid [B] bool, batch) with
  `batch = to_batch(idx)` plus "valid" float32 [B] (0 on the padding rows, which repeat the
  first row)."""
  n = len(data["image_id"])
  for start in range(0, n, batch_size):
    idx = np.arange(start, min(start + batch_size, n))
    valid = np.ones(batch_size, bool)
    if len(idx) < batch_size:
      valid[len(idx):] = False
      idx = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])
    yield idx, valid, dict(to_batch(idx), valid=valid.astype(np.float32))


def predict(fn, variables, data: dict, batch_size: int, to_batch, mesh) -> dict:
  """`fn(variables, batch) -> {"loss": mean over the batch's valid rows, key: [B, ...]}`
  over a loaded split: the per-example outputs concatenated over the valid rows [N, ...],
  "loss" the mean over the split (batches weighted by their valid rows)."""
  got: dict[str, list] = {}
  loss_sum, count = 0.0, 0
  for _, valid, batch in host_batches(data, batch_size, to_batch):
    out = parallel.to_host(fn(variables, parallel.shard_global_batch(batch, mesh)))
    for k, v in out.items():
      if k != "loss":
        got.setdefault(k, []).append(np.asarray(v)[valid])
    loss_sum += float(out["loss"]) * int(valid.sum())
    count += int(valid.sum())
  res = {k: np.concatenate(v) for k, v in got.items()}
  res["loss"] = loss_sum / max(count, 1)
  return res


# --------------------------------------------------------------------------- training

class Trainer:
  """One encoder + head model trained by `train.make_train_step` (module docstring).

  Args:
    model: a Linen module called as the pre-training model (`apply(variables, batch,
      train=..., tag_queries=..., rngs={"dropout"}, mutable=["batch_stats"])`) whose
      parameters are {"image_encoder": <the tower's tree>, head: ...}.
    tx: its optax optimizer; lr: the (constant) lr the step reports.
    objective: `(outputs, batch) -> (loss, measurements)`.
    head: the name of the head's subtree ("decoder", "head").
    init_head: `(shapes {"params", "batch_stats"} of the head, seed) -> variables` (NumPy).
    dummy_batch: {key: jax.ShapeDtypeStruct} of a batch (the model's shapes).
    trainable: the parameter subtrees that train (kept from the best epoch).
    rng_seed: the train step's base key (dropout, augmentation: `fold_in(key, step)`).
    name: what the errors name ("segmentation cxr_siim").
  """

  def __init__(self, model, tx, lr: float, objective, *, head: str, init_head,
               dummy_batch: Mapping[str, jax.ShapeDtypeStruct], trainable: Sequence[str],
               rng_seed: int = 0, name: str = "transfer"):
    self.model, self.tx, self.lr, self.objective = model, tx, float(lr), objective
    self.head, self.init_head, self.dummy_batch = head, init_head, dict(dummy_batch)
    self.trainable, self.rng_seed, self.name = tuple(trainable), int(rng_seed), name
    self._compiled: dict = {}

  def shapes(self) -> dict:
    """The model's variable shapes (`jax.eval_shape` of init; once)."""
    if "shapes" not in self._compiled:
      key = jax.random.PRNGKey(0)
      self._compiled["shapes"] = jax.eval_shape(
          lambda b: self.model.init({"params": key, "dropout": key}, b, train=False),
          self.dummy_batch)
    return self._compiled["shapes"]

  def init_state(self, state, seed: int, mesh, step0: int = 0):
    """(TrainState, tx): the head freshly initialised (`init_head(.., seed)`), the encoder
    (and its BatchNorm statistics) copied from `state`; replicated over `mesh`. `step0`:
    the step counter's start (the step's rng is `fold_in(key, step)`)."""
    from asg_jax import state as state_lib  # pylint: disable=import-outside-toplevel
    shapes = self.shapes()
    head = self.init_head({"params": shapes["params"][self.head],
                           "batch_stats": shapes.get("batch_stats", {}).get(self.head, {})}, seed)
    encoder = state.params["image_encoder"]
    if jax.tree.structure(encoder) != jax.tree.structure(shapes["params"]["image_encoder"]):
      raise ValueError(f"{self.name}: the state's image_encoder parameters do not match the "
                       f"model's tower (config.model.image)")
    enc_stats = (state.batch_stats or {}).get("image_encoder") \
        if "image_encoder" in shapes.get("batch_stats", {}) else None
    head_stats = head.get("batch_stats") or {}
    key = ("state", mesh.devices.size)
    if key not in self._compiled:
      tx, name = self.tx, self.head

      def make(encoder, enc_stats, head_params, head_stats, step0):
        # copies: the train step donates its state, the caller's encoder must survive
        params = {"image_encoder": jax.tree.map(jnp.copy, encoder), name: head_params}
        stats = {name: head_stats} if jax.tree.leaves(head_stats) else {}
        if enc_stats is not None:
          stats["image_encoder"] = jax.tree.map(jnp.copy, enc_stats)
        return state_lib.TrainState(step=jnp.asarray(step0, jnp.int32), params=params,
                                    batch_stats=stats, opt_state=tx.init(params))
      # one compiled function builds the whole replicated state (no per-leaf eager ops)
      self._compiled[key] = jax.jit(make, out_shardings=parallel.replicated(mesh))
    # the encoder comes from wherever its state was made (Pretrained: one device): placed
    # on this mesh first, or the jit under the mesh rejects it (any many-device host)
    inputs = parallel.replicate((encoder, enc_stats, head["params"], head_stats), mesh)
    ts = self._compiled[key](*inputs, np.int32(step0))
    return ts, self.tx

  def train_step(self, ts, mesh):
    """The project's train step (asg_jax.train.make_train_step), jitted as train.py does;
    compiled once per trainer and mesh."""
    from asg_jax import train  # pylint: disable=import-outside-toplevel
    key = ("train", mesh.devices.size)
    if key not in self._compiled:
      sharding = jax.tree.map(lambda x: x.sharding, ts)
      step = train.make_train_step(self.model, self.tx, optax.constant_schedule(self.lr),
                                   self.objective, jax.random.PRNGKey(self.rng_seed))
      self._compiled[key] = jax.jit(
          step, in_shardings=(sharding, parallel.batch_sharding(mesh), parallel.replicated(mesh)),
          out_shardings=(sharding, parallel.replicated(mesh)), donate_argnums=(0,))
    return self._compiled[key]

  def fit(self, state, rows: np.ndarray, seed: int, mesh, *,
          train_batch: Callable[[np.ndarray], dict],
          validate: Callable[[dict], dict] | None, batch_size: int, max_epochs: int,
          patience: int, min_steps: int = 0, step0: int = 0) -> tuple[dict, dict]:
    """Train one run on the training `rows`; (best variables (replicated), info).

    Each epoch: ceil(len(rows) / batch_size) steps over a random order of the rows (rows
    repeated when fewer than a batch), `train_batch(row positions) -> host batch`.
    `validate(variables) -> {"val_loss", ...}` after every epoch (None: no validation, the
    last epoch is kept); early stopping after `patience` epochs without a lower validation
    loss (0 = never), not before `min_steps` steps; the best epoch's trainable variables
    are returned (the rest as trained: frozen parts did not move).
    """
    ts, _ = self.init_state(state, seed, mesh, step0)
    step_fn = self.train_step(ts, mesh)
    b = batch_size
    steps = max(1, math.ceil(len(rows) / b))
    epochs = max_epochs
    if min_steps > 0:
      epochs = max(epochs, math.ceil(min_steps / steps))
    trainable = self.trainable
    keep = lambda t: {"params": {k: t.params[k] for k in trainable},  # noqa: E731
                      "batch_stats": {k: t.batch_stats[k] for k in trainable
                                      if k in t.batch_stats}}
    rng = np.random.RandomState(seed)
    best, best_loss, best_epoch, since, history = None, np.inf, -1, 0, []
    train_s, images, first = 0.0, 0, True     # throughput: train steps after the first
    t_start = time.time()
    for epoch in range(epochs):
      reps = math.ceil(steps * b / len(rows))
      order = np.concatenate([rng.permutation(rows) for _ in range(reps)])[:steps * b]
      measurements = []
      t = time.time()
      for s in range(steps):
        ts, m = step_fn(ts, parallel.shard_global_batch(train_batch(order[s * b:(s + 1) * b]),
                                                        mesh), {})
        measurements.append(m)
        if first:                              # compiles (once per trainer): not timed
          jax.block_until_ready(m)
          t, first = time.time(), False
        else:
          images += b
      measurements = jax.device_get(measurements)
      train_s += time.time() - t
      if epoch == 0:
        first_step = {k: float(v) for k, v in measurements[0].items()}
      if not all(bool(m["finite"]) for m in measurements):
        raise FloatingPointError(f"{self.name}: non-finite loss in epoch {epoch} "
                                 f"(lr {self.lr})")
      entry = {"epoch": epoch, "train_loss": float(np.mean([m["loss"] for m in measurements]))}
      if validate is not None:
        entry.update(validate(ts.variables))
      history.append(entry)
      score = entry.get("val_loss", -epoch)        # no validation: the last epoch is kept
      if score < best_loss:
        best, best_loss, best_epoch, since = jax.device_get(keep(ts)), score, epoch, 0
      else:
        since += 1
      if validate is not None and patience > 0 and since >= patience and (
          min_steps <= 0 or (epoch + 1) * steps >= min_steps):
        break
    seconds = time.time() - t_start
    variables = {"params": dict(ts.params, **best["params"]),
                 "batch_stats": dict(ts.batch_stats, **best["batch_stats"])}
    variables = parallel.replicate(variables, mesh)
    info = {"epochs": len(history), "best_epoch": best_epoch, "steps_per_epoch": steps,
            "first_step": first_step,
            "train_examples": int(len(rows)), "seconds": seconds,
            "images_per_s": images / train_s if images and train_s > 0 else 0.0,
            "history": history}
    return variables, info
