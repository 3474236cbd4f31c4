"""`train_and_evaluate(config, workdir)`: the whole pre-training job, importable from notebooks.

One jitted train step over the `data` mesh (state replicated, batch sharded, state donated),
returning measurements; periodic evaluation; orbax checkpoints with automatic resume; a
NaN/Inf guard; clu writers; `<workdir>/summary.json` at the end.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from asg_jax import checkpoints, lineage, objectives, parallel, predict
from asg_jax import data as data_lib
from asg_jax import console, locking, preemption
from asg_jax import state as state_lib
from asg_jax import workdir as workdir_lib
from asg_jax.evaluators import plugins
from asg_jax.models import tag_queries, vlp

logger = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """Raised when a train step produced a NaN/Inf; the last good checkpoint is kept."""


# ----------------------------------------------------------------------------- steps
def make_train_step(model: vlp.VisionLanguageModel, tx, schedule, objective: Callable,
                    base_rng: jax.Array, apply_kwargs: Mapping | None = None) -> Callable:
  """The pure train step `(state, batch, constants) -> (state, measurements)`.

  `apply_kwargs`: extra keyword arguments of `model.apply` (e.g. `local=False`: the model
  skips what the objective does not read).

  An objective's `prepare_params` (objectives.py: MGCA's prototype normalisation) is applied
  to the parameters before the forward and the update.

  A step whose loss, any loss term or gradient norm is non-finite leaves the state
  unchanged (so a checkpoint never holds a poisoned state); `measurements['finite']` says
  which happened, and the host loop stops naming the step and the terms.
  """

  prepare = getattr(objective, "prepare_params", None)

  def train_step(state: state_lib.TrainState, batch, constants):
    rng = jax.random.fold_in(base_rng, state.step)
    params = state.params if prepare is None else prepare(state.params)

    def loss_fn(params):
      outputs, mutated = model.apply(
          {"params": params, "batch_stats": state.batch_stats}, batch, train=True,
          tag_queries=constants.get("tag_queries"), rngs={"dropout": rng},
          mutable=["batch_stats"], **(apply_kwargs or {}))
      with jax.named_scope("objective"):   # names in the HLO: benchmarks/profile_summary.py
        loss, measurements = objective(outputs, batch)
      return loss, (measurements, mutated["batch_stats"])

    (loss, (measurements, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(params)
    with jax.named_scope("update"):
      updates, opt_state = tx.update(grads, state.opt_state, params)
      params = optax.apply_updates(params, updates)
      grad_norm = optax.tree.norm(grads)
      finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
      for value in measurements.values():
        finite &= jnp.all(jnp.isfinite(value))
      new_state = state_lib.TrainState(step=state.step + 1, params=params,
                                       batch_stats=batch_stats, opt_state=opt_state)
      keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
      new_state = jax.tree.map(keep, new_state, state)
    measurements = dict(measurements, loss=loss, grad_norm=grad_norm, lr=schedule(state.step),
                        finite=finite)
    return new_state, measurements

  return train_step


@dataclasses.dataclass(frozen=True)
class TrainStep:
  """The pieces of the one training program (see `build_train_step`).

  Attributes:
    model: the VisionLanguageModel.
    tx, schedule: the optax optimizer and its learning-rate schedule.
    objective: `(outputs, batch) -> (loss, measurements)`.
    step: the jitted `(state, batch, constants) -> (state, measurements)`: state
      replicated and donated, batch sharded over the `data` axis, measurements replicated.
  """
  model: vlp.VisionLanguageModel
  tx: optax.GradientTransformation
  schedule: Callable
  objective: Callable
  step: Callable


def dropout_key(config: ml_collections.ConfigDict, rng: jax.Array) -> jax.Array:
  """The base key of the step's dropout: `rng` itself ("threefry"), or an "rbg" key made
  from its bits (`config.train.dropout_prng`: XLA's RngBitGenerator, cheaper on GPU/TPU)."""
  if config.train.get("dropout_prng", "threefry") == "threefry":
    return rng
  seed = jax.random.bits(rng, (), jnp.uint32)
  return jax.random.key(seed, impl="rbg")


def build_train_step(config: ml_collections.ConfigDict, mesh: jax.sharding.Mesh, *,
                     num_steps: int, dropout_rng: jax.Array) -> TrainStep:
  """The jitted train step of `config` on `mesh`: what `train_and_evaluate` runs and what
  benchmarks/train_step.py measures (one program, built in one place)."""
  dropout_rng = dropout_key(config, dropout_rng)
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  tx, schedule = state_lib.make_optimizer(config.train, num_steps)
  objective = objectives.make_objective(config)
  apply_kwargs = {} if objectives.needs_local_outputs(config) else {"local": False}
  step = jax.jit(
      make_train_step(model, tx, schedule, objective, dropout_rng, apply_kwargs),
      in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh),
                    parallel.replicated(mesh)),
      out_shardings=(parallel.replicated(mesh), parallel.replicated(mesh)), donate_argnums=(0,))
  return TrainStep(model=model, tx=tx, schedule=schedule, objective=objective, step=step)


