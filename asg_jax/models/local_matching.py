"""RECLF / GLoRIA local matching: word–patch attention, matching features, SRM, IRM weights,
pooling and the blocked (and sharded) pairwise local similarity (docs/reclf.md §2.1–2.3).

RECLF (Li et al., IEEE TMI 2025) released no code and its equations were not available to
this project: everything here is the project's RECONSTRUCTION from what the paper states
(docs/reclf.md separates the two). All functions are pure and jittable; the learned weights
(SRM projections, the IRM correction MLP) live in `asg_jax.models.relation.LocalMatchingHead`
and are passed in explicitly. The losses over the resulting `[B, B]` similarity are in
`asg_jax.losses.reclf`.

Shapes: `Bi` images, `Bj` reports, `M` patches, `N` word slots, `E` embedding size,
`H` SRM heads. Rows of every `[Bi, Bj]` matrix are images, columns reports.

Padding words never influence a result: word embeddings and importances are zeroed at
padding slots (`jnp.where`, so even NaN there is harmless), padding scores are excluded from
every pooling, and SRM relations never attend to padding words.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from asg_jax.models.l2norm import l2_normalize
from asg_jax.parallel import DATA_AXIS

_EPS = 1e-12

# --------------------------------------------------------------------------- helpers


def _masked_softmax(x: jax.Array, mask: jax.Array, axis: int = -1) -> jax.Array:
  """Softmax over `axis` restricted to `mask`; exactly 0 at masked entries, and an all-zero
  vector (not NaN) where nothing is valid."""
  x = jnp.where(mask, x, jnp.finfo(x.dtype).min)
  return jax.nn.softmax(x, axis=axis) * mask


def mask_words(word_emb: jax.Array, word_mask: jax.Array) -> jax.Array:
  """`[B, N, E]` word embeddings with padding slots set to exactly 0 (`word_mask [B, N]`)."""
  return jnp.where(word_mask[..., None], word_emb, 0).astype(jnp.float32)


# ------------------------------------------------------------ 1. pairwise local matchings


def word_patch_attention(patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
                         temperature: float = 0.1, *,
                         word_softmax_first: bool = False) -> jax.Array:
  """Attention of every word of every report over the patches of every image.

  a_ijkm = softmax_m(w_jk·p_im / τ_a). With `word_softmax_first` (GLoRIA's published code)
  the dot products are first softmax-normalised over the valid words k and then
  a_ijkm = softmax_m(softmax_k(w_jk·p_im) / τ_a), with τ_a = 1/γ1.

  Args:
    patch_emb: `[Bi, M, E]` (L2-normalised) patch embeddings.
    word_emb: `[Bj, N, E]` (L2-normalised) word embeddings.
    word_mask: bool `[Bj, N]` valid word slots.
    temperature: τ_a.
  Returns:
    `[Bi, Bj, N, M]` float32 attention (rows of padding words are uniform; they are
    masked downstream).
  """
  w = mask_words(word_emb, word_mask)
  p = patch_emb.astype(jnp.float32)
  logits = jnp.einsum("jke,ime->ijkm", w, p)
  if word_softmax_first:
    logits = _masked_softmax(logits, word_mask[None, :, :, None], axis=2)
  return jax.nn.softmax(logits / temperature, axis=-1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def attended_context(word_emb: jax.Array, patch_emb: jax.Array, temperature: float,
                     compute_dtype: Any = None) -> jax.Array:
  """c_ijk = Σ_m softmax_m(w_jk·p_im / τ_a) p_im, with a memory-lean hand-written VJP.

  The backward pass uses Σ_m a_m (g·p_m) = g·c, so dL = a ⊙ (g Pᵀ − g·c) / τ_a needs only
  the attention and one more `[Bi, Bj, N, M]` buffer (autodiff of softmax keeps several).

  Args:
    word_emb: `[Bj, N, E]`; patch_emb: `[Bi, M, E]` (float32); temperature: τ_a (a float
      or a traced scalar; it receives no gradient — τ_a is a fixed hyper-parameter).
    compute_dtype: None / float32, or bfloat16: the matmul operands (words, patches, the
      attention and its gradient) in that dtype, every product accumulated in float32
      (`preferred_element_type`), the softmax and its backward arithmetic in float32; the
      attention kept for the backward pass in that dtype (half the bytes in bf16).
  Returns:
    `[Bi, Bj, N, E]` float32 unnormalised context.
  """
  return _attended_context_fwd(word_emb, patch_emb, temperature, compute_dtype)[0]


def _mm(spec: str, x: jax.Array, y: jax.Array, dtype) -> jax.Array:
  """einsum with operands in `dtype` (None: as given) and a float32 result."""
  if dtype is not None:
    x, y = x.astype(dtype), y.astype(dtype)
  return jnp.einsum(spec, x, y, preferred_element_type=jnp.float32)


def _attended_context_fwd(word_emb, patch_emb, temperature, compute_dtype):
  # Layout [Bi, M, Bj·N]: both products are plain (batched) matmuls without transposing
  # the attention-sized tensors (measured: ~2.3 attention-sized buffers for fwd+bwd
  # instead of ~5 with autodiff in the [Bi, Bj, N, M] layout).
  bi, bj, n, e = patch_emb.shape[0], word_emb.shape[0], word_emb.shape[1], word_emb.shape[2]
  x = word_emb.reshape(bj * n, e)
  a = jax.nn.softmax(_mm("ime,xe->imx", patch_emb, x, compute_dtype) / temperature, axis=1)
  if compute_dtype is not None:
    a = a.astype(compute_dtype)
  c = _mm("imx,ime->ixe", a, patch_emb, compute_dtype)
  return c.reshape(bi, bj, n, e), (word_emb, patch_emb, a, c, temperature)


def _attended_context_bwd(compute_dtype, residuals, g):
  word_emb, patch_emb, a, c, temperature = residuals
  bi, bj_n, e = c.shape
  x = word_emb.reshape(bj_n, e)
  g = g.reshape(bi, bj_n, e).astype(jnp.float32)
  da = _mm("ixe,ime->imx", g, patch_emb, compute_dtype)
  dlogits = a.astype(jnp.float32) * (da - jnp.sum(g * c, axis=-1)[:, None, :]) / temperature
  d_x = _mm("imx,ime->xe", dlogits, patch_emb, compute_dtype)
  d_patch = (_mm("imx,xe->ime", dlogits, x, compute_dtype)
             + _mm("imx,ixe->ime", a, g, compute_dtype))
  return (d_x.reshape(word_emb.shape).astype(word_emb.dtype), d_patch.astype(patch_emb.dtype),
          jnp.zeros_like(temperature))


attended_context.defvjp(_attended_context_fwd, _attended_context_bwd)


def local_matching_features(patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
                            temperature: float = 0.1, *, word_softmax_first: bool = False,
                            return_context: bool = False, compute_dtype: Any = None):
  """Matching features h_ijk = w_jk ⊙ normalize(c_ijk), c_ijk = Σ_m a_ijkm p_im.

  Σ_d h_ijkd is the cosine score r_ijk = cos(w_jk, c_ijk) for normalised words.

  Args:
    patch_emb: `[Bi, M, E]`; word_emb: `[Bj, N, E]`; word_mask: bool `[Bj, N]`.
    temperature: τ_a of `word_patch_attention`.
    return_context: also return the normalised attended context ĉ `[Bi, Bj, N, E]`.
    compute_dtype: the word–patch matmuls' operand dtype (`attended_context`; None =
      float32). GLoRIA's `word_softmax_first` path stays float32.
  Returns:
    h `[Bi, Bj, N, E]` float32, exactly 0 at padding words (and ĉ if asked).
  """
  w, p = mask_words(word_emb, word_mask), patch_emb.astype(jnp.float32)
  if word_softmax_first:
    a = word_patch_attention(p, w, word_mask, temperature, word_softmax_first=True)
    c = jnp.einsum("ijkm,ime->ijke", a, p)
  else:
    c = attended_context(w, p, temperature, compute_dtype)
  c_hat = l2_normalize(c)
  h = w[None] * c_hat
  return (h, c_hat) if return_context else h


def local_matching_scores(patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
                          temperature: float = 0.1, *, word_softmax_first: bool = False,
                          return_features: bool = False):
  """Local matching scores r_ijk = Σ_d h_ijkd for every (image i, report j, word k).

  Unblocked (materialises `[Bi, Bj, N, M]`): for small inputs and tests; the training path
  is `reclf_local_similarity` / `pairwise_local_similarity` (blocked, rematerialised).

  Args:
    patch_emb: `[Bi, M, E]`; word_emb: `[Bj, N, E]`; word_mask: bool `[Bj, N]`.
    temperature: τ_a.
    return_features: also return h `[Bi, Bj, N, E]`.
  Returns:
    r `[Bi, Bj, N]` (0 at padding words), and h if asked.
  """
  h = local_matching_features(patch_emb, word_emb, word_mask, temperature,
                              word_softmax_first=word_softmax_first)
  r = jnp.sum(h, axis=-1)
  return (r, h) if return_features else r


# ------------------------------------------------------------------------------- 2. SRM


def srm_relation(word_emb: jax.Array, word_mask: jax.Array, query: jax.Array, key: jax.Array,
                 num_heads: int = 1, context: jax.Array | None = None) -> jax.Array:
  """SRM relation matrix G among the words of each report (masked softmax over words l).

  G_jkl = softmax_l((W_q x_jk)·(W_k x_jl)/√d_h) over valid l, per head, with x = w (default:
  depends only on the report, so computed once per report and shared by all images) or
  x = [w; ĉ] (`context` given: depends on the pair).

  Args:
    word_emb: `[Bj, N, E]`; word_mask: bool `[Bj, N]`.
    query, key: `[Din, H·d_h]` projections (Din = E, or 2E with `context`).
    context: optional normalised attended context ĉ `[Bi, Bj, N, E]`.
  Returns:
    `[Bj, H, N, N]`, or `[Bi, Bj, H, N, N]` with `context`; rows sum to 1 over valid l
    (padding rows are 0).
  """
  x = mask_words(word_emb, word_mask)
  if context is not None:
    x = jnp.concatenate([jnp.broadcast_to(x[None], context.shape), context], axis=-1)
  q = jnp.einsum("...ke,ef->...kf", x, query)
  k = jnp.einsum("...ke,ef->...kf", x, key)
  q = q.reshape(q.shape[:-1] + (num_heads, -1))
  k = k.reshape(k.shape[:-1] + (num_heads, -1))
  logits = jnp.einsum("...khd,...lhd->...hkl", q, k) / np.sqrt(q.shape[-1])
  valid = word_mask[:, None, :, None] & word_mask[:, None, None, :]  # [Bj, 1, N, N]
  return _masked_softmax(logits, valid, axis=-1)


def srm_message(h: jax.Array, relation: jax.Array, value: jax.Array) -> jax.Array:
  """(Σ_l G_jkl h_ijl) W_v, heads splitting the feature dimension.

  Args:
    h: `[Bi, Bj, N, E]` matching features.
    relation: `[Bj, H, N, N]` or `[Bi, Bj, H, N, N]`.
    value: `[E, E]` W_v.
  Returns:
    `[Bi, Bj, N, E]`.
  """
  heads = relation.shape[-3]
  hh = h.reshape(h.shape[:-1] + (heads, -1))                        # [Bi,Bj,N,H,E/H]
  if relation.ndim == 4:
    msg = jnp.einsum("jhkl,ijlhd->ijkhd", relation, hh)
  else:
    msg = jnp.einsum("ijhkl,ijlhd->ijkhd", relation, hh)
  return jnp.einsum("ijke,ef->ijkf", msg.reshape(h.shape), value)


def srm_refine(h: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
               layers: Sequence[Mapping[str, jax.Array]], *, num_heads: int = 1,
               context: jax.Array | None = None,
               relations: Sequence[jax.Array | None] | None = None) -> jax.Array:
  """SRM: h ← (h + (G h) W_v) per layer, padding words kept at 0.

  With W_v = 0 (its initialisation) every layer is the identity.

  Args:
    h: `[Bi, Bj, N, E]`; word_emb: `[Bj, N, E]`; word_mask: bool `[Bj, N]`.
    layers: per layer a dict `query [Din, H·d_h]`, `key [Din, H·d_h]`, `value [E, E]`.
    context: ĉ `[Bi, Bj, N, E]` if the relation uses visual context, else None.
    relations: optional precomputed report-only relations `[Bj, H, N, N]` per layer.
  Returns:
    refined h' `[Bi, Bj, N, E]`.
  """
  m = word_mask[None, :, :, None]
  for index, layer in enumerate(layers):
    g = None if relations is None else relations[index]
    if g is None:
      g = srm_relation(word_emb, word_mask, layer["query"], layer["key"], num_heads, context)
    h = jnp.where(m, h + srm_message(h, g, layer["value"]), 0)
  return h


# ------------------------------------------------------------------------------- 3. IRM


def importance_prior(word_importance: jax.Array | None, word_mask: jax.Array) -> jax.Array:
  """π: the text encoder's [CLS]→word attention, padding zeroed, renormalised over valid words.

  A report whose importances are all 0 (or `word_importance` None) gets the uniform prior.

  Args:
    word_importance: `[B, N]` or None; word_mask: bool `[B, N]`.
  Returns:
    `[B, N]` float32, rows sum to 1 over valid words (0 for a report with no valid word).
  """
  mask = word_mask.astype(jnp.float32)
  if word_importance is None:
    pi = mask
  else:
    pi = jnp.where(word_mask, jnp.maximum(word_importance.astype(jnp.float32), 0), 0)
    pi = jnp.where(jnp.sum(pi, -1, keepdims=True) > _EPS, pi, mask)
  return pi / jnp.maximum(jnp.sum(pi, -1, keepdims=True), _EPS)


def importance_weights(word_importance: jax.Array | None, word_mask: jax.Array,
                       correction: jax.Array | None = None) -> jax.Array:
  """IRM weights ω_jk = masked softmax_k(log π_jk + g(w_jk)).

  With `correction` None or 0 (g's zero-initialised output layer) ω = π exactly up to
  float rounding.

  Args:
    word_importance: `[B, N]` [CLS]→word attention (None: uniform prior).
    word_mask: bool `[B, N]`.
    correction: g(w) `[B, N]` or None.
  Returns:
    `[B, N]` float32 weights summing to 1 over valid words.
  """
  logits = jnp.log(jnp.maximum(importance_prior(word_importance, word_mask), 1e-30))
  if correction is not None:
    logits = logits + correction.astype(jnp.float32)
  return _masked_softmax(logits, word_mask, axis=-1)


# ---------------------------------------------------------------------------- pooling


def lse_pool(scores: jax.Array, word_mask: jax.Array, gamma2: float = 5.0) -> jax.Array:
  """GLoRIA "sum" aggregation R_ij = (1/γ2)·log Σ_k exp(γ2·r_ijk) over valid words k.

  Args:
    scores: `[Bi, Bj, N]`; word_mask: bool `[Bj, N]`.
  Returns:
    `[Bi, Bj]` (0 for a report with no valid word).
  """
  m = word_mask[None]
  x = jnp.where(m, gamma2 * scores, jnp.finfo(jnp.float32).min)
  pooled = jax.nn.logsumexp(x, axis=-1) / gamma2
  return jnp.where(jnp.any(m, -1), pooled, 0.0)


def mean_pool(scores: jax.Array, word_mask: jax.Array) -> jax.Array:
  """Mean over valid words: `[Bi, Bj, N]` -> `[Bi, Bj]`."""
  m = word_mask[None].astype(scores.dtype)
  return jnp.sum(scores * m, -1) / jnp.maximum(jnp.sum(m, -1), 1.0)


def weighted_pool(scores: jax.Array, word_weights: jax.Array) -> jax.Array:
  """IRM aggregation R_ij = Σ_k ω_jk r'_ijk: `[Bi, Bj, N]`, `[Bj, N]` -> `[Bi, Bj]`."""
  return jnp.einsum("ijk,jk->ij", scores, word_weights.astype(scores.dtype))


# ------------------------------------------------------- blocked pairwise local similarity


def _block_similarity(patch_emb, word_emb, word_mask, word_weights, srm_layers, *, srm_heads,
                      srm_visual_context, attn_temperature, word_softmax_first, pooling,
                      gamma2, compute_dtype=None):
  """All images against one block of reports: `[Bi, M, E]`, `[C, N, E]` -> `[Bi, C]`."""
  h, c_hat = local_matching_features(patch_emb, word_emb, word_mask, attn_temperature,
                                     word_softmax_first=word_softmax_first,
                                     return_context=True, compute_dtype=compute_dtype)
  if srm_layers:
    h = srm_refine(h, word_emb, word_mask, srm_layers, num_heads=srm_heads,
                   context=c_hat if srm_visual_context else None)
  r = jnp.sum(h, axis=-1)
  if word_weights is not None:
    return weighted_pool(r, word_weights)
  if pooling == "lse":
    return lse_pool(r, word_mask, gamma2)
  if pooling == "mean":
    return mean_pool(r, word_mask)
  raise ValueError(f"pooling = {pooling!r}; expected 'lse' or 'mean'")


def reclf_local_similarity(patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
                           word_weights: jax.Array | None = None, *,
                           srm_layers: Sequence[Mapping[str, jax.Array]] = (),
                           srm_heads: int = 1, srm_visual_context: bool = False,
                           attn_temperature: float = 0.1, word_softmax_first: bool = False,
                           pooling: str = "lse", gamma2: float = 5.0,
                           block_size: int | None = 32, remat: bool = True,
                           compute_dtype: Any = None) -> jax.Array:
  """RECLF local similarity R `[Bi, Bj]` for every (image, report) pair, on one device.

  local matchings (§1) → SRM (`srm_layers`, §2; none = off) → pooling: IRM weights
  `word_weights` (§3; see `importance_weights`) if given, else `pooling` ('lse' with γ2 —
  GLoRIA's — or 'mean'). Reports are processed in blocks of `block_size` with `lax.map`;
  with `remat` each block is `jax.checkpoint`-ed, so the `[Bi, block, N, M]` attention is
  never stored for the backward pass. `block_size` None (or ≥ Bj) = one block.
  `compute_dtype` (None = float32; bfloat16) is the word–patch matmuls' operand dtype
  (`attended_context`); scores, SRM, pooling and the result stay float32.

  Args:
    patch_emb: `[Bi, M, E]`; word_emb: `[Bj, N, E]`; word_mask: bool `[Bj, N]`.
    word_weights: `[Bj, N]` IRM weights ω or None.
    srm_layers: per-layer dicts `query`, `key` (`[Din, H·d_h]`), `value` (`[E, E]`).
  Returns:
    `[Bi, Bj]` float32.
  """
  body = functools.partial(_block_similarity, srm_heads=srm_heads,
                           srm_visual_context=srm_visual_context,
                           attn_temperature=attn_temperature,
                           word_softmax_first=word_softmax_first, pooling=pooling,
                           gamma2=gamma2, compute_dtype=compute_dtype)
  srm_layers = [dict(layer) for layer in srm_layers]
  n_reports = word_emb.shape[0]
  if block_size is None or block_size >= n_reports:
    fn = jax.checkpoint(body) if remat else body
    return fn(patch_emb, word_emb, word_mask, word_weights, srm_layers)

  n_blocks = -(-n_reports // block_size)
  pad = n_blocks * block_size - n_reports

  def blocks(x):
    if x is None:
      return None
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    return x.reshape((n_blocks, block_size) + x.shape[1:])

  def step(xs):
    w, m, ww = xs
    return body(patch_emb, w, m, ww, srm_layers)

  step = jax.checkpoint(step) if remat else step
  out = jax.lax.map(step, (blocks(word_emb), blocks(word_mask), blocks(word_weights)))
  out = jnp.moveaxis(out, 0, 1).reshape(patch_emb.shape[0], n_blocks * block_size)
  return out[:, :n_reports]


def _data_mesh_size(axis: str) -> int:
  """Size of `axis` in the active (abstract) mesh, 0 if there is none."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or axis not in mesh.axis_names:
    return 0
  return int(mesh.shape[axis])


def pairwise_local_similarity(patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
                              word_weights: jax.Array | None = None, *,
                              shard: bool = True, axis: str = DATA_AXIS,
                              **kwargs: Any) -> jax.Array:
  """`reclf_local_similarity` on global arrays, sharded by image rows when a mesh is active.

  Under `jax.set_mesh(mesh)` with a `data` axis of size n > 1 dividing B, this is a
  `jax.shard_map` over `axis`: each device all-gathers the word embeddings, masks and IRM
  weights of all reports, keeps its own B/n images, and computes its `[B/n, B]` block; the
  result is the global `[B, B]` matrix sharded by rows (`P(axis, None)`). The SRM weights are
  replicated. Otherwise (no mesh, n = 1, `shard` False) it runs unsharded.

  Args:
    patch_emb: `[B, M, E]`; word_emb: `[B, N, E]`; word_mask: bool `[B, N]`;
    word_weights: `[B, N]` or None; kwargs: those of `reclf_local_similarity`.
  Returns:
    `[B, B]` (rows images, columns reports).
  """
  n = _data_mesh_size(axis) if shard else 0
  if n <= 1 or patch_emb.shape[0] % n or word_emb.shape[0] % n:
    return reclf_local_similarity(patch_emb, word_emb, word_mask, word_weights, **kwargs)
  srm_layers = [dict(layer) for layer in kwargs.pop("srm_layers", ())]

  def rows(patch, words, mask, weights, layers):
    gather = lambda x: None if x is None else jax.lax.all_gather(x, axis, tiled=True)
    return reclf_local_similarity(patch, gather(words), gather(mask), gather(weights),
                                  srm_layers=layers, **kwargs)

  fn = jax.shard_map(rows, in_specs=(jax.P(axis), jax.P(axis), jax.P(axis), jax.P(axis),
                                     jax.P()),
                     out_specs=jax.P(axis, None))
  return fn(patch_emb, word_emb, word_mask, word_weights, srm_layers)


def gloria_local_similarity(patch_emb: jax.Array, word_emb: jax.Array, word_mask: jax.Array,
                            *, gamma1: float = 4.0, gamma2: float = 5.0,
                            word_softmax_first: bool = False, block_size: int | None = None,
                            shard: bool = False) -> jax.Array:
  """GLoRIA local similarity: attention softmax_m(γ1·w·p) (optionally after GLoRIA's
  word-dimension softmax), cosine scores, LSE pooling R = (1/γ2)·log Σ_k exp(γ2·r_k).

  Args:
    patch_emb: `[Bi, M, E]`; word_emb: `[Bj, N, E]`; word_mask: bool `[Bj, N]`.
  Returns:
    `[Bi, Bj]`.
  """
  return pairwise_local_similarity(patch_emb, word_emb, word_mask, None, shard=shard,
                                   attn_temperature=1.0 / gamma1,
                                   word_softmax_first=word_softmax_first, pooling="lse",
                                   gamma2=gamma2, block_size=block_size)
