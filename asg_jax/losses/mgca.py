"""MGCA (Wang et al., NeurIPS 2022) objectives, equal to the released
`mgca/models/mgca/mgca_module.py` (HKU-MedAI/MGCA) on the same tensors.

L = λ1·ITA + λ2·L_local + λ3·L_proto, (λ1, λ2, λ3) = (1, 0.7, 0.5) (the module's defaults):

* ITA (instance level): CE(image→report) + CE(report→image) over v·t / 0.07 —
  `contrastive.ira_loss`, global batch by default (the release computes it per device).
* CTA (token level), `mgca_local_loss`: every word attends to the patches (softmax of
  w·p / τ_l, τ_l = 0.1), the attended context is L2-normalised, and the `[W, W]` matrix
  w_n·c_m / τ_l is scored with CE both ways (targets = own index), each word weighted by
  `mgca_word_weights` (the text tower's last-layer [CLS] attention, clipped to its 10th–90th
  percentile over the real words, normalised). Symmetrically every patch attends to the real
  words (padding masked), scored over `[P, P]` and weighted by `mgca_patch_weights` (the ViT's
  last-block [CLS] attention, head mean, clipped to its 10th–90th percentile, normalised). As
  released, the ViT path does NOT normalise the patch's attended context; the CNN path does and
  weights the patches uniformly (`patch_weights=None`). Each part is the mean of its two
  directions; per example the weighted CE terms are summed; the result is averaged over the
  batch. As released, PADDED word slots are still candidates in both word-level CEs (only their
  weight is 0); the patch→word attention masks them.
* CPA (prototype level), `mgca_prototype_loss`: scores against K = 500 L2-normalised
  prototypes, Sinkhorn–Knopp codes (ε = 0.05, 3 iterations; `sinkhorn_knopp`) and the swapped
  prediction −Σ q·log softmax(s / 0.2), averaged over the two swaps.

All functions are pure and jittable with static shapes; the percentile clip sorts with masks
inside the program (no host round trip). The [CLS] attention weights and the Sinkhorn codes
carry no gradient (`torch.no_grad` in the release). Batch sums (the Sinkhorn marginals, the
batch means) are over the GLOBAL batch: automatic for `jit` on batch-sharded global arrays, and
all-reduced over `data` inside a `shard_map` (see `convirt.data_parallel`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp

from asg_jax.losses.contrastive import _data_axis, contrastive_terms
from asg_jax.losses.convirt import data_parallel
from asg_jax.models.l2norm import l2_normalize
from asg_jax.parallel import DATA_AXIS

_NEG = -1e30  # masked attention logit: finite, so a report without real words stays NaN-free


# ---------------------------------------------------------------- [CLS]-attention weights


def masked_quantile(x: jax.Array, mask: jax.Array, q: float) -> jax.Array:
  """`torch.quantile(x[mask], q)` (linear interpolation) for every row, with static shapes.

  Args:
    x: `[B, N]` values.
    mask: bool `[B, N]`, the entries of each row that count.
    q: the quantile in [0, 1].
  Returns:
    `[B]` float32; 0 for a row without any counted entry.
  """
  x = x.astype(jnp.float32)
  mask = mask.astype(bool)
  count = jnp.sum(mask, axis=-1)                                       # [B]
  ordered = jnp.sort(jnp.where(mask, x, jnp.inf), axis=-1)             # real values first
  rank = jnp.float32(q) * (jnp.maximum(count, 1) - 1).astype(jnp.float32)
  lo, hi = jnp.floor(rank), jnp.ceil(rank)
  v_lo = jnp.take_along_axis(ordered, lo.astype(jnp.int32)[:, None], axis=-1)[:, 0]
  v_hi = jnp.take_along_axis(ordered, hi.astype(jnp.int32)[:, None], axis=-1)[:, 0]
  w = rank - lo
  # torch.lerp's two-sided form (the same rounding as torch.quantile)
  value = jnp.where(w < 0.5, v_lo + w * (v_hi - v_lo), v_hi - (v_hi - v_lo) * (1.0 - w))
  return jnp.where(count > 0, value, 0.0)


def _clip_and_normalise(a: jax.Array, real: jax.Array, low: float, high: float) -> jax.Array:
  lo = masked_quantile(a, real, low)[:, None]
  hi = masked_quantile(a, real, high)[:, None]
  w = jnp.where(real, jnp.clip(a, lo, hi), 0.0)
  total = jnp.sum(w, axis=-1, keepdims=True)
  return jnp.where(total > 0, w / jnp.where(total > 0, total, 1.0), 0.0)


def mgca_word_weights(cls_attention: jax.Array, word_mask: jax.Array, low: float = 0.1,
                      high: float = 0.9) -> jax.Array:
  """MGCA's word weights: [CLS] attention clipped to its [low, high] quantiles, normalised.

  The clip bounds are `torch.quantile` (linear interpolation) over the real words of each
  report; the clipped values are normalised to sum 1 over the report. As released, "real"
  means the NON-ZERO attention entries (`atten_weight.nonzero()`); here: `word_mask` and
  non-zero (a word with exactly zero attention is left out of the quantiles and weighs 0,
  as in the release). No gradient.

  Args:
    cls_attention: `[B, W]` the text tower's last-layer [CLS]→word attention, mean over heads,
      word pieces summed into words (the model's `word_importance`; any positive scale).
    word_mask: bool `[B, W]`, True = real word slot.
    low, high: the clip quantiles (0.1, 0.9).
  Returns:
    `[B, W]` float32, rows sum to 1 (an all-zero row when a report has no real word).
  """
  a = jax.lax.stop_gradient(cls_attention.astype(jnp.float32))
  real = word_mask.astype(bool) & (a != 0)
  return _clip_and_normalise(a, real, low, high)


def mgca_patch_weights(cls_attention: jax.Array, low: float = 0.1,
                       high: float = 0.9) -> jax.Array:
  """MGCA's ViT patch weights: [CLS]→patch attention clipped to its [low, high] quantiles over
  all patches, normalised. No gradient.

  Args:
    cls_attention: `[B, P]` the last ViT block's [CLS]→patch attention, mean over heads, or
      `[B, H, P]` (averaged over H here), i.e. `attention[:, :, 0, 1:]`.
    low, high: the clip quantiles (0.1, 0.9).
  Returns:
    `[B, P]` float32, rows sum to 1.
  """
  a = jax.lax.stop_gradient(cls_attention.astype(jnp.float32))
  if a.ndim == 3:
    a = jnp.mean(a, axis=1)
  return _clip_and_normalise(a, jnp.ones(a.shape, bool), low, high)


# ------------------------------------------------------------------------ token level


def _weighted_two_way_ce(sim: jax.Array, weights: jax.Array) -> jax.Array:
  """`[B, N, N]` logits (targets = own index both ways), `[B, N]` weights -> `[B]`:
  ½·Σ_n w_n·(CE(row n) + CE(column n))."""
  diag = jnp.diagonal(sim, axis1=1, axis2=2)                           # [B, N]
  rows = jax.nn.logsumexp(sim, axis=2) - diag
  cols = jax.nn.logsumexp(sim, axis=1) - diag
  return 0.5 * jnp.sum(weights * (rows + cols), axis=1)


def _batch_mean(per_example: jax.Array) -> jax.Array:
  """Mean over the global batch (a `psum` inside a caller's shard_map over `data`)."""
  b = per_example.shape[0]
  n, manual = _data_axis(b)
  if manual:
    return jax.lax.psum(jnp.sum(per_example), DATA_AXIS) / (b * n)
  return jnp.mean(per_example)


def _local_terms(word_emb, patch_emb, word_weights, word_mask, patch_weights, temperature,
                 bidirectional=True) -> dict[str, jax.Array]:
  if word_emb.ndim != 3 or patch_emb.ndim != 3 or word_emb.shape[0] != patch_emb.shape[0]:
    raise ValueError(f"word_emb {word_emb.shape} and patch_emb {patch_emb.shape} must be "
                     "[B, W, D] and [B, P, D]")
  w = word_emb.astype(jnp.float32)
  p = patch_emb.astype(jnp.float32)
  word_w = jax.lax.stop_gradient(word_weights.astype(jnp.float32))

  # words -> patches (nothing to mask: every patch is real)
  attn = jax.nn.softmax(jnp.einsum("bwd,bpd->bwp", w, p) / temperature, axis=-1)
  ctx = l2_normalize(jnp.einsum("bwp,bpd->bwd", attn, p))
  word_sim = jnp.einsum("bnd,bmd->bnm", w, ctx) / temperature          # [B, W, W]
  out = {"local_word": _batch_mean(_weighted_two_way_ce(word_sim, word_w))}
  if not bidirectional:
    return out

  # patches -> real words
  scores = jnp.einsum("bpd,bwd->bpw", p, w) / temperature
  scores = jnp.where(word_mask.astype(bool)[:, None, :], scores, _NEG)
  ctx = jnp.einsum("bpw,bwd->bpd", jax.nn.softmax(scores, axis=-1), w)
  if patch_weights is None:              # CNN path: normalised context, uniform weights
    ctx = l2_normalize(ctx)
    patch_w = jnp.full(p.shape[:2], 1.0 / p.shape[1], jnp.float32)
  else:                                  # ViT path: the context is NOT normalised (release)
    patch_w = jax.lax.stop_gradient(patch_weights.astype(jnp.float32))
  patch_sim = jnp.einsum("bpd,bqd->bpq", p, ctx) / temperature         # [B, P, P]
  out["local_patch"] = _batch_mean(_weighted_two_way_ce(patch_sim, patch_w))
  return out


def mgca_local_loss(word_emb: jax.Array, patch_emb: jax.Array, word_weights: jax.Array,
                    word_mask: jax.Array, patch_weights: jax.Array | None = None,
                    temperature: float = 0.1) -> jax.Array:
  """MGCA's cross-attention token alignment (CTA): loss_word + loss_patch (module docstring).

  Args:
    word_emb: `[B, W, D]` L2-normalised word embeddings (the aggregated words after [CLS]).
    patch_emb: `[B, P, D]` L2-normalised patch embeddings.
    word_weights: `[B, W]` per-word weights, `mgca_word_weights(...)` (no gradient).
    word_mask: bool `[B, W]`, True = real word (masks the patch→word attention only).
    patch_weights: `[B, P]` per-patch weights, `mgca_patch_weights(...)`: the ViT path
      (unnormalised attended word context). None: the CNN path (normalised context, 1/P each).
    temperature: τ_l of the attention and of the CE logits (0.1).
  Returns:
    scalar float32: ½(CE_word→ctx + CE_ctx→word) + ½(CE_patch→ctx + CE_ctx→patch), each the
    weighted sum over one example's tokens, averaged over the (global) batch.
  """
  d = _local_terms(word_emb, patch_emb, word_weights, word_mask, patch_weights, temperature)
  return d["local_word"] + d["local_patch"]


# -------------------------------------------------------------------- prototype level


def _sinkhorn(scores: jax.Array, epsilon: float, iterations: int, axis_name: str | None,
              total: int) -> jax.Array:
  """Sinkhorn–Knopp on `[b, K]` scores; sums over the batch are `psum`med over `axis_name`."""
  def batch_sum(x, **kw):
    s = jnp.sum(x, **kw)
    return s if axis_name is None else jax.lax.psum(s, axis_name)

  s = jax.lax.stop_gradient(scores.astype(jnp.float32)) / epsilon
  shift = jnp.max(s)                    # exp(s - max): the normalisation below cancels it
  if axis_name is not None:
    shift = jax.lax.pmax(shift, axis_name)
  q = jnp.exp(s - shift)
  q = q / batch_sum(q)
  k = q.shape[1]
  for _ in range(iterations):
    q = q * ((1.0 / k) / batch_sum(q, axis=0))[None, :]               # prototype marginals
    q = q * ((1.0 / total) / jnp.sum(q, axis=1, keepdims=True))        # example marginals
  return q / jnp.sum(q, axis=1, keepdims=True)


def sinkhorn_knopp(scores: jax.Array, epsilon: float = 0.05, iterations: int = 3) -> jax.Array:
  """Equipartition codes of SwAV / MGCA (`sinkhorn` / `distributed_sinkhorn` in the release).

  Q = exp(scores / ε)ᵀ normalised to sum 1, then `iterations` times: rows (prototypes) scaled
  to 1/K, columns (examples) scaled to 1/B; the codes are the columns normalised to sum 1.
  B and the row sums are over the GLOBAL batch (a sharded global array under `jit`, or a
  `psum` over `data` inside a caller's `shard_map`). No gradient.

  Args:
    scores: `[B, K]` example–prototype scores (cosine similarities).
    epsilon: ε, the entropic regularisation (0.05).
    iterations: the number of Sinkhorn iterations (3).
  Returns:
    `[B, K]` float32 codes, each row sums to 1.
  """
  b = scores.shape[0]
  n, manual = _data_axis(b)
  if manual:
    return _sinkhorn(scores, epsilon, iterations, DATA_AXIS, b * n)
  return _sinkhorn(scores, epsilon, iterations, None, b)


def _normalised_prototypes(prototypes: jax.Array) -> jax.Array:
  """L2-normalised rows with the identity gradient: the release renormalises the weights in
  place (`weight.copy_(F.normalize(w))`) before the forward, so the gradient reaches the weights
  as the gradient with respect to the normalised ones."""
  p = prototypes.astype(jnp.float32)
  return p + jax.lax.stop_gradient(l2_normalize(p) - p)


def mgca_prototype_loss(image_emb: jax.Array, report_emb: jax.Array, prototypes: jax.Array,
                        epsilon: float = 0.05, temperature: float = 0.2, iterations: int = 3,
                        *, global_batch: bool = True) -> jax.Array:
  """MGCA's cross-modal prototype alignment (CPA): swapped prediction of Sinkhorn codes.

  s^v = v·Cᵀ, s^t = t·Cᵀ with C the row-normalised prototypes; codes q^v, q^t =
  `sinkhorn_knopp(s, ε, iterations)`; L = ½[−mean Σ_k q^v log softmax(s^t/T)
  − mean Σ_k q^t log softmax(s^v/T)].

  Args:
    image_emb: `[B, D]` L2-normalised image embeddings (may be batch-sharded over `data`).
    report_emb: `[B, D]` L2-normalised report embeddings.
    prototypes: `[K, D]` the prototype weights (K = 500); normalised here with an identity
      gradient, as the release's in-place renormalisation (module `_normalised_prototypes`).
    epsilon, temperature, iterations: ε (0.05), the softmax temperature T (0.2), Sinkhorn's
      iterations (3).
    global_batch: the Sinkhorn sums and the mean over the global batch (True; what the
      release's `distributed_sinkhorn` intends) or per device, averaged (False; what the
      released module actually selects, see docs/interfaces.md §4a).
  Returns:
    scalar float32.
  """
  if image_emb.ndim != 2 or image_emb.shape != report_emb.shape:
    raise ValueError(f"image_emb {image_emb.shape} and report_emb {report_emb.shape} must "
                     "both be [B, D]")
  protos = _normalised_prototypes(prototypes)

  def body(img, rep, c, *, axis_name, total):
    img_out, rep_out = img @ c.T, rep @ c.T                            # [b, K]
    img_code = _sinkhorn(img_out, epsilon, iterations, axis_name, total)
    rep_code = _sinkhorn(rep_out, epsilon, iterations, axis_name, total)
    i2t = -jnp.sum(img_code * jax.nn.log_softmax(rep_out / temperature, axis=1))
    t2i = -jnp.sum(rep_code * jax.nn.log_softmax(img_out / temperature, axis=1))
    loss = 0.5 * (i2t + t2i)
    if axis_name is not None:
      loss = jax.lax.psum(loss, axis_name)
    return loss / total

  return data_parallel(body, (image_emb.astype(jnp.float32), report_emb.astype(jnp.float32)),
                       (protos,), global_batch=global_batch)


# ------------------------------------------------------------------------- objective


def mgca_objective(outputs: Mapping[str, jax.Array],
                   batch: Mapping[str, jax.Array] | None = None, *,
                   weights: Sequence[float] = (1.0, 0.7, 0.5), use_ita: bool = True,
                   use_local: bool = True, use_proto: bool = True, bidirectional: bool = True,
                   vit: bool = True, temperature: float = 0.07, local_temperature: float = 0.1,
                   proto_temperature: float = 0.2, epsilon: float = 0.05,
                   sinkhorn_iterations: int = 3, clip: tuple[float, float] = (0.1, 0.9),
                   global_batch: bool = True) -> tuple[jax.Array, dict[str, Any]]:
  """The MGCA loss L = λ1·ITA + λ2·L_local + λ3·L_proto (module docstring).

  Args:
    outputs: named model outputs (docs/interfaces.md §3): `image_emb [B,E]`, `text_emb [B,E]`;
      for the local term `word_emb [B,W,E]`, `word_mask [B,W]`, `word_importance [B,W]`
      (the text [CLS] attention per word), `patch_emb [B,P,E]` and, on the ViT path with
      `bidirectional`, `patch_importance [B,P]` (or `[B,H,P]`: the last ViT block's
      [CLS]→patch attention); for the prototype term `prototypes [K,E]` (the raw weights).
    batch: unused (the objective interface).
    weights: (λ1, λ2, λ3); the module's defaults (1, 0.7, 0.5). NB: the release's command
      line (`cli_main`) defaults all three to 1.
    use_ita, use_local, use_proto: the three terms (ablations ita | ita_local | full).
    bidirectional: add the patch→word half of the local term (the release's default).
    vit: ViT path (patch weights from `patch_importance`, unnormalised context) or CNN path.
    temperature, local_temperature, proto_temperature: 0.07, 0.1, 0.2.
    epsilon, sinkhorn_iterations: Sinkhorn's ε and iterations (0.05, 3).
    clip: the quantiles of the [CLS]-attention clip (0.1, 0.9).
    global_batch: ITA and the Sinkhorn sums over the global batch (True) or per device (False,
      as the released module runs under DDP).
  Returns:
    `(loss, measurements)`: `loss`, the enabled terms unweighted (`ita`, `local` with its parts
    `local_word` and `local_patch`, `proto`), and in-batch retrieval `i2t_top{1,5}`,
    `t2i_top{1,5}`, `top{1,5}` over the same batch as ITA.
  """
  del batch
  lam_ita, lam_local, lam_proto = (float(w) for w in weights)
  need = {"image_emb", "text_emb"}
  if use_local:
    need |= {"word_emb", "word_mask", "word_importance", "patch_emb"}
    if vit and bidirectional:
      need |= {"patch_importance"}
  if use_proto:
    need |= {"prototypes"}
  missing = sorted(k for k in need if k not in outputs)
  if missing:
    raise KeyError(f"mgca_objective needs the model outputs {missing} (docs/interfaces.md §3)")

  img, txt = outputs["image_emb"], outputs["text_emb"]
  terms = contrastive_terms(img, txt, temperature=temperature, global_batch=global_batch,
                            ira=use_ita, retrieval=True)
  measurements = {k: v for k, v in terms.items() if k != "ira"}
  loss = jnp.zeros((), jnp.float32)
  if use_ita:
    measurements["ita"] = terms["ira"]
    loss = loss + lam_ita * terms["ira"]
  if use_local:
    word_w = mgca_word_weights(outputs["word_importance"], outputs["word_mask"], *clip)
    patch_w = (mgca_patch_weights(outputs["patch_importance"], *clip)
               if vit and bidirectional else None)
    local = _local_terms(outputs["word_emb"], outputs["patch_emb"], word_w,
                         outputs["word_mask"], patch_w, local_temperature, bidirectional)
    measurements.update(local)
    measurements["local"] = sum(local.values())
    loss = loss + lam_local * measurements["local"]
  if use_proto:
    proto = mgca_prototype_loss(img, txt, outputs["prototypes"], epsilon, proto_temperature,
                                sinkhorn_iterations, global_batch=global_batch)
    measurements["proto"] = proto
    loss = loss + lam_proto * proto
  measurements["loss"] = loss
  return loss, measurements