# ----------------------------------------------------------------------------- helpers
def num_train_steps(config: ml_collections.ConfigDict, num_train_examples: int) -> int:
  if config.train.num_steps > 0:
    return int(config.train.num_steps)
  steps_per_epoch = num_train_examples // config.train.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} is larger than the "
                     f"{num_train_examples} training examples")
  return int(config.train.num_epochs * steps_per_epoch)


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else \
      f"{seconds // 60}m{seconds % 60:02d}s"


def _check_finite(step: int, measurements: Mapping[str, np.ndarray]) -> None:
  if bool(measurements["finite"]):
    return
  bad = sorted(k for k, v in measurements.items()
               if k != "finite" and not np.all(np.isfinite(np.asarray(v, np.float64))))
  raise NonFiniteLossError(
      f"non-finite training measurements at step {step}: {', '.join(bad) or 'gradients'} "
      f"(the update was skipped; the last checkpoint holds the last good state)")


SMALL_EVAL_SPLIT = 100   # below this many validation examples the figures are noisy


def config_fingerprint(config: ml_collections.ConfigDict) -> str:
  """SHA-256 of the resolved config (what a finished run's summary.json is tied to), less
  the keys that only say what a rerun does (`config.RERUN_POLICY_KEYS`)."""
  from asg_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  tree = config_lib.without_rerun_policy(json.loads(config.to_json_best_effort(sort_keys=True)))
  return hashlib.sha256(json.dumps(tree, sort_keys=True).encode("utf-8")).hexdigest()


