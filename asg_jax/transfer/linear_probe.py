"""Linear-probe evaluator (data.md "Evaluation protocols"; docs/transfer.md).

Frozen image encoder -> global feature (`image_feature`: ViT CLS / ResNet pooled), extracted
ONCE per split and cached; then dropout -> one linear layer, optax AdamW (lr 5e-4, wd 1e-6),
batch 48, <= 50 epochs, early stopping on the validation loss (patience 10), the best
epoch's parameters tested. Label fractions 1 / 10 / 100 % of the training split come from
`asg_jax.data.builders.fraction_ids` (seed 42); every (fraction, seed) run is fitted in ONE
jitted, `vmap`ped problem (`fit_probes`): runs of different sizes share the step count of
the largest, smaller runs' surplus steps are masked, and a run that early-stopped stops
updating (masks), so the whole table compiles once.

`fine_tune=True` (with `encoder_lr`) makes the same entry full fine-tuning instead
(`asg_jax.transfer.fine_tune`, protocol "fine_tune").

Metrics: macro AUROC over the classes (multi-label, per-class AUROC also reported) and
top-1 accuracy (single-label sets such as COVIDx, chosen by `task`); mean ± sample std
(ddof 1) over `seeds`.

    config_lib.add_eval(c, "probe", type="linear_probe", downstream="cxr_chexpert",
                        data_dir="/data/tfds", fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2))
"""
from __future__ import annotations

import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from asg_jax.transfer import features, table
from asg_jax.transfer.classification import classification_rows, is_multiclass, logits_loss

PROTOCOL = "linear_probe"


# ------------------------------------------------------------------------------ the fit

def init_probe(key, dim: int, num_classes: int) -> dict:
  """torch.nn.Linear's init: U(-1/sqrt(D), 1/sqrt(D)) for weight and bias."""
  kw, kb = jax.random.split(key)
  bound = 1.0 / np.sqrt(dim)
  return {"w": jax.random.uniform(kw, (dim, num_classes), jnp.float32, -bound, bound),
          "b": jax.random.uniform(kb, (num_classes,), jnp.float32, -bound, bound)}


def loss_fn(params, x, y, weight, multiclass: bool):
  """Weighted mean over examples of BCE-with-logits averaged over classes (multi-label) or
  softmax cross-entropy (multiclass). weight [B] (0 = padding)."""
  return logits_loss(x @ params["w"] + params["b"], y, weight, multiclass)


def epoch_order(key, mask):
  """A run's example order for one epoch: its rows (mask True) first, in random order."""
  u = jax.random.uniform(key, mask.shape)
  return jnp.argsort(jnp.where(mask, u, 2.0))


def _keys(run_key, epoch):
  k = jax.random.fold_in(run_key, epoch)
  return jax.random.split(k)          # (order key, dropout key)


def _dropout(key, x, rate: float):
  if rate <= 0.0:
    return x
  keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0.0)


def make_tx(lr: float, weight_decay: float):
  return optax.adamw(lr, b1=0.9, b2=0.999, eps=1e-8, weight_decay=weight_decay)


@functools.partial(jax.jit, static_argnames=("batch_size", "max_epochs", "patience", "dropout",
                                             "multiclass", "lr", "weight_decay"))
