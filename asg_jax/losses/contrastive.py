"""Global image–report objectives of ASG: IRA (InfoNCE) and ERL (soft-label KL), asg.md §1, §4.

Both are functions of the `[B, B]` logit matrix s_ij = v_i·t_j / τ. They are computed over
the GLOBAL batch, also when the batch is sharded over the `data` axis of the mesh set with
`jax.set_mesh` (`asg_jax.parallel.make_mesh`), without any device ever holding the whole
`B × B` matrix:

* every device all-gathers the report embeddings `[B, D]` (and, for ERL, the tag vectors
  `[B, T]`) and computes the logits of its own rows only, a `[B/n, B]` block;
* the row direction (image→text) is local;
* the column direction (text→image) needs the log-sum-exp over all rows: every device computes,
  for each of the B columns, its partial max and sum of exponentials, and the partials are
  combined with a `pmax` (of the stop-gradient max: the log-sum-exp does not depend on the shift,
  so this is exact for values and gradients) and a `psum` of the rescaled sums;
* each device sums its loss contributions, and a `psum` gives the global mean.

Reverse-mode differentiation goes through the collectives (`all_gather` ↔ `psum_scatter`,
`psum` ↔ broadcast), so the gradients are those of the global-batch loss.

With no mesh set, a mesh without a `data` axis, a `data` axis of size 1, or a batch not divisible
by the number of devices, the same functions compute the plain dense `[B, B]` version (XLA
partitions it automatically if the inputs are sharded).

`global_batch=False` reproduces the released PyTorch code under data parallelism: each device
computes the loss of its LOCAL batch only (`[B/n, B/n]` logits) and the result is the mean over
devices (what DDP's gradient averaging optimises).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import AxisType

from asg_jax.models.l2norm import l2_normalize
from asg_jax.parallel import DATA_AXIS

_EPS = 1e-12
_TOPK = (1, 5)


# ---------------------------------------------------------------------- public functions


def ira_loss(image_emb: jax.Array, text_emb: jax.Array, temperature: float = 0.07, *,
             global_batch: bool = True) -> jax.Array:
  """Image–report alignment: CE(image→text) + CE(text→image), each a batch mean (asg.md §1).

  Args:
    image_emb: `[B, D]` L2-normalised image embeddings (may be batch-sharded over `data`).
    text_emb: `[B, D]` L2-normalised report embeddings; pair i is (image i, report i).
    temperature: τ; logits are v_i·t_j / τ.
    global_batch: True: over the global batch (see the module docstring); False: the mean over
      devices of the per-device (local batch) loss, as the released code.
  Returns:
    scalar float32; all-equal logits give 2·log B, B = 1 gives 0.
  """
  return contrastive_terms(image_emb, text_emb, temperature=temperature,
                           global_batch=global_batch, ira=True)["ira"]


def soft_targets(tags: jax.Array, mix: float = 0.2) -> jax.Array:
  """ERL soft targets Q = row-L1-normalise((1-mix)·I + mix·Ŷ Ŷᵀ + 1e-6) (asg.md §4).

  Args:
    tags: `[B, T]` in {1, 0, -1}; y = (tags == 1) (absent and not-mentioned are 0).
    mix: weight of the tag-similarity part (0.2 in ASG).
  Returns:
    `[B, B]` float32, rows sum to 1; a study without a positive tag gets ≈ a one-hot row.
  """
  y = _unit_tags(tags)
  raw = _raw_targets(y, y, jnp.arange(y.shape[0]), mix)
  return raw / jnp.sum(raw, axis=1, keepdims=True)


def soft_label_loss(image_emb: jax.Array, text_emb: jax.Array, tags: jax.Array,
                    temperature: float = 0.07, mix: float = 0.2, *,
                    global_batch: bool = True) -> jax.Array:
  """ERL soft-label contrastive loss (asg.md §4).

  L = ½·[½(KL(Q‖p^{i2t}) + KL(p^{i2t}‖Q)) + ½(KL(Q‖p^{t2i}) + KL(p^{t2i}‖Q))], with
  p^{i2t} = softmax_rows(s), p^{t2i} = softmax_rows(sᵀ), Q = `soft_targets(tags, mix)` for
  both directions; each KL is summed over columns and averaged over rows.

  Args:
    image_emb, text_emb: `[B, D]` L2-normalised embeddings (may be batch-sharded).
    tags: `[B, T]` in {1, 0, -1}.
    temperature, mix: τ and the soft-target mix.
    global_batch: as `ira_loss`.
  Returns:
    scalar float32; B = 1 gives 0.
  """
  return contrastive_terms(image_emb, text_emb, tags, temperature=temperature, mix=mix,
                           global_batch=global_batch, soft=True)["soft"]


def contrastive_terms(image_emb: jax.Array, text_emb: jax.Array, tags: jax.Array | None = None,
                      *, temperature: float = 0.07, mix: float = 0.2, global_batch: bool = True,
                      ira: bool = False, soft: bool = False,
                      retrieval: bool = False) -> dict[str, jax.Array]:
  """IRA, ERL and in-batch retrieval accuracy from ONE pass over the logits (sharded as above).

  Args:
    image_emb, text_emb: `[B, D]`.
    tags: `[B, T]` in {1, 0, -1}; needed when `soft`.
    ira, soft, retrieval: which outputs to compute.
  Returns:
    dict of float32 scalars: `ira`, `soft`, and for retrieval `i2t_top{k}`, `t2i_top{k}`,
    `top{k}` (their mean) for k in (1, 5) with k ≤ B. The rank of the true pair is the number
    of candidates with a strictly larger similarity (as `objectives.retrieval_measurements`).
  """
  if soft and tags is None:
    raise ValueError("the soft-label (ERL) loss needs `tags` [B, T]")
  if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
    raise ValueError(f"image_emb {image_emb.shape} and text_emb {text_emb.shape} must both be "
                     "[B, D]")
  batch = image_emb.shape[0]
  image_emb, text_emb = image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)
  opts = dict(temperature=temperature, mix=mix, ira=ira, soft=soft, retrieval=retrieval)
  y = _unit_tags(tags) if soft else None
  args = (image_emb, text_emb) + ((y,) if soft else ())

  n, manual = _data_axis(batch)
  if n == 1:
    return _finalize(_block_sums(*_split(args), row_offset=0, axis=None, **opts), batch)

  if global_batch:
    def body(*local):
      img, txt, yy = _split(local)
      b = img.shape[0]
      txt_all = jax.lax.all_gather(txt, DATA_AXIS, tiled=True)
      y_all = None if yy is None else jax.lax.all_gather(yy, DATA_AXIS, tiled=True)
      offset = jax.lax.axis_index(DATA_AXIS) * b
      sums = _block_sums(img, txt_all, y_all, row_offset=offset, axis=DATA_AXIS,
                         y_rows=yy, **opts)
      sums = jax.lax.psum(sums, DATA_AXIS)
      return _finalize(sums, b * n)
  else:
    def body(*local):
      img, txt, yy = _split(local)
      b = img.shape[0]
      sums = _block_sums(img, txt, yy, row_offset=0, axis=None, **opts)
      return jax.lax.pmean(_finalize(sums, b), DATA_AXIS)

  if manual:  # already inside a shard_map over `data`: the arguments are the local blocks
    return body(*args)
  spec = jax.P(DATA_AXIS)
  return jax.shard_map(body, in_specs=(spec,) * len(args), out_specs=jax.P())(*args)


# ------------------------------------------------------------------------------ internals


def _split(args):
  img, txt = args[0], args[1]
  return img, txt, (args[2] if len(args) > 2 else None)


def _data_axis(batch: int) -> tuple[int, bool]:
  """(number of shards over `data` to use, whether `data` is already a manual axis)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or DATA_AXIS not in mesh.axis_names:
    return 1, False
  n = mesh.shape[DATA_AXIS]
  manual = mesh.axis_types[mesh.axis_names.index(DATA_AXIS)] == AxisType.Manual
  if manual:
    return n, True  # the caller's shard_map already split the batch: B here is local
  if n == 1 or batch % n:
    return 1, False
  return n, False