def finished_summary(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """The summary of a COMPLETED run of exactly this config in `workdir`, else None: its
  summary.json names this config and the step of the latest checkpoint."""
  path = os.path.join(workdir, "summary.json")
  if not os.path.isfile(path) or not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return None
  summary = checkpoints.read_json(path)   # None when half-written: the run ends again
  if summary is None or summary.get("config_fingerprint") != config_fingerprint(config):
    return None
  step = checkpoints.Manager(workdir, config.train.keep_checkpoints).latest_step()
  return summary if step is not None and step == summary.get("steps") else None


write_config = workdir_lib.write_config


def _note_config_changes(config: ml_collections.ConfigDict, workdir: str) -> None:
  """A workdir with checkpoints resumed under a changed config: say which keys changed and
  keep the old config.json as config.until_step{N}.json (nothing is overwritten)."""
  step = max(checkpoints.saved_steps(workdir), default=0)
  try:
    changes = workdir_lib.config_changes(config, workdir) if step else []
  except ValueError:   # a config.json half-written by a killed run: replaced below
    changes = []
  if not changes:
    return
  kept = workdir_lib.keep_previous_config(workdir, step)
  shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
  print(f"The config differs from the one {workdir} was trained with up to step {step}: "
        f"{shown}. Training resumes from step {step} under the new config (that one is kept "
        f"as {os.path.basename(kept)}); pass another --workdir to start afresh.", flush=True)


# ----------------------------------------------------------------------------- main loop
def _holding_workdir(fn: Callable) -> Callable:
  """`fn(config, workdir, ...)` run holding the workdir's lock (asg_jax/locking.py): one run
  per workdir; a second is refused at once with a line naming this one's pid and host."""
  @functools.wraps(fn)
  def wrapper(config, workdir, *args, **kwargs):
    with locking.hold_workdir(workdir, jax.process_index()):
      return fn(config, workdir, *args, **kwargs)
  return wrapper


@_holding_workdir
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, data=None,
                       reevaluate: bool = False) -> dict:
  """Pre-trains and evaluates; resumes from `<workdir>/checkpoints` if present.

  Rerunning a finished job (same config, summary.json at the latest checkpoint) is a no-op
  that returns the existing summary and leaves it as it was; `reevaluate=True` evaluates the
  last checkpoint again and rewrites summary.json. The early-stopping state (best value,
  evaluations without improvement, why training stopped) is part of every checkpoint, so a
  resumed run stops where an uninterrupted one would.

  Args:
    config: a config from configs/ (see asg_jax/config.py for every key).
    workdir: output folder: checkpoints/, best/, TensorBoard events, config.json,
      summary.json.
    data: a data source (`asg_jax.data.pipeline.data_source.DataSource`, or one with its
      interface); `asg_jax.data.prepare(config, workdir)` prepares it when None.
    reevaluate: evaluate a finished run again (see above).
  Returns:
    the summary dict also written to `<workdir>/summary.json`.
  Raises:
    preemption.Preempted: on SIGTERM / SIGINT, after checkpointing the step in progress
      (asg_jax/preemption.py; rerunning continues from it).
    NonFiniteLossError: a non-finite loss (the last good checkpoint is kept).
    locking.WorkdirBusyError: another live run holds `workdir` (nothing is written).
  """
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  os.makedirs(workdir, exist_ok=True)
  # the data (and vocabulary) the checkpoints were trained on, before the data is touched:
  # refuses, continues or moves the old run aside when it changed (config.data.on_change)
  binding = lineage.check(config, workdir) if data is None else None
  finished = finished_summary(config, workdir)
  if finished is not None and not reevaluate and not (binding and binding.changed):
    print(f"Already finished: {workdir} holds the completed run of this config (step "
          f"{finished['steps']}, {finished.get('stopped')}); summary.json is kept as it was. "
          f"Pass --reevaluate to evaluate the last checkpoint again.", flush=True)
    return finished
  if jax.process_index() == 0:
    _note_config_changes(config, workdir)
    write_config(config, workdir)
  mesh = parallel.make_mesh(config.train.num_devices or None)
  if config.train.batch_size % mesh.size or config.eval.batch_size % mesh.size:
    raise ValueError(f"config.train.batch_size={config.train.batch_size} and "
                     f"config.eval.batch_size={config.eval.batch_size} must be divisible by "
                     f"the {mesh.size} devices")

  if data is None:   # generate, build, learn the vocabulary (process 0); then only read
    data = data_lib.prepare(config, workdir, bound_tokenizer=lineage.bound_tokenizer(workdir))
  num_steps = num_train_steps(config, data.num_train_examples)
  _warn_small_eval_split(getattr(data, "num_eval_examples", None), config)

  rng = jax.random.PRNGKey(config.seed)
  init_rng, dropout_rng, query_rng = jax.random.split(rng, 3)
  program = build_train_step(config, mesh, num_steps=num_steps, dropout_rng=dropout_rng)
  model, tx, objective, train_step = program.model, program.tx, program.objective, program.step

  with jax.set_mesh(mesh):
    host_constants = tag_queries.make_constants(config, data.tokenizer, query_rng)
    if jax.process_index() == 0:   # tokenizer.json is never rewritten under a checkpoint
      workdir_lib.save_inference_files(
          workdir, None if lineage.bound_tokenizer(workdir) else data.tokenizer, host_constants)
      if binding is not None:
        lineage.record(workdir, binding, {config.data.train_split: data.num_train_examples,
                                          config.data.eval_split: data.num_eval_examples})
    constants = parallel.replicate(host_constants, mesh)
    with console.step("Initialising the model"):
      state = state_lib.init_state(config, model, tx, init_rng, data.example_batch(), constants,
                                   mesh)
    manager = checkpoints.Manager(workdir, config.train.keep_checkpoints, repair=True)
    state, start_step = manager.restore_latest(state)
    loop_state = manager.restore_loop(start_step) if start_step else {}
    if start_step:
      logger.info("resumed from %s at step %d", manager.directory, start_step)
      print(f"Resuming from step {start_step} ({manager.directory})", flush=True)

    predict_fns = predict.make_predict_fns(model, data.tokenizer, config, objective=objective)
    evaluators = plugins.from_config(
        config, predict_fns, mesh=mesh, constants=constants,
        batches=lambda dataset, split: console.with_progress(
            functools.partial(data.eval_batches, split=split, dataset=dataset),
            desc=f"evaluating {dataset or config.data.name}:{split or config.data.eval_split}",
            total=_eval_num_batches(data, config, dataset, split)))

    writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
    if start_step == 0:
      writer.write_hparams({k: v for k, v in _flat(config.to_dict()).items()
                            if isinstance(v, (int, float, str, bool))})

    def evaluate(state, done: int, only_due: bool) -> dict | None:
      due = [e for e in evaluators if not only_due or e.due(done, num_steps)]
      if not due:
        return None
      t_eval = time.time()
      values = {}
      for e in due:
        values.update(e.run(state))
      result = {"metrics": {k: v for k, v in values.items() if not k.startswith("chance/")},
                "chance": {k[len("chance/"):]: v for k, v in values.items()
                           if k.startswith("chance/")},
                "evaluators": [e.name for e in due], "seconds": time.time() - t_eval}
      result["num_examples"] = max([e.data.num_examples for e in due] or [0])
      return result

    history: list[dict] = []
    # (step, device measurements) not fetched yet: fetched together every log_every steps,
    # and before any evaluation or checkpoint (so no non-finite step goes unchecked before
    # a checkpoint is written; a non-finite step never changes the state anyway)
    pending: list = []

    def fetch_pending():
      history.extend(_to_host(step_, m) for step_, m in zip(
          [p[0] for p in pending], jax.device_get([p[1] for p in pending])))
      pending.clear()
    best = dict(loop_state.get("best", {}))
    stalls = int(loop_state.get("stalls", 0))
    stopped = loop_state.get("stopped")    # set once training has ended (early stopping)
    loop = lambda: {"best": best, "stalls": stalls, "stopped": stopped}  # noqa: E731
    t0, s0 = time.time(), start_step
    t_rate, s_rate = t0, s0   # the rate and ETA count steps after the first (compiling) one
    last_eval = None
    final = {"metrics": {}, "chance": {}}     # the latest value of every metric
    warned_metric = False
    train_iter = parallel.prefetch_to_mesh(data.train_batches(start_step), mesh,
                                           config.train.device_prefetch)
    with preemption.Guard() as guard:
      for step in range(start_step, num_steps if stopped is None else start_step):
        batch = next(train_iter)
        if step == start_step:
          with console.step("Compiling the train step"):
            state, measurements = train_step(state, batch, constants)
            jax.block_until_ready(measurements)
          t_rate, s_rate = time.time(), step + 1
        else:
          state, measurements = train_step(state, batch, constants)
        pending.append((step, measurements))
        done = step + 1
        is_last = done == num_steps
        if done % config.train.log_every == 0 or is_last:
          fetch_pending()
          _log_train(writer, history, done, num_steps, t_rate, s_rate)
          history = []
        result = evaluate(state, done, only_due=True)
        if result is not None:
          t_rate += result["seconds"]   # evaluation time is not train-step time
          fetch_pending()
          last_eval = result
          final["metrics"].update(result["metrics"])
          final["chance"].update(result["chance"])
          writer.write_scalars(done, {f"val/{k}": v for k, v in last_eval["metrics"].items()})
          _print_eval(done, last_eval)
          metric = last_eval["metrics"].get(config.eval.best_metric)
          if metric is None:
            if not warned_metric:
              print(f"WARNING: config.eval.best_metric {config.eval.best_metric!r} is not among "
                    f"the evaluation metrics {sorted(last_eval['metrics'])}: no best "
                    f"checkpoint, no early stopping", flush=True)
              warned_metric = True
          elif metric < best.get("value", math.inf):
            best = {"step": done, "metric": config.eval.best_metric, "value": float(metric)}
            stalls = 0
            manager.save_best(done, state, best)
          else:
            stalls += 1
          if config.train.early_stop_patience and stalls >= config.train.early_stop_patience:
            stopped = f"early stopping: no {config.eval.best_metric} improvement in {stalls} evals"
            manager.save(done, state, loop(), force=True)
            break
        if done % config.train.checkpoint_every == 0 or is_last:
          fetch_pending()   # never checkpoint before the guard has seen these steps
          manager.save(done, state, loop())
        if guard.requested:   # SIGTERM / SIGINT: this step is done; checkpoint it and stop
          fetch_pending()
          if not (done % config.train.checkpoint_every == 0 or is_last):   # not saved above
            manager.save(done, state, loop(), force=True)
          manager.wait()
          writer.flush()
          raise preemption.Preempted(done, guard.signal_name, manager.directory)
    fetch_pending()
    if last_eval is None:   # nothing trained here (resumed at the end, or reevaluate)
      last_eval = evaluate(state, int(jax.device_get(state.step)), only_due=False) or {
          "metrics": {}, "chance": {}, "num_examples": 0}
      final["metrics"].update(last_eval["metrics"])
      final["chance"].update(last_eval["chance"])
      _print_eval(int(jax.device_get(state.step)), last_eval)
    manager.wait()
    writer.flush()

  summary = {
      "name": config.name,
      "metrics": final["metrics"],
      "chance": final["chance"],
      "num_eval_examples": last_eval["num_examples"],
      "steps": int(jax.device_get(state.step)),
      "num_steps": num_steps,
      "stopped": stopped or "completed",
      "best": dict(best, stalls=stalls),
      "train_seconds": round(time.time() - t0, 1),
      "devices": f"{mesh.size} x {jax.devices()[0].device_kind}",
      "config_fingerprint": config_fingerprint(config),
  }
  path = (workdir_lib.write_summary(workdir, summary) if jax.process_index() == 0 else
          os.path.join(workdir, workdir_lib.SUMMARY_FILE))
  print(f"Summary written to {path}", flush=True)
  return summary


