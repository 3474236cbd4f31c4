"""ASG objectives: ARSA (region–sentence), IRL (tag BCE) and the total loss (asg.md, Losses).

IRA and ERL (the global, `[B, B]` terms) live in `contrastive.py`; see docs/asg.md for the
equation → function map. Every function is pure, jittable, differentiable and NaN-free on the
edge cases (B = 1, images without valid regions, a batch without any, studies without tags).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from asg_jax.losses.contrastive import contrastive_terms
from asg_jax.losses.roi_align import roi_align

_NEG = -1e30  # masked logit: finite, so fully-masked rows stay NaN-free


def sentence_features(word_emb: jax.Array, region_word_index: jax.Array) -> jax.Array:
  """S_r = mean of the word embeddings at the positions I_r (asg.md §2), not re-normalised.

  Args:
    word_emb: `[B, N, D]` normalised aggregated-word embeddings.
    region_word_index: `[B, R, K]` int positions in `[0, N)` of each region's words; -1 (and any
      value outside `[0, N)`) is padding.
  Returns:
    `[B, R, D]` float32; a region with no word gives 0 (the count is clamped to ≥ 1).
  """
  n = word_emb.shape[1]
  # [B, R, N] multiplicity of each word slot in I_r (a fused compare-and-reduce, no gather)
  counts = jnp.sum((region_word_index[..., None] == jnp.arange(n)).astype(jnp.float32), axis=-2)
  total = jnp.sum(counts, axis=-1, keepdims=True)
  summed = jnp.einsum("brn,bnd->brd", counts, word_emb.astype(jnp.float32))
  return summed / jnp.maximum(total, 1.0)


def arsa_loss(region_emb: jax.Array, sentence_emb: jax.Array, region_mask: jax.Array,
              temperature: float = 0.07) -> jax.Array:
  """Anatomical region–sentence alignment (asg.md §2): per-image InfoNCE, both directions.

  A_rs = R_r·S_s / τ over the valid regions of one image (invalid rows and columns masked);
  positives on the diagonal. L = Σ (row CE + column CE) over the valid (image, region) pairs of
  the whole batch / their number (vmapped over images).

  Args:
    region_emb: `[B, R, D]` region features (RoIAlign of the patch embeddings).
    sentence_emb: `[B, R, D]` sentence features of the same regions.
    region_mask: `[B, R]` bool, valid regions.
    temperature: τ.
  Returns:
    scalar float32; equal scores with n valid regions per image give 2·log n; an image without
    valid regions contributes nothing; a batch without any gives 0.
  """
  region_mask = region_mask.astype(bool)

  def per_image(r, s, m):
    scores = jnp.einsum("rd,sd->rs", r.astype(jnp.float32), s.astype(jnp.float32))
    scores = scores / temperature
    scores = jnp.where(m[:, None] & m[None, :], scores, _NEG)
    diag = jnp.diagonal(scores)
    row = jax.nn.logsumexp(scores, axis=1) - diag
    col = jax.nn.logsumexp(scores, axis=0) - diag
    return jnp.sum(jnp.where(m, row + col, 0.0))

  total = jnp.sum(jax.vmap(per_image)(region_emb, sentence_emb, region_mask))
  count = jnp.sum(region_mask.astype(jnp.float32))
  return total / jnp.maximum(count, 1.0)


def tag_bce_loss(logits: jax.Array, tags: jax.Array) -> jax.Array:
  """IRL tag recognition (asg.md §3): mean over B×T of BCE with logits, y = (tags == 1).

  Args:
    logits: `[B, T]` tag logits.
    tags: `[B, T]` in {1, 0, -1} (-1 "not mentioned" counts as 0).
  Returns:
    scalar float32; zero logits give log 2.
  """
  x = logits.astype(jnp.float32)
  y = (tags == 1).astype(jnp.float32)
  # max(x, 0) - x·y + log(1 + exp(-|x|)): stable for any |x|
  return jnp.mean(jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))


def region_features(patch_emb: jax.Array, region_boxes: jax.Array, *,
                    grid: Sequence[int] = (14, 14), input_size: int | Sequence[int] = 224
                    ) -> jax.Array:
  """ARSA region features: RoIAlign (1×1, torchvision semantics) of the patch-embedding map.

  Args:
    patch_emb: `[B, M, E]` with M = gh·gw (row-major patch order).
    region_boxes: `[B, R, 4]` (x1, y1, x2, y2) in input pixels; scaled by grid / input_size.
    grid: `(gh, gw)` the static patch grid.
    input_size: the input side (or `(height, width)`) the boxes refer to.
  Returns:
    `[B, R, E]`.
  """
  gh, gw = grid
  size_h, size_w = ((input_size, input_size) if isinstance(input_size, (int, float))
                    else tuple(input_size))
  if patch_emb.shape[1] != gh * gw:
    raise ValueError(f"patch_emb has {patch_emb.shape[1]} tokens, grid {grid} needs {gh * gw}")
  fmap = patch_emb.reshape(patch_emb.shape[0], gh, gw, patch_emb.shape[-1])
  scale = jnp.asarray([gw / size_w, gh / size_h, gw / size_w, gh / size_h], jnp.float32)
  return roi_align(fmap, region_boxes.astype(jnp.float32) * scale)


def asg_objective(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array], *,
                  weights: Sequence[float] = (1.0, 1.0, 5.0, 1.0), use_ira: bool = True,
                  use_arsa: bool = True, use_irl: bool = True, use_erl: bool = True,
                  temperature: float = 0.07, mix: float = 0.2,
                  grid: Sequence[int] = (14, 14), input_size: int = 224,
                  global_batch: bool = True) -> tuple[jax.Array, dict[str, Any]]:
  """The ASG loss L = w1·L_IRA + w2·L_ARSA + w3·L_BCE + w4·L_soft (asg.md, Total).

  Args:
    outputs: named model outputs (docs/interfaces.md §3): `image_emb [B,E]`, `text_emb [B,E]`,
      and as needed `patch_emb [B,M,E]`, `word_emb [B,N,E]` (ARSA), `tag_logits [B,T]` (IRL).
    batch: batch keys (§2): `region_boxes [B,R,4]` in input pixels, `region_mask [B,R]`,
      `region_word_index [B,R,K]` (ARSA), `tags [B,T]` (IRL, ERL).
    weights: `(w_ira, w_arsa, w_irl, w_erl)`, ASG: (1, 1, 5, 1).
    use_ira, use_arsa, use_irl, use_erl: switches of the four terms (ablations).
    temperature, mix: τ and the ERL soft-target mix.
    grid, input_size: the patch grid and the input side (box scaling: grid / input_size).
    global_batch: IRA/ERL over the global batch (True) or per device as released (False).
  Returns:
    `(loss, measurements)`: measurements are float32 scalars: `loss`, each enabled term
    unweighted (`ira`, `arsa`, `irl`, `erl`), and in-batch retrieval `i2t_top{1,5}`,
    `t2i_top{1,5}`, `top{1,5}` (mean of the two directions) over the same (global or local)
    batch as the contrastive terms.
  """
  w_ira, w_arsa, w_irl, w_erl = (float(w) for w in weights)
  need = {"image_emb", "text_emb"}
  if use_arsa:
    need |= {"patch_emb", "word_emb"}
  if use_irl:
    need |= {"tag_logits"}
  missing = sorted(k for k in need if k not in outputs)
  if missing:
    raise KeyError(f"asg_objective needs the model outputs {missing} (docs/interfaces.md §3)")

  terms = contrastive_terms(
      outputs["image_emb"], outputs["text_emb"], batch["tags"] if use_erl else None,
      temperature=temperature, mix=mix, global_batch=global_batch, ira=use_ira, soft=use_erl,
      retrieval=True)
  measurements = {k: v for k, v in terms.items() if k not in ("ira", "soft")}
  loss = jnp.zeros((), jnp.float32)
  if use_ira:
    measurements["ira"] = terms["ira"]
    loss = loss + w_ira * terms["ira"]
  if use_erl:
    measurements["erl"] = terms["soft"]
    loss = loss + w_erl * terms["soft"]
  if use_arsa:
    regions = region_features(outputs["patch_emb"], batch["region_boxes"], grid=grid,
                              input_size=input_size)
    sentences = sentence_features(outputs["word_emb"], batch["region_word_index"])
    arsa = arsa_loss(regions, sentences, batch["region_mask"], temperature)
    measurements["arsa"] = arsa
    loss = loss + w_arsa * arsa
  if use_irl:
    irl = tag_bce_loss(outputs["tag_logits"], batch["tags"])
    measurements["irl"] = irl
    loss = loss + w_irl * irl
  measurements["loss"] = loss
  return loss, measurements
