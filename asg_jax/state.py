"""The training state: a plain pytree, its optimizer and schedule, and its initialisation.

    tx, schedule = make_optimizer(config.train, num_steps)
    state = init_state(config, model, tx, rng, example_batch, constants, mesh)
    variables = abstract_variables(config, model, constants)   # shapes only (inference)
"""
from __future__ import annotations

import logging
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from asg_jax import parallel
from asg_jax.errors import ConfigError

logger = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
  """The whole mutable training state: a plain pytree."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    """The model variables `{"params", "batch_stats"}` (what `model.apply` takes)."""
    return {"params": self.params, "batch_stats": self.batch_stats}


def lr_schedule(train_cfg: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """ASG's per-step schedule: init_lr → linear warmup (warmup_frac of all steps) → lr,
  then cosine decay to end_lr at the last step."""
  warmup = int(round(train_cfg.warmup_frac * num_steps))
  decay = max(num_steps - warmup, 1)
  cosine = optax.cosine_decay_schedule(train_cfg.lr, decay_steps=decay,
                                       alpha=train_cfg.end_lr / train_cfg.lr)
  if warmup == 0:
    return cosine
  init_lr, peak = float(train_cfg.init_lr), float(train_cfg.lr)

  def linear(count):
    # init + (peak - init)·t/warmup, written so step 0 is exactly init_lr in float32
    # (optax.linear_schedule's (init - end)·(1 - t) + end loses init_lr to cancellation)
    frac = jnp.clip(jnp.asarray(count, jnp.float32) / warmup, 0.0, 1.0)
    return init_lr + (peak - init_lr) * frac
  return optax.join_schedules([linear, cosine], boundaries=[warmup])


def make_optimizer(train_cfg: ml_collections.ConfigDict, num_steps: int):
  """AdamW (decoupled weight decay on every parameter, as the released code) + schedule.

  `train_cfg.lr_multipliers` ({top-level params key: m}, empty = none) scales the AdamW
  updates of those subtrees by m — a PyTorch parameter group with lr·m (the decoupled weight
  decay scaled the same way). `train_cfg.freeze` ({top-level params key: f}, empty = none)
  holds those subtrees for the first round(f·num_steps) steps (`optax.conditionally_mask`:
  zero updates and the inner state kept, as PyTorch skipping a parameter without `.grad`). Both empty:
  exactly the plain AdamW (same opt_state structure)."""
  schedule = lr_schedule(train_cfg, num_steps)
  tx = optax.adamw(schedule, b1=train_cfg.b1, b2=train_cfg.b2,
                   weight_decay=train_cfg.weight_decay)
  freeze = {k: int(round(f * num_steps)) for k, f in freeze_fractions(train_cfg).items()}
  if freeze:
    # a frozen subtree: its own AdamW (own moments and bias-correction count) held for its
    # first steps; the learning rate follows the global step
    adam = lambda: optax.chain(  # noqa: E731
        optax.scale_by_adam(b1=train_cfg.b1, b2=train_cfg.b2),
        optax.add_decayed_weights(train_cfg.weight_decay))
    held = lambda steps: optax.conditionally_mask(adam(), lambda n: n >= steps)  # noqa: E731
    transforms = {k: optax.chain(held(steps), optax.scale_by_learning_rate(schedule))
                  for k, steps in freeze.items()}
    tx = optax.multi_transform(dict(transforms, **{_UNSCALED: tx}), _subtree_labels(freeze, "freeze"))
  multipliers = lr_multipliers(train_cfg)
  if multipliers:
    tx = optax.chain(tx, scale_subtrees(multipliers))
  if train_cfg.grad_clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(train_cfg.grad_clip), tx)
  return tx, schedule


def lr_multipliers(train_cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """`config.train.lr_multipliers` as a plain {name: float} (absent or empty: {})."""
  raw = train_cfg.get("lr_multipliers", None) or {}
  out = {}
  for name, m in dict(raw).items():
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0:
      raise ConfigError(f"config.train.lr_multipliers[{name!r}] = {m!r}; expected a number > 0")
    out[str(name)] = float(m)
  return out


def freeze_fractions(train_cfg: ml_collections.ConfigDict) -> dict[str, float]:
  """`config.train.freeze` as a plain {name: fraction of all steps} (absent or empty: {})."""
  out = {}
  for name, f in dict(train_cfg.get("freeze", None) or {}).items():
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
      raise ConfigError(f"config.train.freeze[{name!r}] = {f!r}; expected a fraction of the "
                        "steps in [0, 1]")
    out[str(name)] = float(f)
  return out


def check_multiplier_names(multipliers, params, key: str = "lr_multipliers") -> None:
  """ConfigError naming every multiplier that is not a top-level key of `params`."""
  keys = sorted(params.keys())
  unknown = sorted(set(multipliers) - set(keys))
  if unknown:
    raise ConfigError(f"config.train.{key}: {', '.join(map(repr, unknown))} "
                      f"{'is not a' if len(unknown) == 1 else 'are not'} top-level parameter "
                      f"subtree{'' if len(unknown) == 1 else 's'}; the model's are {keys}")


_UNSCALED = "__unscaled__"


def scale_subtrees(multipliers: dict[str, float]) -> optax.GradientTransformation:
  """`optax.multi_transform`: the updates of top-level subtree `name` times
  `multipliers[name]` (`optax.scale`), the others unchanged; the names are checked against
  the tree (`check_multiplier_names`) when the labels are made, at `init` and `update`."""

  transforms = {k: optax.scale(m) for k, m in multipliers.items()}
  transforms[_UNSCALED] = optax.identity()
  return optax.multi_transform(transforms, _subtree_labels(multipliers))


def _subtree_labels(names, key: str = "lr_multipliers"):
  """`multi_transform` labels: a top-level subtree's name if in `names`, else `_UNSCALED`
  (`names` checked against the tree, naming `config.train.<key>`)."""

  def labels(tree):
    check_multiplier_names(names, tree, key)
    return {k: jax.tree.map(lambda _, k=k: k if k in names else _UNSCALED, v)
            for k, v in tree.items()}
  return labels


INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def run_once(fn, *args):
  """`jax.jit(fn)(*args)` for a program that runs once (an initialisation): compiled
  without backend optimisation, which halves its compile time on CPU."""
  return jax.jit(fn).lower(*args).compile(compiler_options=INIT_COMPILER_OPTIONS)(*args)


def _init_variables(model, batch: dict, constants: dict, rng: jax.Array) -> dict:
  return model.init({"params": rng, "dropout": rng}, batch, train=False,
                    tag_queries=constants.get("tag_queries"))


def init_state(config: ml_collections.ConfigDict, model, tx, rng: jax.Array,
               example_batch: dict, constants: dict, mesh) -> TrainState:
  """Initialises parameters (then loads the pretrained towers named in the config) and the
  optimizer, and places the state replicated on the mesh.

  Args:
    example_batch: a host batch (any batch size) fixing the input shapes.
  """
  batch = {k: jnp.asarray(v[:2]) for k, v in example_batch.items()}
  # compiled without backend optimisation (CPU: 3.5 s instead of 8.4 s for the demo model;
  # values equal to within float32 rounding of the initialisers)
  variables = run_once(lambda r: _init_variables(model, batch, constants, r), rng)
  params, batch_stats = load_pretrained(config, variables["params"],
                                        variables.get("batch_stats", {}))
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                     opt_state=tx.init(params))
  return parallel.replicate(state, mesh)


def abstract_variables(model, example_batch: dict, constants: dict) -> dict:
  """`{"params", "batch_stats"}` as shape/dtype structs (no computation, no optimizer)."""
  batch = {k: jnp.asarray(v) for k, v in example_batch.items()}
  variables = jax.eval_shape(lambda r: _init_variables(model, batch, constants, r),
                             jax.random.PRNGKey(0))
  return {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}


def load_pretrained(config: ml_collections.ConfigDict, params: dict,
                    batch_stats: dict) -> tuple[dict, dict]:
  """Replaces the image/text tower parameters (and a tower's BatchNorm statistics) with the
  checkpoints named in the config (each tower's own loader, `registry`)."""
  from asg_jax import registry  # pylint: disable=import-outside-toplevel
  params, batch_stats = dict(params), dict(batch_stats)
  if config.model.text.pretrained:
    tower = registry.text_tower(config.model.text.name)
    params["text_encoder"] = tower.load_pretrained(config.model.text.pretrained,
                                                   params["text_encoder"])
    logger.info("text encoder initialised from %s", config.model.text.pretrained)
  if config.model.image.pretrained:
    tower = registry.image_tower(config.model.image.name)
    params["image_encoder"], stats = tower.load_pretrained(
        config.model.image.pretrained, params["image_encoder"],
        batch_stats.get("image_encoder", {}))
    if stats:
      batch_stats["image_encoder"] = stats
    logger.info("image encoder initialised from %s", config.model.image.pretrained)
  return params, batch_stats