def fit_probes(x_train, y_train, masks, run_keys, x_val, y_val, *, lr: float = 5e-4,
               weight_decay: float = 1e-6, batch_size: int = 48, max_epochs: int = 50,
               patience: int = 10, dropout: float = 0.0, multiclass: bool = False) -> dict:
  """Fit R linear probes at once (module docstring).

  Args:
    x_train, y_train: [N, D], [N, C] all training rows (features, 0/1 labels).
    masks: bool [R, N]: the rows of each run (a label fraction).
    run_keys: [R, 2] PRNG keys (init, order and dropout of each run).
    x_val, y_val: the validation split (early stopping on its loss).
  Returns:
    {"params": best-epoch params {w [R, D, C], b [R, C]}, "best_epoch" [R] (0-based),
     "best_loss" [R], "val_loss" [R, max_epochs] (NaN after a run stopped), "epochs" [R]
     (epochs run)}.
  """
  n, dim = x_train.shape
  num_classes = y_train.shape[1]
  steps = -(-n // batch_size)
  tx = make_tx(lr, weight_decay)
  counts = masks.sum(-1)

  def init_run(key):
    params = init_probe(jax.random.fold_in(key, 10_000_019), dim, num_classes)
    return params, tx.init(params)

  params0, opt0 = jax.vmap(init_run)(run_keys)

  def run_epoch(params, opt_state, key, mask, count, epoch, active):
    k_order, k_drop = _keys(key, epoch)
    order = epoch_order(k_order, mask)
    order = jnp.concatenate([order, jnp.zeros(steps * batch_size - n, order.dtype)])

    def step(carry, s):
      p, o = carry
      pos = s * batch_size + jnp.arange(batch_size)
      idx = order[pos]
      weight = (pos < count).astype(jnp.float32)
      x = _dropout(jax.random.fold_in(k_drop, s), x_train[idx], dropout)
      grads = jax.grad(loss_fn)(p, x, y_train[idx], weight, multiclass)
      updates, o2 = tx.update(grads, o, p)
      p2 = optax.apply_updates(p, updates)
      go = active & (s * batch_size < count)
      p = jax.tree.map(lambda a, b: jnp.where(go, a, b), p2, p)
      o = jax.tree.map(lambda a, b: jnp.where(go, a, b), o2, o)
      return (p, o), None

    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state), jnp.arange(steps))
    val = loss_fn(params, x_val, y_val, jnp.ones(x_val.shape[0]), multiclass)
    return params, opt_state, val

  def cond(carry):
    epoch, stopped = carry[0], carry[6]
    return (epoch < max_epochs) & ~jnp.all(stopped)

  def body(carry):
    epoch, params, opt_state, best_params, best_loss, best_epoch, stopped, since, hist = carry
    active = ~stopped
    params, opt_state, val = jax.vmap(run_epoch, in_axes=(0, 0, 0, 0, 0, None, 0))(
        params, opt_state, run_keys, masks, counts, epoch, active)
    better = active & (val < best_loss)
    sel = lambda a, b: jnp.where(better.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)
    best_params = jax.tree.map(sel, params, best_params)
    best_loss = jnp.where(better, val, best_loss)
    best_epoch = jnp.where(better, epoch, best_epoch)
    since = jnp.where(better, 0, jnp.where(active, since + 1, since))
    hist = hist.at[:, epoch].set(jnp.where(active, val, jnp.nan))
    stopped = stopped | (since >= patience)
    return epoch + 1, params, opt_state, best_params, best_loss, best_epoch, stopped, since, hist

  r = masks.shape[0]
  carry = (jnp.int32(0), params0, opt0, params0, jnp.full((r,), jnp.inf), jnp.zeros((r,), jnp.int32),
           jnp.zeros((r,), bool), jnp.zeros((r,), jnp.int32), jnp.full((r, max_epochs), jnp.nan))
  carry = jax.lax.while_loop(cond, body, carry)
  hist = carry[8]
  return {"params": carry[3], "best_loss": carry[4], "best_epoch": carry[5], "val_loss": hist,
          "epochs": jnp.sum(jnp.isfinite(hist), axis=1)}


