"""Evaluators as plug-ins, declared in `config.evals` (big_vision's `from_config` idea).

Every entry `config.evals.<name>` is a ConfigDict with

  type         the evaluator: a name in `registry.EVALUATORS`, or a full dotted module
               path (an evaluator living outside the package, e.g. in a test)
  every_steps  run every this many steps (and at the last step); 0 = only at the end;
               -1 = `config.eval.every_steps`
  split        the split to evaluate ("" = `config.data.eval_split`)
  dataset      "" = the pre-training data, else a tfds `name` or `name/config` stored in the
               pre-training layout (interfaces.md §1)
  prefix       prepended to every metric name ("" keeps the names as they are)
  ...          the evaluator's own keyword arguments (checked against its signature: an
               unknown key is an error naming it and the accepted ones)

and its module exposes `Evaluator(predict_fns, *, data, **kwargs)` with
`run(state) -> Iterator[(metric_name, value)]`, also yielding `chance/<metric_name>` where a
chance level exists.

`predict_fns` (`asg_jax.predict.PredictFns`) are built once (train.py) and shared by all
evaluators:

  predict_fns.outputs(variables, batch, constants) -> the model's named outputs (§3),
                           traced inside the pass's jit
  predict_fns.objective(outputs, batch) -> (loss, measurements)
  predict_fns.embed_texts(state, texts) -> [K, E] report embeddings of free texts
  predict_fns.info         `predict.ModelInfo`: input geometry, patch grid, tower

`data` is the `SplitPass` of the evaluator's (dataset, split): evaluators `register` a
per-batch function (traced inside one jit with the model) and call `run(state)`; the pass
runs the model ONCE per split and state for every evaluator registered on it.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Iterator, Mapping

import jax
import ml_collections
import numpy as np

from asg_jax import parallel, registry
from asg_jax.errors import ConfigError

# keys every config.evals entry has (the rest goes to the Evaluator)
COMMON_KEYS = ("type", "every_steps", "split", "dataset", "prefix")


class SplitPass:
  """One pass over one split, shared by the evaluators registered on it.

  Registered per-batch functions `fn(outputs, batch) -> dict[str, array]` run inside one jit
  with the model: arrays with a leading batch axis are per-example (padding rows dropped,
  concatenated over the split); scalars are batch means, averaged over the split weighted by
  each batch's number of real examples (an exact per-example mean). A partial last batch is
  run at its real size (unsharded), so padding never enters a softmax.
  """

  def __init__(self, predict_fns: Mapping[str, Any], batches: Callable[[], Iterator[dict]],
               mesh, constants: Mapping[str, Any]):
    self._predict, self._batches = predict_fns, batches
    self._mesh, self._constants = mesh, constants
    self._fns: dict[str, Callable] = {}
    self._jitted = None
    self._cache: tuple[int, dict] | None = None
    self.num_examples = 0      # of the last pass

  def register(self, name: str, fn: Callable) -> None:
    """Add a per-batch function (before the first `run`)."""
    if name in self._fns:
      raise ValueError(f"a per-batch function named {name!r} is already registered")
    self._fns[name] = fn
    self._jitted = None
    self._cache = None

  def _step(self):
    fns, outputs_fn = dict(self._fns), self._predict.outputs

    def step(state, batch, constants):
      outputs = outputs_fn({"params": state.params, "batch_stats": state.batch_stats}, batch,
                           constants)
      return {name: fn(outputs, batch) for name, fn in fns.items()}
    # outputs replicated: every process can fetch the global batch's values (multi-host)
    return jax.jit(step, out_shardings=parallel.replicated(self._mesh))

  @staticmethod
  def _global_rows(inputs: dict, valid: np.ndarray) -> tuple[dict, np.ndarray]:
    """Multi-host: every process's rows and `valid`, concatenated in process order (the
    row order of the global batch), on every process."""
    if jax.process_count() == 1:
      return inputs, valid
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    gathered = multihost_utils.process_allgather(dict(inputs, valid=valid))
    rows = {k: np.concatenate(list(v)) for k, v in gathered.items()}
    return {k: v for k, v in rows.items() if k != "valid"}, rows["valid"]

  def run(self, state) -> dict[str, dict[str, np.ndarray | float]]:
    """{registered name: {key: per-example array [N, ...] or split mean}} (memoised on the
    state's step)."""
    step = int(jax.device_get(state.step))
    if self._cache is not None and self._cache[0] == step:
      return self._cache[1]
    if self._jitted is None:
      self._jitted = self._step()
    per_example: dict[tuple[str, str], list[np.ndarray]] = {}
    means: dict[tuple[str, str], float] = {}
    total = 0
    for host_batch in self._batches():
      local_valid = np.asarray(host_batch.get("valid", np.ones(len(host_batch["image"]), bool)))
      local_inputs = {k: v for k, v in host_batch.items() if k != "valid"}
      inputs, valid = self._global_rows(local_inputs, local_valid)
      n_valid = int(valid.sum())
      if n_valid == 0:      # all-padding batch (other processes have more examples)
        continue
      if n_valid == len(valid):
        batch = parallel.shard_batch(local_inputs, self._mesh)
      else:                 # the real rows only (of every process), unsharded: dense losses
        batch = {k: np.asarray(v)[valid] for k, v in inputs.items()}   # over exactly these
      out = jax.device_get(self._jitted(state, batch, self._constants))
      for name, values in out.items():
        for key, value in values.items():
          value = np.asarray(value)
          if value.ndim == 0:
            means[(name, key)] = means.get((name, key), 0.0) + float(value) * n_valid
          else:
            per_example.setdefault((name, key), []).append(value)
      total += n_valid
    if total == 0:
      raise ValueError("the evaluation split has no example")
    result: dict[str, dict] = {name: {} for name in self._fns}
    for (name, key), values in per_example.items():
      result[name][key] = np.concatenate(values)
    for (name, key), value in means.items():
      result[name][key] = value / total
    for name in result:
      result[name]["num_examples"] = total
    self.num_examples = total
    self._cache = (step, result)
    return result


@dataclasses.dataclass
class Scheduled:
  """An evaluator with its schedule and metric-name prefix."""
  name: str
  evaluator: Any
  every_steps: int
  prefix: str
  data: SplitPass

  def due(self, step: int, last_step: int) -> bool:
    return step == last_step or (self.every_steps > 0 and step % self.every_steps == 0)

  def run(self, state) -> Iterator[tuple[str, float]]:
    for key, value in self.evaluator.run(state):
      if key.startswith("chance/"):
        yield f"chance/{self.prefix}{key[len('chance/'):]}", value
      else:
        yield f"{self.prefix}{key}", value


def check_entry(name: str, entry: ml_collections.ConfigDict,
                table: Mapping[str, str] = registry.EVALUATORS):
  """The evaluator module of `config.evals.<name>` (looked up in `table`); ConfigError
  naming the key when `entry` is not valid for it."""
  missing = [k for k in COMMON_KEYS if k not in entry]
  if missing:
    raise ConfigError(f"config.evals.{name} lacks {missing} (add entries with "
                      f"config.add_eval)")
  module = registry.evaluator_module(table, entry.type, f"evals.{name}.type")
  params = inspect.signature(module.Evaluator).parameters
  accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
  allowed = [k for k, p in params.items() if k not in ("self", "predict_fns", "data")
             and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
  for key in entry:
    if key not in COMMON_KEYS and key not in allowed and not accepts_any:
      raise ConfigError(f"config.evals.{name}.{key}: unknown key for evaluator type "
                        f"{entry.type!r}; it accepts {sorted(allowed)} besides {list(COMMON_KEYS)}")
  return module


def from_config(config: ml_collections.ConfigDict, predict_fns: Mapping[str, Any], *,
                batches: Callable[[str, str], Callable[[], Iterator[dict]]], mesh,
                constants) -> list[Scheduled]:
  """Build every `config.evals` entry.

  Args:
    batches: `batches(dataset, split)` -> a function returning one pass of eval host
      batches (with `valid`) of that dataset ("" = pre-training data) and split.
  """
  passes: dict[tuple[str, str], SplitPass] = {}
  out = []
  for name in sorted(config.evals):
    entry = config.evals[name]
    module = check_entry(name, entry)
    split = entry.split or config.data.eval_split
    key = (entry.dataset, split)
    if key not in passes:
      passes[key] = SplitPass(predict_fns, batches(entry.dataset, split), mesh, constants)
    kwargs = {k: v for k, v in entry.items() if k not in COMMON_KEYS}
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    evaluator = module.Evaluator(predict_fns, data=passes[key], **kwargs)
    every = config.eval.every_steps if entry.every_steps < 0 else entry.every_steps
    out.append(Scheduled(name, evaluator, int(every), entry.prefix, passes[key]))
  return out
