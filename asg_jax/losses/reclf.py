"""RECLF objectives: the semantic contrastive loss with its soft targets, and the GLoRIA
local-loss baseline (reclf.md; docs/reclf.md).

RECLF (Li et al., IEEE TMI 2025) released no code and its equations were not available to
this project: everything here is the project's RECONSTRUCTION from what the paper states
(docs/reclf.md separates the two). All functions are pure and jittable.

The local matching itself (word–patch attention, matching features, SRM, IRM weights,
pooling, the blocked / sharded pairwise local similarity) is model code:
`asg_jax.models.local_matching`, with the learned weights in
`asg_jax.models.relation.LocalMatchingHead`; the public loss API (`asg_jax.losses`) exports
its similarity functions.

Rows of every `[B, B]` matrix are images, columns reports.
"""
from __future__ import annotations

from typing import Mapping

import jax
import jax.numpy as jnp

from asg_jax.models.l2norm import l2_normalize
from asg_jax.models.local_matching import gloria_local_similarity

_EPS = 1e-12


# ---------------------------------------------------------------- contrastive losses


def symmetric_cross_entropy(logits: jax.Array) -> jax.Array:
  """Plain symmetric InfoNCE: ½·[CE_rows(X, diag) + CE_cols(X, diag)] (the MEAN of the two
  directions; ASG's `ira_loss` is their SUM, i.e. 2× this). `[B, B]` -> scalar."""
  logits = logits.astype(jnp.float32)
  diag = jnp.diagonal(logits)
  i2t = jax.nn.logsumexp(logits, axis=1) - diag
  t2i = jax.nn.logsumexp(logits, axis=0) - diag
  return 0.5 * (jnp.mean(i2t) + jnp.mean(t2i))


def semantic_soft_targets(similarity: jax.Array | None, beta: float = 0.2,
                          size: int | None = None) -> jax.Array:
  """Q = row-L1-normalise((1-β)·I + β·S) `[B, B]` (S clipped at 0; S None or β = 0: Q = I)."""
  if similarity is None or beta == 0:
    return jnp.eye(size if similarity is None else similarity.shape[0], dtype=jnp.float32)
  s = jnp.maximum(similarity.astype(jnp.float32), 0)
  q = (1.0 - beta) * jnp.eye(s.shape[0], dtype=jnp.float32) + beta * s
  return q / jnp.maximum(jnp.sum(q, axis=1, keepdims=True), _EPS)


def semantic_contrastive_loss(logits: jax.Array, similarity: jax.Array | None = None,
                              beta: float = 0.2, *, targets: jax.Array | None = None
                              ) -> jax.Array:
  """Semantic (soft-target) contrastive loss over a `[B, B]` logit matrix.

  L = ½·[ −(1/B)·Σ_i Σ_j Q_ij·log softmax_j(X_i·) − (1/B)·Σ_j Σ_i Q_ji·log softmax_i(X_·j) ]
  with Q = `semantic_soft_targets(similarity, beta)` (or `targets`). β = 0 (or no similarity) gives
  `symmetric_cross_entropy(logits)` — the mean, not the sum, of the two directions.

  Args:
    logits: `[B, B]` rows images, columns reports.
    similarity: `[B, B]` symmetric semantic similarity S of the reports (see
      `semantic_similarity`), treated as a constant.
    targets: explicit `[B, B]` Q (rows summing to 1) instead of (similarity, beta).
  Returns:
    scalar.
  """
  logits = logits.astype(jnp.float32)
  q = targets if targets is not None else semantic_soft_targets(similarity, beta, logits.shape[0])
  q = jax.lax.stop_gradient(q.astype(jnp.float32))
  i2t = -jnp.sum(q * jax.nn.log_softmax(logits, axis=1), axis=1)
  t2i = -jnp.sum(q * jax.nn.log_softmax(logits, axis=0).T, axis=1)
  return 0.5 * (jnp.mean(i2t) + jnp.mean(t2i))


def label_vectors(batch: Mapping[str, jax.Array], label_source: str,
                  chexpert_uncertain: float = 1.0) -> jax.Array:
  """Non-negative label vectors `[B, K]` for the semantic similarity.

  - 'tags' (`[B, 40]` in {1, 0, -1}): 1 → 1; 0 (absent) and -1 (not mentioned) → 0, as ASG.
  - 'chexpert' (`[B, 14]` in {1, 0, -1, NaN}): 1 → 1; -1 (uncertain) → `chexpert_uncertain`
    (default 1: "U-ones", a possible finding is still that finding); 0 (negative) and NaN
    (not mentioned) → 0.
  """
  if label_source == "tags":
    return (batch["tags"] == 1).astype(jnp.float32)
  if label_source == "chexpert":
    y = batch["chexpert"].astype(jnp.float32)
    return jnp.where(y == 1, 1.0, jnp.where(y == -1, chexpert_uncertain, 0.0))
  raise ValueError(f"label_source = {label_source!r} has no label vectors")