def fit_one_reference(x_train, y_train, mask, run_key, x_val, y_val, *, lr=5e-4,
                      weight_decay=1e-6, batch_size=48, max_epochs=50, patience=10,
                      dropout=0.0, multiclass=False) -> dict:
  """The same fit for ONE run as a plain Python loop (test oracle of `fit_probes`): only the
  run's own rows, batches in its epoch order, no masking."""
  n, dim = x_train.shape
  tx = make_tx(lr, weight_decay)
  params = init_probe(jax.random.fold_in(run_key, 10_000_019), dim, y_train.shape[1])
  opt = tx.init(params)
  count = int(np.sum(mask))
  grad = jax.jit(jax.grad(loss_fn), static_argnums=4)
  best, best_params, best_epoch, since, hist = np.inf, params, 0, 0, []
  for epoch in range(max_epochs):
    k_order, k_drop = _keys(run_key, epoch)
    order = np.asarray(epoch_order(k_order, jnp.asarray(mask)))[:count]
    for s in range(-(-count // batch_size)):
      idx = order[s * batch_size:(s + 1) * batch_size]
      full = jnp.zeros((batch_size, dim), jnp.float32).at[:len(idx)].set(jnp.asarray(x_train)[idx])
      x = _dropout(jax.random.fold_in(k_drop, s), full, dropout)[:len(idx)]   # same bits
      g = grad(params, x, jnp.asarray(y_train)[idx], jnp.ones(len(idx)), multiclass)
      updates, opt = tx.update(g, opt, params)
      params = optax.apply_updates(params, updates)
    val = float(loss_fn(params, x_val, y_val, jnp.ones(len(x_val)), multiclass))
    hist.append(val)
    if val < best:
      best, best_params, best_epoch, since = val, params, epoch, 0
    else:
      since += 1
    if since >= patience:
      break
  return {"params": best_params, "best_loss": best, "best_epoch": best_epoch,
          "val_loss": np.asarray(hist)}


def scores_of(params, x, multiclass: bool) -> np.ndarray:
  """[R, N, C] probabilities (sigmoid, or softmax for multiclass) of every run."""
  logits = jnp.einsum("nd,rdc->rnc", jnp.asarray(x), params["w"]) + params["b"][:, None]
  return np.asarray(jax.nn.softmax(logits) if multiclass else jax.nn.sigmoid(logits))


class Evaluator:
  """Linear probe of one downstream dataset at several label fractions and seeds.

  Args (config.evals entry keys):
    downstream: tfds name of a built downstream dataset (`cxr_chexpert`, `cxr_nih14`,
      `cxr_rsna`, `cxr_covidx`, `cxr_chexpert/demo`, ...); data_dir its tfds folder.
    train_split / val_split / test_split: the builder's splits.
    fractions, fraction_seed: label fractions of the training split (fraction_ids).
    seeds: probe seeds (init, order, dropout) of every fraction.
    lr, weight_decay, batch_size, max_epochs, patience, dropout: the recipe.
    task: "auto" (multiclass when every label row is one-hot), "multilabel", "multiclass".
    feature: the encoder output probed ("image_feature" = the raw global feature).
    extract_batch_size, cache_dir ("" = no cache), max_examples (> 0: first N of each split).
    standardize: z-score the features with the training split's mean/std (not the papers'
      protocol; off by default — docs/transfer.md shows why it matters on the demo).
    solver: "adamw" (default: the papers' protocol above) or "lbfgs" (converged full-batch
      L2 logistic regression, C chosen on validation from `cs`, `max_iter` iterations at
      most: asg_jax/transfer/lbfgs_probe.py; rows of protocol `linear_probe_lbfgs`).
    fine_tune: train the encoder too (`asg_jax.transfer.fine_tune`: protocol
      "fine_tune", encoder lr `encoder_lr`, head lr `lr`, on the images; `extract_batch_size`
      is its eval batch, `num_devices` its mesh (0 = all)).
  """

  def __init__(self, predict_fns, *, data=None, downstream: str, data_dir: str = "",
               train_split: str = "train", val_split: str = "validation",
               test_split: str = "test", fractions: Sequence[float] = (0.01, 0.1, 1.0),
               seeds: Sequence[int] = (0, 1, 2), fraction_seed: int = 42, lr: float = 5e-4,
               weight_decay: float = 1e-6, batch_size: int = 48, max_epochs: int = 50,
               patience: int = 10, dropout: float = 0.0, task: str = "auto",
               feature: str = "image_feature", extract_batch_size: int = 64,
               cache_dir: str = "", max_examples: int = 0, standardize: bool = False,
               fine_tune: bool = False, encoder_lr: float = 1e-5, num_devices: int = 0,
               solver: str = "adamw", cs: Sequence[float] = (), max_iter: int = 500):
    del data                    # the pre-training SplitPass: not used
    if solver not in ("adamw", "lbfgs"):
      raise ValueError(f"linear_probe: solver={solver!r}; expected 'adamw' (the papers' "
                       "protocol) or 'lbfgs' (converged L2 logistic regression)")
    if solver == "lbfgs" and fine_tune:
      raise ValueError("linear_probe: solver='lbfgs' fits cached features; fine_tune=True "
                       "trains the encoder with AdamW")
    self.solver, self.max_iter = solver, int(max_iter)
    from asg_jax.transfer import lbfgs_probe  # pylint: disable=import-outside-toplevel
    self.cs = tuple(float(c) for c in (cs or lbfgs_probe.DEFAULT_GRID))
    self.fine_tune = None
    if fine_tune:               # the encoder trains too: asg_jax/evaluators/fine_tune.py
      if standardize or feature != "image_feature":
        raise ValueError("linear_probe with fine_tune=True: standardize / feature apply to "
                         "cached features only (fine-tuning reads the images)")
      from asg_jax.transfer import fine_tune as ft  # pylint: disable=import-outside-toplevel
      self.fine_tune = ft.Evaluator(
          predict_fns, downstream=downstream, data_dir=data_dir, train_split=train_split,
          val_split=val_split, test_split=test_split, fractions=fractions, seeds=seeds,
          fraction_seed=fraction_seed, lr=lr, encoder_lr=encoder_lr, weight_decay=weight_decay,
          batch_size=batch_size, eval_batch_size=extract_batch_size, max_epochs=max_epochs,
          patience=patience, dropout=dropout, task=task, num_devices=num_devices,
          max_examples=max_examples)
    self.standardize = standardize
    self.fns = predict_fns
    self.downstream, self.data_dir = downstream, data_dir
    self.splits = (train_split, val_split, test_split)
    self.fractions, self.seeds = tuple(float(f) for f in fractions), tuple(int(s) for s in seeds)
    self.fraction_seed = fraction_seed
    self.recipe = dict(lr=float(lr), weight_decay=float(weight_decay), batch_size=int(batch_size),
                       max_epochs=int(max_epochs), patience=int(patience),
                       dropout=float(dropout))
    self.task, self.feature = task, feature
    self.extract_batch_size, self.cache_dir = extract_batch_size, cache_dir
    self.max_examples = max_examples
    self.timing: dict[str, float] = {}
    self.fit: dict | None = None

  def features(self, state, init: str) -> dict[str, dict]:
    return {split: features.extract(self.fns, state, self.downstream, split, data_dir=self.data_dir,
                              keys=(self.feature,), batch_size=self.extract_batch_size,
                              cache_dir=self.cache_dir, tag=features.state_tag(state, init),
                              max_examples=self.max_examples)
            for split in self.splits}

  def run_masks(self, train_ids: Sequence[str], fraction_seeds: Sequence[int] = ()) -> np.ndarray:
    """bool [S, F, N]: the rows of each fraction (fraction_ids of the built split) drawn
    with each of `fraction_seeds` (default: the recipe's one, S = 1)."""
    from asg_jax.data.pipeline import downstream_input  # pylint: disable=import-outside-toplevel
    from asg_jax.data.builders import downstream as ds_lib  # pylint: disable=import-outside-toplevel
    b = downstream_input.builder(self.downstream, self.data_dir)
    all_ids = ds_lib.read_index(b)[self.splits[0]]["image_id"]
    if self.max_examples > 0:        # the subset actually extracted
      all_ids = list(train_ids)
    fraction_seeds = tuple(fraction_seeds) or (self.fraction_seed,)
    out = np.zeros((len(fraction_seeds), len(self.fractions), len(train_ids)), bool)
    present = set(train_ids)
    for s, seed in enumerate(fraction_seeds):
      for f, frac in enumerate(self.fractions):
        wanted = [i for i in ds_lib.select_fraction(all_ids, frac, seed) if i in present]
        out[s, f, downstream_input.select_rows(train_ids, wanted)] = True
    return out

  def rows(self, state, init: str = "pretrained") -> list[dict]:
    if self.fine_tune is not None:
      out = self.fine_tune.rows(state, init)
      self.timing = self.fine_tune.timing
      return out
    t0 = time.time()
    feats = self.features(state, init)
    t1 = time.time()
    tr, va, te = (dict(feats[s]) for s in self.splits)
    if self.standardize:        # z-score with the (unlabelled) training split's statistics
      mean, sd = tr[self.feature].mean(0), tr[self.feature].std(0) + 1e-6
      for f in (tr, va, te):
        f[self.feature] = (f[self.feature] - mean) / sd
    multiclass = is_multiclass(tr["labels"], self.task)
    nf, ns = len(self.fractions), len(self.seeds)
    keys = jnp.stack([jax.random.PRNGKey(s) for _ in range(nf) for s in self.seeds])
    if self.solver == "lbfgs":
      # a converged convex fit does not depend on its seed's initial point: seed s draws
      # the fraction's rows instead (fraction_seed + s), so the seed std is the spread over
      # label subsets (0 at 100 %: every seed has the same rows)
      per_seed = self.run_masks(tr["image_id"], [self.fraction_seed + s for s in self.seeds])
      masks = per_seed.transpose(1, 0, 2).reshape(nf * ns, -1)              # [F*S, N]
      return self._rows_lbfgs(tr, va, te, masks, keys, multiclass, init, t0, t1)
    fmask = self.run_masks(tr["image_id"])[0]
    masks = np.repeat(fmask, ns, axis=0)                              # [F*S, N]
    features.progress(f"  linear probe {self.downstream} ({init}): fitting {nf} fractions x {ns} "
                f"seeds = {nf * ns} probes on {tr[self.feature].shape} features")
    fit = fit_probes(jnp.asarray(tr[self.feature]), jnp.asarray(tr["labels"]), jnp.asarray(masks),
                     keys, jnp.asarray(va[self.feature]), jnp.asarray(va["labels"]),
                     multiclass=multiclass, **self.recipe)
    fit = jax.device_get(fit)
    t2 = time.time()
    scores = scores_of(fit["params"], te[self.feature], multiclass)  # [R, N, C]
    names = features.class_names(self.downstream, self.data_dir)
    out = classification_rows(self.downstream, PROTOCOL, self.fractions,
                              [[scores[f * ns + s] for s in range(ns)] for f in range(nf)],
                              te["labels"], names, multiclass, init,
                              suffix="_zscored" if self.standardize else "")
    n_train = int(tr[self.feature].shape[0])
    self.fit = fit
    self.timing = {"extract_s": t1 - t0, "fit_s": t2 - t1, "num_probes": nf * ns,
                   "train_examples": n_train,
                   "examples_per_fraction": [int(m.sum()) for m in fmask],
                   "epochs": [int(e) for e in fit["epochs"]]}
    features.progress(f"  linear probe {self.downstream} ({init}): fit {t2 - t1:.1f}s, epochs run "
                f"{self.timing['epochs']}")
    return out

  def _rows_lbfgs(self, tr, va, te, masks, keys, multiclass, init, t0, t1):
    """`solver="lbfgs"`: every fraction × seed × C fitted (asg_jax/transfer/lbfgs_probe.py:
    one vmapped fit per fraction on its own rows, equal row sets once), C chosen per run on
    the validation loss; rows of protocol `linear_probe_lbfgs`."""
    from asg_jax.transfer import lbfgs_probe  # pylint: disable=import-outside-toplevel
    nf, ns = len(self.fractions), len(self.seeds)
    features.progress(f"  linear probe {self.downstream} ({init}): L-BFGS, {nf} fractions x {ns} "
                      f"seeds x {len(self.cs)} C = {nf * ns * len(self.cs)} fits on "
                      f"{tr[self.feature].shape} features")
    fit = lbfgs_probe.fit_runs(tr[self.feature], tr["labels"], masks, keys, self.cs,
                               multiclass=multiclass, max_iter=self.max_iter)
    val = lbfgs_probe.validation_losses(fit, va[self.feature], va["labels"], multiclass)
    chosen, best = lbfgs_probe.select(fit, val)
    t2 = time.time()
    scores = lbfgs_probe.probabilities(chosen["w"], chosen["b"], te[self.feature], multiclass)
    names = features.class_names(self.downstream, self.data_dir)
    out = classification_rows(self.downstream, PROTOCOL + "_lbfgs", self.fractions,
                              [[scores[f * ns + s] for s in range(ns)] for f in range(nf)],
                              te["labels"], names, multiclass, init,
                              suffix="_zscored" if self.standardize else "")
    self.fit = dict(fit, val_loss=val, chosen=best)
    self.timing = {"extract_s": t1 - t0, "fit_s": t2 - t1, "num_fits": int(np.prod(val.shape)),
                   "train_examples": int(tr[self.feature].shape[0]),
                   "examples_per_fraction": [int(masks[f * ns].sum()) for f in range(nf)],
                   "c": [self.cs[i] for i in best],
                   "iterations_max": int(np.max(fit["iterations"])),
                   # of each run's chosen C: = max_iter means stopped short of tol
                   "iterations_chosen": [int(fit["iterations"][r, i]) for r, i in enumerate(best)]}
    features.progress(f"  linear probe {self.downstream} ({init}): L-BFGS fit {t2 - t1:.1f}s, C "
                      f"chosen {self.timing['c']}, iterations {self.timing['iterations_chosen']} (all C: <= "
                      f"{self.timing['iterations_max']})")
    return out

  def run(self, state):
    yield from table.yield_rows(self.rows(state, getattr(state, "init", "pretrained")))