def _unit_tags(tags: jax.Array) -> jax.Array:
  """ŷ = y / max(‖y‖₂, 1e-12), y = (tags == 1). `[B, T]` -> `[B, T]` float32."""
  return l2_normalize((tags == 1).astype(jnp.float32), eps=_EPS)


def _raw_targets(y_rows: jax.Array, y_all: jax.Array, row_index: jax.Array,
                 mix: float) -> jax.Array:
  """Rows `row_index` of (1-mix)·I + mix·Ŷ Ŷᵀ + 1e-6: `[b, T]`, `[B, T]`, `[b]` -> `[b, B]`."""
  sim = jnp.einsum("it,jt->ij", y_rows, y_all)
  eye = (row_index[:, None] == jnp.arange(y_all.shape[0])[None, :]).astype(jnp.float32)
  return (1.0 - mix) * eye + mix * sim + 1e-6


def _block_sums(img: jax.Array, txt_all: jax.Array, y_all: jax.Array | None, *,
                row_offset, axis: str | None, temperature: float, mix: float, ira: bool,
                soft: bool, retrieval: bool,
                y_rows: jax.Array | None = None) -> dict[str, jax.Array]:
  """Loss SUMS of the rows `row_offset : row_offset + b` of the global problem.

  Args:
    img: `[b, D]` this device's images (global rows `row_offset + i`).
    txt_all: `[B, D]` all reports.
    y_all: `[B, T]` all unit tag vectors (soft only); `y_rows` `[b, T]` this device's rows.
    axis: the mesh axis the B rows are split over (None: this block is the whole batch).
  Returns:
    dict of float32 scalars: sums over this block's rows / columns (divide by B after psum).
  """
  b, big_b = img.shape[0], txt_all.shape[0]
  rows = row_offset + jnp.arange(b)                                    # global row indices
  sim = jnp.einsum("id,jd->ij", img, txt_all)                          # [b, B]
  logits = sim / temperature
  out = {}

  if ira or soft:
    diag = jnp.take_along_axis(logits, rows[:, None], axis=1)[:, 0]   # [b] s_ii
    row_lse = jax.nn.logsumexp(logits, axis=1)                         # [b]
    # column log-sum-exp over ALL rows: combine per-device partial max / sum-exp
    col_max = jax.lax.stop_gradient(jnp.max(logits, axis=0))          # [B]
    if axis is not None:
      col_max = jax.lax.pmax(col_max, axis)
    col_sum = jnp.sum(jnp.exp(logits - col_max[None, :]), axis=0)     # [B] partial
    if axis is not None:
      col_sum = jax.lax.psum(col_sum, axis)
    col_lse = col_max + jnp.log(col_sum)                               # [B] global
    if ira:
      own_col_lse = jnp.take(col_lse, rows)                            # columns j = own rows
      out["ira"] = jnp.sum(row_lse - diag) + jnp.sum(own_col_lse - diag)

  if soft:
    if y_rows is None:
      y_rows = y_all
    raw = _raw_targets(y_rows, y_all, rows, mix)                       # [b, B]
    row_z = jnp.sum(raw, axis=1, keepdims=True)                        # [b, 1]
    col_z = jnp.sum(raw, axis=0)                                       # [B] partial
    if axis is not None:
      col_z = jax.lax.psum(col_z, axis)
    # raw is symmetric, so raw_ij / Z_j = Q_ji: the t2i targets laid out like the block.
    q = jax.lax.stop_gradient(raw / row_z)
    qt = jax.lax.stop_gradient(raw / col_z[None, :])
    log_q, log_qt = jnp.log(q), jnp.log(qt)
    log_p = logits - row_lse[:, None]           # i2t: p_ij = softmax over j of row i
    log_pt = logits - col_lse[None, :]          # t2i: element (i, j) = p^{t2i}_{j i}
    kl = (q * (log_q - log_p) + jnp.exp(log_p) * (log_p - log_q)
          + qt * (log_qt - log_pt) + jnp.exp(log_pt) * (log_pt - log_qt))
    out["soft"] = 0.25 * jnp.sum(kl)

  if retrieval:
    s = jax.lax.stop_gradient(sim)
    diag_s = jnp.take_along_axis(s, rows[:, None], axis=1)[:, 0]      # [b]
    diag_all = diag_s if axis is None else jax.lax.all_gather(diag_s, axis, tiled=True)
    rank_i2t = jnp.sum(s > diag_s[:, None], axis=1)                    # [b]
    rank_t2i = jnp.sum(s > diag_all[None, :], axis=0)                  # [B] partial
    if axis is not None:
      rank_t2i = jax.lax.psum(rank_t2i, axis)
    own_rank_t2i = jnp.take(rank_t2i, rows)                            # this block's columns
    for k in _TOPK:
      if k > big_b:
        continue
      out[f"i2t_top{k}"] = jnp.sum(rank_i2t < k).astype(jnp.float32)
      out[f"t2i_top{k}"] = jnp.sum(own_rank_t2i < k).astype(jnp.float32)
  return out


def _finalize(sums: dict[str, jax.Array], batch: int) -> dict[str, jax.Array]:
  """Sums over the batch -> means; adds the two-direction retrieval means `top{k}`."""
  out = {k: v / batch for k, v in sums.items()}
  for k in _TOPK:
    if f"i2t_top{k}" in out:
      out[f"top{k}"] = 0.5 * (out[f"i2t_top{k}"] + out[f"t2i_top{k}"])
  return out

