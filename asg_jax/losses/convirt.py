"""ConVIRT (Zhang et al. 2020) and the data-parallel plumbing shared with `mgca.py`.

ConVIRT's loss is the asymmetric InfoNCE L = λ·ℓ(image→text) + (1−λ)·ℓ(text→image) over the
`[B, B]` logits v_i·u_j / τ (λ = 0.75, τ = 0.1 in the paper). MGCA's released
`convirt_module.py` (`info_nce_loss`) optimises the plain SUM of the two directions at τ = 0.07,
i.e. `convirt_loss(v, u, 0.07, 0.5)` times two (`convirt_objective(..., scale=2.0)`).

Global batch: as `contrastive.ira_loss`, the two directions are computed over the GLOBAL batch
when the batch is sharded over the `data` axis of the mesh set with `jax.set_mesh` (each device
all-gathers the text embeddings, keeps its `[B/n, B]` rows, and combines the column
log-sum-exp with `pmax` / `psum`); `global_batch=False` is the mean over devices of the
per-device (local batch) loss, what the released PyTorch code optimises under DDP. With no mesh,
a one-device `data` axis or an indivisible batch, the dense `[B, B]` version is used.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from asg_jax.losses.contrastive import _data_axis, contrastive_terms
from asg_jax.parallel import DATA_AXIS


def convirt_loss(image_emb: jax.Array, text_emb: jax.Array, temperature: float = 0.1,
                 lam: float = 0.75, *, global_batch: bool = True) -> jax.Array:
  """ConVIRT: λ·ℓ(image→text) + (1−λ)·ℓ(text→image), each a mean over the (global) batch.

  Args:
    image_emb: `[B, D]` L2-normalised image embeddings v (may be batch-sharded over `data`).
    text_emb: `[B, D]` L2-normalised report embeddings u; pair i is (image i, report i).
    temperature: τ; logits v_i·u_j / τ.
    lam: λ, the weight of the image→text direction.
    global_batch: over the global batch (True) or the mean of the per-device losses (False).
  Returns:
    scalar float32; all-equal logits give log B.
  """
  d = two_way_cross_entropy(image_emb, text_emb, temperature, global_batch=global_batch)
  return lam * d["i2t"] + (1.0 - lam) * d["t2i"]


def two_way_cross_entropy(image_emb: jax.Array, text_emb: jax.Array, temperature: float, *,
                          global_batch: bool = True) -> dict[str, jax.Array]:
  """The two InfoNCE directions of the `[B, B]` logits v_i·u_j / τ, each a batch mean.

  Args:
    image_emb, text_emb: `[B, D]`.
  Returns:
    `{"i2t": mean_i CE(row i, i), "t2i": mean_j CE(column j, j)}` float32 scalars.
  """
  if image_emb.ndim != 2 or image_emb.shape != text_emb.shape:
    raise ValueError(f"image_emb {image_emb.shape} and text_emb {text_emb.shape} must both be "
                     "[B, D]")

  def body(img, txt, *, axis_name, total):
    b = img.shape[0]
    if axis_name is None:
      txt_all, offset = txt, 0
    else:
      txt_all = jax.lax.all_gather(txt, axis_name, tiled=True)
      offset = jax.lax.axis_index(axis_name) * b
    rows = offset + jnp.arange(b)
    logits = jnp.einsum("id,jd->ij", img, txt_all) / temperature      # [b, B]
    diag = jnp.take_along_axis(logits, rows[:, None], axis=1)[:, 0]
    row_lse = jax.nn.logsumexp(logits, axis=1)
    col_max = jax.lax.stop_gradient(jnp.max(logits, axis=0))          # [B]
    if axis_name is not None:
      col_max = jax.lax.pmax(col_max, axis_name)
    col_sum = jnp.sum(jnp.exp(logits - col_max[None, :]), axis=0)
    if axis_name is not None:
      col_sum = jax.lax.psum(col_sum, axis_name)
    own_col_lse = jnp.take(col_max + jnp.log(col_sum), rows)
    sums = {"i2t": jnp.sum(row_lse - diag), "t2i": jnp.sum(own_col_lse - diag)}
    if axis_name is not None:
      sums = jax.lax.psum(sums, axis_name)
    return {k: v / total for k, v in sums.items()}

  return data_parallel(body, (image_emb.astype(jnp.float32), text_emb.astype(jnp.float32)),
                       global_batch=global_batch)


def convirt_objective(outputs: Mapping[str, jax.Array],
                      batch: Mapping[str, jax.Array] | None = None, *,
                      temperature: float = 0.1, lam: float = 0.75, scale: float = 1.0,
                      global_batch: bool = True) -> tuple[jax.Array, dict[str, Any]]:
  """The ConVIRT loss `scale·convirt_loss(image_emb, text_emb, temperature, lam)`.

  Paper: (τ, λ, scale) = (0.1, 0.75, 1); MGCA's released convirt_module: (0.07, 0.5, 2).

  Args:
    outputs: named model outputs (docs/interfaces.md §3): `image_emb [B,E]`, `text_emb [B,E]`.
    batch: unused (the objective interface).
  Returns:
    `(loss, measurements)`: `loss`, `i2t`, `t2i` (the two unweighted directions) and in-batch
    retrieval `i2t_top{1,5}`, `t2i_top{1,5}`, `top{1,5}` over the same batch.
  """
  del batch
  missing = sorted(k for k in ("image_emb", "text_emb") if k not in outputs)
  if missing:
    raise KeyError(f"convirt_objective needs the model outputs {missing} "
                   "(docs/interfaces.md §3)")
  img, txt = outputs["image_emb"], outputs["text_emb"]
  d = two_way_cross_entropy(img, txt, temperature, global_batch=global_batch)
  loss = scale * (lam * d["i2t"] + (1.0 - lam) * d["t2i"])
  measurements = dict(contrastive_terms(img, txt, temperature=temperature,
                                        global_batch=global_batch, retrieval=True))
  measurements.update(d, loss=loss)
  return loss, measurements


# ------------------------------------------------------------------ data-parallel plumbing


def data_parallel(body: Callable[..., Any], batch_args: Sequence[jax.Array],
                  replicated_args: Sequence[jax.Array] = (), *, global_batch: bool = True):
  """Runs a batch-mean loss over the global batch or per device, on any mesh.

  `body(*batch_args, *replicated_args, axis_name=, total=)` receives the batch arguments
  (leading axis = batch) of one device, or of the whole batch; with `axis_name` set it must
  combine its sums over that mesh axis (`psum`, `all_gather`), and it divides by `total`, the
  number of examples its result averages over. Returns body's (pytree) result.

  - no mesh, `data` of size 1, or a batch not divisible by it: the dense body on everything;
  - `global_batch`: a `shard_map` over `data` with `axis_name="data"`, total = global B;
  - not `global_batch`: the body on each device's block (`axis_name=None`), then `pmean`;
  - inside a caller's `shard_map` over `data` (manual axis): the same, on the local blocks.
  """
  b = batch_args[0].shape[0]
  n, manual = _data_axis(b)
  if n == 1:
    return body(*batch_args, *replicated_args, axis_name=None, total=b)

  def run(*args):
    local_b = args[0].shape[0]
    if global_batch:
      return body(*args, axis_name=DATA_AXIS, total=local_b * n)
    return jax.lax.pmean(body(*args, axis_name=None, total=local_b), DATA_AXIS)

  if manual:
    return run(*batch_args, *replicated_args)
  specs = (jax.P(DATA_AXIS),) * len(batch_args) + (jax.P(),) * len(replicated_args)
  return jax.shard_map(run, in_specs=specs, out_specs=jax.P())(*batch_args, *replicated_args)
