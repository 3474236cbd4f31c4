"""Maps `config.loss` to a pure objective `(outputs, batch) -> (loss, measurements)` (the
constants the model needs, the IRL tag queries, come from asg_jax/models/tag_queries.py)."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import losses, registry


def retrieval_measurements(image_emb: jax.Array, text_emb: jax.Array) -> dict[str, jax.Array]:
  """In-batch retrieval top-1/top-5 (image→text, text→image and their mean).

  Args:
    image_emb, text_emb: `[B, D]`; pair i is (image i, report i).
  """
  sim = jnp.einsum("id,jd->ij", image_emb, text_emb)
  b = sim.shape[0]
  diag = jnp.diagonal(sim)
  # rank of the true pair = number of candidates scoring strictly higher
  rank_i2t = jnp.sum(sim > diag[:, None], axis=1)
  rank_t2i = jnp.sum(sim > diag[None, :], axis=0)
  out = {}
  for k in (1, 5):
    if k > b:
      continue
    i2t = jnp.mean(rank_i2t < k)
    t2i = jnp.mean(rank_t2i < k)
    out[f"i2t_top{k}"], out[f"t2i_top{k}"] = i2t, t2i
    out[f"top{k}"] = 0.5 * (i2t + t2i)
  return out


def make_objective(config: ml_collections.ConfigDict) -> Callable:
  """The objective named by `config.loss.name` (asg_jax/registry.py OBJECTIVES)."""
  return registry.objective_factory(config.loss.name)(config)


def make_asg_objective(config: ml_collections.ConfigDict) -> Callable:
  """ASG (`loss.name = "asg"`, the `use_*` switches) or IRA alone (`"ira"`). The in-batch
  retrieval measurements come from the same (global or per-device) logits as the losses."""
  lc = config.loss
  grid = patch_grid(config)
  use = dict(use_ira=lc.use_ira, use_arsa=lc.use_arsa, use_irl=lc.use_irl, use_erl=lc.use_erl)
  if lc.name == "ira":
    use = dict(use_ira=True, use_arsa=False, use_irl=False, use_erl=False)

  def objective(outputs, batch):
    return losses.asg_objective(
        outputs, batch, weights=(lc.w_ira, lc.w_arsa, lc.w_irl, lc.w_erl),
        temperature=lc.temperature, mix=lc.soft_mix, grid=grid,
        input_size=config.data.image_size, global_batch=lc.global_batch, **use)
  return objective


def make_reclf_objective(config: ml_collections.ConfigDict) -> Callable:
  """RECLF (`loss.name = "reclf"`) or its GLoRIA baseline (`"gloria"`)."""
  lc = config.loss

  def objective(outputs, batch):
    loss, measurements = losses.reclf_objective(
        outputs, batch, beta=lc.beta, temperature=lc.temperature,
        local_temperature=lc.local_temperature, lambda_local=lc.lambda_local,
        label_source=lc.label_source, gloria=lc.name == "gloria", gamma3=lc.gamma3,
        semantic_local=lc.semantic_local)
    measurements = dict(measurements)
    measurements.update(retrieval_measurements(outputs["image_emb"], outputs["text_emb"]))
    return loss, measurements
  return objective


def needs_local_outputs(config: ml_collections.ConfigDict) -> bool:
  """Whether the training objective reads the local outputs (patch_emb, word_emb, ...):
  ARSA and the RECLF / GLoRIA local branch do; IRA, ERL and IRL do not."""
  lc = config.loss
  if lc.name in ("reclf", "gloria") or config.model.local_head.mode:
    return True
  return lc.name == "asg" and bool(lc.use_arsa)


def patch_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """`(gh, gw)`: the static local-feature grid of the image tower for the configured input
  (the tower module's own `patch_grid`)."""
  return registry.image_tower(config.model.image.name).patch_grid(config.model.image,
                                                                  config.data.image_size)