def _warn_small_eval_split(num_eval: int | None, config: ml_collections.ConfigDict) -> None:
  if num_eval is None:
    return
  if num_eval == 0:
    raise ValueError(f"the evaluation split {config.data.eval_split!r} is empty: no "
                     f"validation loss, no best checkpoint (give the data a validation split)")
  if num_eval < SMALL_EVAL_SPLIT:
    print(f"WARNING: the evaluation split {config.data.eval_split!r} has only {num_eval} "
          f"examples: validation loss and retrieval figures over so few are noisy "
          f"(retrieval top-1 chance = 1/{num_eval}); early stopping on it is unreliable",
          flush=True)


def _to_host(step: int, measurements) -> dict:
  host = jax.device_get(measurements)
  _check_finite(step, host)
  return {k: float(np.mean(v)) for k, v in host.items() if k != "finite"}


def _log_train(writer, history: list[dict], done: int, num_steps: int, t0: float, s0: int):
  means = {f"train/{k}": float(np.mean([h[k] for h in history])) for k in history[0]}
  elapsed = time.time() - t0
  rate = (done - s0) / max(elapsed, 1e-9) if done > s0 else math.nan   # t0, s0: after compiling
  if math.isfinite(rate):
    means["train/steps_per_sec"] = rate
  writer.write_scalars(done, means)
  terms = " ".join(f"{k[6:]}={v:.4g}" for k, v in means.items()
                   if k[6:] not in ("lr", "grad_norm", "steps_per_sec", "loss"))
  print(f"step {done}/{num_steps} | loss {means['train/loss']:.4f} | {terms} | "
        f"lr {means['train/lr']:.2e} | {rate:.2f} steps/s | "
        f"ETA {_format_eta((num_steps - done) / max(rate, 1e-9)) if rate > 0 else '?'}",
        flush=True)


def _eval_num_batches(data, config, dataset: str, split: str) -> int | None:
  """Batches of one pass over the pre-training eval split (for its progress bar), else None."""
  num = getattr(data, "num_eval_examples", None)
  if dataset or split not in ("", config.data.eval_split) or not num:
    return None
  return math.ceil(num / config.eval.batch_size)


def _print_eval(done: int, result: dict) -> None:
  parts = [f"{k}={v:.4f}" for k, v in sorted(result["metrics"].items())]
  print(f"eval @ step {done} ({result['num_examples']} examples): " + " ".join(parts),
        flush=True)


def _flat(d: Mapping, prefix: str = "") -> dict:
  out = {}
  for k, v in d.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
