"""Maps `config.loss` to a pure objective `(outputs, batch) -> (loss, measurements)` (the
constants the model needs, the IRL tag queries, come from asg_jax/models/tag_queries.py).

An objective may carry `prepare_params(params) -> params`: the train step applies it to the
parameters at the start of every step, before the forward and the update (MGCA's in-place
renormalisation of its prototypes). The peers' recipe helpers (`apply_mgca`, `apply_convirt`)
and the config checks of what an objective reads (`check_config`) live here too."""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import losses, registry
from asg_jax.errors import ConfigError
from asg_jax.models.l2norm import l2_normalize


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


def make_mgca_objective(config: ml_collections.ConfigDict) -> Callable:
  """MGCA (`loss.name = "mgca"`, `config.loss.mgca`; docs/peers.md): λ1·ITA + λ2·token level
  + λ3·prototype level. The ViT path (patch weights from `patch_importance`, unnormalised
  patch context) when the image tower is the ViT, else the CNN path. With the prototype term
  it carries `prepare_params = normalise_prototypes`."""
  lc, mc = config.loss, config.loss.mgca

  def objective(outputs, batch):
    return losses.mgca_objective(
        outputs, batch, weights=tuple(mc.lambdas), use_ita=mc.use_ita, use_local=mc.use_local,
        use_proto=mc.use_proto, bidirectional=mc.bidirectional,
        vit=config.model.image.name == "vit", temperature=lc.temperature,
        local_temperature=mc.local_temperature, proto_temperature=mc.proto_temperature,
        epsilon=mc.epsilon, sinkhorn_iterations=mc.sinkhorn_iterations, clip=tuple(mc.clip),
        global_batch=lc.global_batch)
  if mc.use_proto:
    objective.prepare_params = normalise_prototypes
  return objective


def normalise_prototypes(params: dict) -> dict:
  """`params` with the rows of `params["prototypes"]` `[K, E]` L2-normalised (MGCA's
  `prototype_layer.weight.copy_(F.normalize(w))` at the start of every training step)."""
  return dict(params, prototypes=l2_normalize(params["prototypes"]))


def make_convirt_objective(config: ml_collections.ConfigDict) -> Callable:
  """ConVIRT (`loss.name = "convirt"`, `config.loss.convirt`): scale·(λ·ℓ(image→text) +
  (1−λ)·ℓ(text→image)) at temperature τ."""
  lc, cc = config.loss, config.loss.convirt

  def objective(outputs, batch):
    return losses.convirt_objective(outputs, batch, temperature=cc.temperature, lam=cc.lam,
                                    scale=cc.scale, global_batch=lc.global_batch)
  return objective


def needs_local_outputs(config: ml_collections.ConfigDict) -> bool:
  """Whether the training objective reads the local outputs (patch_emb, word_emb, ...):
  ARSA, the RECLF / GLoRIA local branch and MGCA's token level do; IRA, ERL, IRL, ConVIRT
  and MGCA's ITA / prototype levels do not."""
  lc = config.loss
  if lc.name in ("reclf", "gloria") or config.model.local_head.mode:
    return True
  if lc.name == "mgca":
    return bool(lc.mgca.use_local)
  return lc.name == "asg" and bool(lc.use_arsa)


# ------------------------------------------------------------------- peers' recipes

# MGCA's ablation rows (its Table 4 terms): which of the three levels are on
MGCA_ABLATIONS = {
    "ita": dict(use_ita=True, use_local=False, use_proto=False),
    "ita_local": dict(use_ita=True, use_local=True, use_proto=False),
    "full": dict(use_ita=True, use_local=True, use_proto=True),
}
MGCA_PROTOTYPES = 500
MGCA_FREEZE = 0.02     # the prototypes' freeze: MGCA's first epoch of 50, as a fraction of steps


def apply_mgca(c: ml_collections.ConfigDict, ablation: str = "full", *,
               freeze: float = MGCA_FREEZE) -> None:
  """Switch a config to MGCA (call after the image tower is chosen): `loss.name`, the levels
  of `ablation`, the prototype parameter and its freeze, the ViT's `patch_importance`; no tag
  decoder, no local-matching head."""
  if ablation not in MGCA_ABLATIONS:
    raise ConfigError(f"unknown MGCA ablation {ablation!r}; expected one of "
                      f"{sorted(MGCA_ABLATIONS)}")
  c.loss.name = "mgca"
  for key, value in MGCA_ABLATIONS[ablation].items():
    c.loss.mgca[key] = value
  m = c.loss.mgca
  c.model.num_prototypes = MGCA_PROTOTYPES if m.use_proto else 0
  c.model.image.patch_importance = (c.model.image.name == "vit" and m.use_local
                                    and m.bidirectional)
  c.train.freeze = {"prototypes": freeze} if m.use_proto and freeze else {}
  c.model.tag_decoder.enabled = False
  c.model.local_head.mode = ""


def apply_convirt(c: ml_collections.ConfigDict) -> None:
  """Switch a config to ConVIRT (the paper's λ 0.75, τ 0.1; global embeddings only)."""
  c.loss.name = "convirt"
  c.loss.convirt.temperature, c.loss.convirt.lam, c.loss.convirt.scale = 0.1, 0.75, 1.0
  c.model.tag_decoder.enabled = False
  c.model.local_head.mode = ""


def check_config(c: ml_collections.ConfigDict) -> None:
  """ConfigError unless the model has what the objective reads (called by config._check)."""
  image, m = c.model.image, c.loss.mgca
  if image.patch_importance and image.name != "vit":
    raise ConfigError(f"config.model.image.patch_importance needs the ViT's [CLS] attention; "
                      f"config.model.image.name = {image.name!r}")
  if c.loss.name != "mgca":
    return
  if len(tuple(m.lambdas)) != 3 or not (m.use_ita or m.use_local or m.use_proto):
    raise ConfigError(f"config.loss.mgca: lambdas = {m.lambdas!r} must be 3 weights (ITA, "
                      "token, prototype) and at least one of use_ita / use_local / use_proto on")
  if not 0.0 <= m.clip[0] <= m.clip[1] <= 1.0:
    raise ConfigError(f"config.loss.mgca.clip = {m.clip!r}; expected quantiles 0 <= lo <= hi <= 1")
  if m.use_proto and c.model.num_prototypes <= 0:
    raise ConfigError("config.loss.mgca.use_proto needs config.model.num_prototypes > 0 (MGCA: "
                      f"{MGCA_PROTOTYPES}; objectives.apply_mgca sets it)")
  if m.use_local and m.bidirectional and image.name == "vit" and not image.patch_importance:
    raise ConfigError("config.loss.mgca.use_local with a ViT reads its [CLS] attention: set "
                      "config.model.image.patch_importance = True (objectives.apply_mgca does)")


def patch_grid(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """`(gh, gw)`: the static local-feature grid of the image tower for the configured input
  (the tower module's own `patch_grid`)."""
  return registry.image_tower(config.model.image.name).patch_grid(config.model.image,
                                                                  config.data.image_size)
