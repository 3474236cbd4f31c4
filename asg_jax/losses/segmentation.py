"""Segmentation loss and metric of the transfer protocol (data.md "Evaluation protocols").

    loss = 10 * focal(logits, masks, gamma=2) - log(soft_dice(logits, masks))
    dice = per_image_dice(logits, masks)          # [B], threshold 0.5, empty-mask rule

As MGCA's `MixedLoss(alpha=10, gamma=2)` (GLoRIA's segmentation code):

* `focal_loss`: the mean over every pixel of `BCE(x, t) * (1 - p_t)^gamma`, `p_t` the
  predicted probability of the true class (no alpha weighting);
* `soft_dice`: ONE soft Dice over the whole batch, flattened: `(2 * sum(p * t) + 1) /
  (sum(p) + sum(t) + 1)` with `p = sigmoid(x)` (smooth = 1). Its sums run over the global
  batch, so the value is the same however the batch is sharded.

The metric is per image: the prediction is `sigmoid(x) > 0.5` (i.e. `x > 0`); Dice =
`2 |P ∩ G| / (|P| + |G|)`; an image whose ground truth is empty scores 1 when the
prediction is empty too, else 0; the evaluator averages over the images.

All functions take `logits` and `masks` of the same shape `[B, H, W(, 1)]` (masks in {0, 1})
and an optional `weight [B]` (0 = a padding row, ignored).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

FOCAL_WEIGHT = 10.0
GAMMA = 2.0
SMOOTH = 1.0


def _per_row(x: jax.Array) -> jax.Array:
  return x.reshape(x.shape[0], -1)


def _weights(x: jax.Array, weight: jax.Array | None) -> jax.Array:
  if weight is None:
    return jnp.ones((x.shape[0],), jnp.float32)
  return jnp.asarray(weight, jnp.float32)


def focal_loss(logits: jax.Array, masks: jax.Array, gamma: float = GAMMA,
               weight: jax.Array | None = None) -> jax.Array:
  """Mean over the (valid rows') pixels of `BCE(x, t) * (1 - p_t)^gamma` (scalar)."""
  x = _per_row(logits).astype(jnp.float32)
  t = _per_row(masks).astype(jnp.float32)
  bce = jnp.maximum(x, 0.0) - x * t + jnp.log1p(jnp.exp(-jnp.abs(x)))
  # log(1 - p_t) = log sigmoid(-x) for t = 1, log sigmoid(x) for t = 0
  log_one_minus_pt = jax.nn.log_sigmoid(-x * (2.0 * t - 1.0))
  per_pixel = jnp.exp(gamma * log_one_minus_pt) * bce
  w = _weights(x, weight)
  return jnp.sum(per_pixel * w[:, None]) / jnp.maximum(jnp.sum(w) * x.shape[1], 1.0)


def soft_dice(logits: jax.Array, masks: jax.Array, smooth: float = SMOOTH,
              weight: jax.Array | None = None) -> jax.Array:
  """One soft Dice over the whole (valid part of the) batch, in (0, 1] (scalar)."""
  p = jax.nn.sigmoid(_per_row(logits).astype(jnp.float32))
  t = _per_row(masks).astype(jnp.float32)
  w = _weights(p, weight)[:, None]
  inter = jnp.sum(p * t * w)
  return (2.0 * inter + smooth) / (jnp.sum(p * w) + jnp.sum(t * w) + smooth)


def segmentation_loss(logits: jax.Array, masks: jax.Array, weight: jax.Array | None = None,
                      focal_weight: float = FOCAL_WEIGHT, gamma: float = GAMMA
                      ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`focal_weight * focal - log(soft Dice)` -> (loss, {"focal", "soft_dice"})."""
  focal = focal_loss(logits, masks, gamma, weight)
  dice = soft_dice(logits, masks, SMOOTH, weight)
  return focal_weight * focal - jnp.log(dice), {"focal": focal, "soft_dice": dice}


def per_image_dice(logits: jax.Array, masks: jax.Array) -> jax.Array:
  """`[B]` Dice of `logits > 0` (sigmoid > 0.5) against `masks`, with the empty-mask rule
  (empty ground truth: 1 if the prediction is empty, else 0)."""
  pred = _per_row(logits) > 0.0
  gt = _per_row(masks) > 0.5
  inter = jnp.sum(pred & gt, axis=1).astype(jnp.float32)
  total = (jnp.sum(pred, axis=1) + jnp.sum(gt, axis=1)).astype(jnp.float32)
  return jnp.where(total > 0, 2.0 * inter / jnp.maximum(total, 1.0), 1.0)


def objective(outputs: dict, batch: dict) -> tuple[jax.Array, dict[str, jax.Array]]:
  """The train step's objective (`asg_jax.train.make_train_step`): `outputs["logits"]`
  against `outputs["mask"]` (the target after the model's augmentation) -> (loss,
  {"focal", "soft_dice", "dice"}), `dice` the batch's mean per-image Dice."""
  del batch
  logits, masks = outputs["logits"], outputs["mask"]
  loss, terms = segmentation_loss(logits, masks)
  return loss, dict(terms, dice=jnp.mean(per_image_dice(logits, masks)))