def semantic_similarity(batch: Mapping[str, jax.Array] | None = None,
                        text_emb: jax.Array | None = None, label_source: str = "tags",
                        chexpert_uncertain: float = 1.0) -> jax.Array:
  """S `[B, B]`: cosine similarity of label vectors ('tags' / 'chexpert'), or of the
  DETACHED global report embeddings ('embedding'); 'auto' = tags, else chexpert, else
  embedding, by what the batch holds. Clipped at 0; no gradient. A report with an all-zero
  label vector has a zero row and column (its soft target is one-hot).
  """
  if label_source == "auto":
    keys = () if batch is None else tuple(batch)
    label_source = "tags" if "tags" in keys else "chexpert" if "chexpert" in keys \
        else "embedding"
  if label_source == "embedding":
    if text_emb is None:
      raise ValueError("label_source='embedding' needs text_emb")
    y = l2_normalize(jax.lax.stop_gradient(text_emb.astype(jnp.float32)))
  else:
    y = l2_normalize(label_vectors(batch, label_source, chexpert_uncertain))
  return jax.lax.stop_gradient(jnp.maximum(y @ y.T, 0.0))


def retrieval_top1(logits: jax.Array) -> jax.Array:
  """In-batch top-1 retrieval (mean of image→report and report→image) from `[B, B]`; a
  pair counts as retrieved if no candidate scores strictly higher."""
  diag = jnp.diagonal(logits)
  i2t = jnp.mean(jnp.sum(logits > diag[:, None], axis=1) == 0)
  t2i = jnp.mean(jnp.sum(logits > diag[None, :], axis=0) == 0)
  return 0.5 * (i2t + t2i)


def gloria_local_loss(patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array, *,
                      gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0,
                      word_softmax_first: bool = False,
                      block_size: int | None = None) -> jax.Array:
  """GLoRIA local loss: symmetric CE (mean of both directions) over γ3·R, R from
  `gloria_local_similarity`. `[B, M, E]`, `[B, N, E]`, `[B, N]` -> scalar."""
  r = gloria_local_similarity(patch_emb, word_emb, word_mask, gamma1=gamma1, gamma2=gamma2,
                              word_softmax_first=word_softmax_first, block_size=block_size)
  return symmetric_cross_entropy(gamma3 * r)


def reclf_objective(outputs: Mapping[str, jax.Array], batch: Mapping[str, jax.Array] | None,
                    *, beta: float = 0.2, temperature: float = 0.07,
                    local_temperature: float = 0.1, lambda_local: float = 1.0,
                    label_source: str = "tags", gloria: bool = False, gamma3: float = 10.0,
                    chexpert_uncertain: float = 1.0, semantic_local: bool = True
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """RECLF (or GLoRIA) total loss L = L_global + λ_local·L_local.

  RECLF: global logits v·tᵀ/τ, local logits R/τ_l, both with `semantic_contrastive_loss`
  and the same Q (β, `label_source`; `semantic_local` False uses hard targets locally).
  GLoRIA (`gloria`): global logits γ3·cos(v, t), local logits γ3·R, symmetric CE (β is
  still honoured; the GLoRIA rung sets β = 0).

  Args:
    outputs: model outputs with `image_emb [B, E]`, `text_emb [B, E]`, `local_logits [B, B]`
      (the head's local similarity R, unscaled).
    batch: the batch (`tags [B, 40]` or `chexpert [B, 14]` for label sources), or None.
  Returns:
    (loss, measurements) with `loss`, `global_loss`, `local_loss`, `global_top1`,
    `local_top1`.
  """
  v = outputs["image_emb"].astype(jnp.float32)
  t = outputs["text_emb"].astype(jnp.float32)
  r = outputs["local_logits"].astype(jnp.float32)
  cos = jnp.einsum("id,jd->ij", v, t)
  if gloria:
    global_logits, local_logits = gamma3 * cos, gamma3 * r
  else:
    global_logits, local_logits = cos / temperature, r / local_temperature
  similarity = None
  if beta:
    similarity = semantic_similarity(batch, t, label_source, chexpert_uncertain)
  q = semantic_soft_targets(similarity, beta, cos.shape[0])
  global_loss = semantic_contrastive_loss(global_logits, targets=q)
  local_q = q if semantic_local else jnp.eye(cos.shape[0], dtype=jnp.float32)
  local_loss = semantic_contrastive_loss(local_logits, targets=local_q)
  loss = global_loss + lambda_local * local_loss
  return loss, {"loss": loss, "global_loss": global_loss, "local_loss": local_loss,
                "global_top1": retrieval_top1(cos), "local_top1": retrieval_top1(r)}
