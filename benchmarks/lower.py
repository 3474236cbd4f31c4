"""Does a recipe lower for TPU / GPU? Export its real programs from any machine, no device.

    .venv/bin/python benchmarks/lower.py --platform tpu|cuda --config configs/asg_vit_b16.py
        [--devices 8] [--batch B] [--what train|eval] [--attention einsum|auto|xla|cudnn]

Simulates `--devices` CPU devices (`--xla_force_host_platform_device_count`, set before
JAX starts), builds the program the job runs on a `data` mesh over them and exports it with
`jax.export.export(fn, platforms=(platform,))` from abstract arguments (shape/dtype structs
carrying their shardings: no parameter is initialised, nothing is compiled or run):

- `--what train`: the recipe's train step, `asg_jax.train.build_train_step` (its dtype,
  attention, remat, objective; state replicated and donated, batch sharded over `data`), at
  global batch B (default `config.train.batch_size`);
- `--what eval`: the evaluation programs at B (default `config.eval.batch_size`): the
  split pass of `config.evals` (`evaluators.plugins.SplitPass`: the model's outputs and every
  registered per-batch function, val loss included, in one jit), `encode_images` and the
  text tower's `encode_text` (`asg_jax/predict.py`).

The exported StableHLO is then checked: exported for `--devices` devices, no host callback
(jax.export refuses those itself) and no CPU-only custom call. A setting that cannot lower
without its device (`attention_impl='cudnn'`: cuDNN is asked for its version while tracing;
and it has no TPU kernel) is reported as not ok with the setting named.

The last line printed is one JSON object: `platform, config, devices, batch, ok, ops`
(StableHLO operations in the exported module(s)), `custom_calls` ({call target: count}),
`seconds` (building + exporting), `error` (null or one line). Exit status 0 when ok.
Tests import it (tests/test_lower.py): `lower_recipe`, `export_and_check`.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import re
import sys
import time
from typing import Any, Callable, Sequence

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PLATFORMS = ("tpu", "cuda")

# custom-call targets that call back into Python or exist only in the CPU runtime (LAPACK,
# DUCC FFT): a program holding one would not load on the accelerator, or stall on the host.
# (Host-memory offloading is no callback: `annotate_device_placement`, not matched.)
HOST_OR_CPU_TARGETS = re.compile(r"callback|lapack_|ducc_|cpu", re.IGNORECASE)
# host transfers (how a TPU program calls back into Python)
HOST_TRANSFER_OPS = ("stablehlo.send", "stablehlo.recv", "stablehlo.outfeed",
                     "stablehlo.infeed")
# an operation starts its line, after its results if any: `%3:2 = "stablehlo.while"(...)`
_OP = re.compile(r'^\s*(?:%[^=]*=\s*)?"?((?:stablehlo|chlo|sdy)\.[a-z_0-9]+)"?(?=[\s(<{@"]|$)')
_CUSTOM_CALL = re.compile(
    r'stablehlo\.custom_call"?\s*@([\w$.\-]+)|call_target_name\s*=\s*"([^"]+)"')


# ----------------------------------------------------------------------------- checking
def count_ops(mlir_text: str) -> tuple[collections.Counter, collections.Counter]:
  """StableHLO (+ chlo / sdy) operations and custom-call targets in a module's text.

  Returns:
    (Counter {op name: count}, Counter {custom-call target: count}).
  """
  ops: collections.Counter = collections.Counter()
  calls: collections.Counter = collections.Counter()
  for line in mlir_text.splitlines():
    match = _OP.search(line)
    if match:
      ops[match.group(1)] += 1
    if "custom_call" in line:
      for target in _CUSTOM_CALL.findall(line):
        calls[target[0] or target[1]] += 1
  return ops, calls


def problems_of(ops: collections.Counter, calls: collections.Counter) -> list[str]:
  """What in a module would not run on the accelerator on its own (empty: nothing)."""
  out = [f"host/CPU-only custom call {t!r}" for t in sorted(calls) if HOST_OR_CPU_TARGETS.search(t)]
  out += [f"host transfer op {op}" for op in HOST_TRANSFER_OPS if ops.get(op)]
  return out


def host_callbacks(fn: Callable, args: Sequence[Any]) -> list[str]:
  """The host-callback primitives (`jax.debug.callback`, `jax.pure_callback`,
  `io_callback`) in `fn`'s jaxpr, nested ones included (what explains a failed export)."""
  from jax.extend.core import jaxprs_in_params  # pylint: disable=import-outside-toplevel
  try:
    jaxpr = fn.trace(*args).jaxpr
  except Exception:  # pylint: disable=broad-except  (no diagnosis then)
    return []
  found: set[str] = set()

  def walk(j):
    for eqn in j.eqns:
      if "callback" in eqn.primitive.name:
        found.add(eqn.primitive.name)
      for sub in jaxprs_in_params(eqn.params):
        walk(sub)
  walk(jaxpr.jaxpr if hasattr(jaxpr, "jaxpr") else jaxpr)
  return sorted(found)


def one_line(error: BaseException | str, limit: int = 400) -> str:
  text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def export_and_check(fn: Callable, args: Sequence[Any], *, platform: str,
                     devices: int) -> dict:
  """`jax.export.export(fn, platforms=(platform,))(*args)` and the checks of the module.

  Args:
    fn: a `jax.jit`-wrapped function (its in/out shardings as the job runs it).
    args: abstract arguments (`jax.ShapeDtypeStruct`s with shardings; pytrees of them).
    devices: how many devices the module must be sharded for.
  Returns:
    {"ok", "ops" (Counter), "custom_calls" (Counter), "nr_devices", "error" (None or one
    line), "exported" (the `jax.export.Exported`, None when the export failed)}.
  """
  import jax  # pylint: disable=import-outside-toplevel
  try:
    exported = jax.export.export(fn, platforms=(platform,))(*args)
  except Exception as e:  # pylint: disable=broad-except  (the report says what failed)
    callbacks = host_callbacks(fn, args)
    error = (f"host callback in the program ({', '.join(callbacks)}): " if callbacks else "") + \
        one_line(e)
    return {"ok": False, "ops": collections.Counter(), "custom_calls": collections.Counter(),
            "nr_devices": None, "error": one_line(error), "exported": None}
  ops, calls = count_ops(exported.mlir_module())
  problems = problems_of(ops, calls)
  if exported.nr_devices != devices:
    problems.append(f"exported for {exported.nr_devices} devices, not {devices}")
  if tuple(exported.platforms) != (platform,):
    problems.append(f"exported for {exported.platforms}, not ({platform!r},)")
  return {"ok": not problems, "ops": ops, "custom_calls": calls,
          "nr_devices": exported.nr_devices, "error": "; ".join(problems) or None,
          "exported": exported}


# ----------------------------------------------------------------------------- programs
def load_config(spec: str, *, attention: str = ""):
  """`configs/<recipe>.py[:arg]` (relative to the repo or absolute) as the job loads it;
  `attention` (optional) sets both towers' `attention_impl` (fused: BERT attention
  dropout 0, as benchmarks/train_step.py does)."""
  from asg_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  path, sep, arg = spec.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(REPO, path)
  config = config_lib.load_recipe(path + sep + arg)
  if attention:
    with config.unlocked():
      for tower in (config.model.image, config.model.text):
        tower.attention_impl = attention
      if attention != "einsum":
        config.model.text.attention_dropout = 0.0
  return config


def device_only_settings(config, platform: str) -> list[str]:
  """Settings of `config` that cannot lower for `platform` from this machine."""
  out = []
  for tower in ("image", "text"):
    if config.model[tower].attention_impl == "cudnn":
      why = ("cuDNN fused attention has no TPU kernel" if platform != "cuda" else
             "cuDNN fused attention asks the local GPU's cuDNN version while tracing, so it "
             "lowers only on a GPU machine")
      out.append(f"config.model.{tower}.attention_impl='cudnn': {why}")
  return out


def _sds(x, sharding):
  import jax  # pylint: disable=import-outside-toplevel
  return jax.ShapeDtypeStruct(x.shape, jax.dtypes.canonicalize_dtype(x.dtype), sharding=sharding)


def abstract_batch(config, batch_size: int, mesh) -> dict:
  """The interfaces.md §2 batch at global size `batch_size`, as shape structs sharded over
  `data` (shapes and dtypes from `asg_jax.data.pipeline.random_batch`, as the feed makes them)."""
  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax import parallel  # pylint: disable=import-outside-toplevel
  from asg_jax.data.pipeline import random_batch  # pylint: disable=import-outside-toplevel
  sharding = parallel.batch_sharding(mesh)
  return {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:],
                                  jax.dtypes.canonicalize_dtype(v.dtype), sharding=sharding)
          for k, v in random_batch.random_batch(config, 2).items()}


def host_constants(config) -> dict:
  """Stand-ins for `tag_queries.make_constants` at its shapes (zeros: only shapes matter)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from asg_jax.models import tag_queries  # pylint: disable=import-outside-toplevel
  from asg_jax.data.pipeline import random_batch  # pylint: disable=import-outside-toplevel
  if not config.model.tag_decoder.enabled:
    return {}
  return {"tag_queries": np.zeros((random_batch.NUM_TAGS, config.model.text.hidden_size),
                                  np.float32),
          tag_queries.TAG_QUERY_RNG: tag_queries.rng_data(jax.random.PRNGKey(0))}


def abstract_state(config, program, mesh):
  """The replicated `TrainState` as shape structs (`jax.eval_shape` of the model's init and
  the optimizer's: nothing is initialised)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from asg_jax import parallel  # pylint: disable=import-outside-toplevel
  from asg_jax import state as state_lib  # pylint: disable=import-outside-toplevel
  from asg_jax.data.pipeline import random_batch  # pylint: disable=import-outside-toplevel
  variables = state_lib.abstract_variables(program.model, random_batch.random_batch(config, 2),
                                           host_constants(config))
  state = state_lib.TrainState(
      step=jax.ShapeDtypeStruct((), jnp.int32), params=variables["params"],
      batch_stats=variables["batch_stats"],
      opt_state=jax.eval_shape(program.tx.init, variables["params"]))
  replicated = parallel.replicated(mesh)
  return jax.tree.map(lambda x: _sds(x, replicated), state)


def train_programs(config, mesh, batch_size: int) -> dict[str, tuple[Callable, tuple]]:
  """{"train_step": (the jitted step of `train.build_train_step`, its abstract args)}."""
  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax import parallel, train  # pylint: disable=import-outside-toplevel
  program = train.build_train_step(config, mesh, num_steps=max(config.train.num_steps, 1000),
                                   dropout_rng=jax.random.PRNGKey(0))
  replicated = parallel.replicated(mesh)
  constants = jax.tree.map(lambda x: _sds(x, replicated), host_constants(config))
  args = (abstract_state(config, program, mesh), abstract_batch(config, batch_size, mesh),
          constants)
  return {"train_step": (program.step, args)}


def eval_programs(config, mesh, batch_size: int) -> dict[str, tuple[Callable, tuple]]:
  """The evaluation programs at `batch_size`: `eval_pass[<evaluators>]` (the jitted pass
  of `config.evals` that pre-training runs, one per (dataset, split)), `encode_images`,
  `encode_text`."""
  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax import parallel, predict, train  # pylint: disable=import-outside-toplevel
  from asg_jax.evaluators import plugins  # pylint: disable=import-outside-toplevel
  program = train.build_train_step(config, mesh, num_steps=max(config.train.num_steps, 1000),
                                   dropout_rng=jax.random.PRNGKey(0))
  replicated = parallel.replicated(mesh)
  state = abstract_state(config, program, mesh)
  constants = jax.tree.map(lambda x: _sds(x, replicated), host_constants(config))
  batch = abstract_batch(config, batch_size, mesh)
  fns = predict.make_predict_fns(program.model, None, config, objective=program.objective)
  evaluators = plugins.from_config(config, fns, mesh=mesh, constants=constants,
                                       batches=lambda dataset, split: (lambda: iter(())))
  out = {}
  passes = {id(e.data): e for e in evaluators}
  for e in passes.values():
    name = f"eval_pass[{','.join(x.name for x in evaluators if x.data is e.data)}]"
    out[name] = (e.data._step(), (state, batch, constants))   # pylint: disable=protected-access
  # what the transfer evaluators call on batches of images (the optimizer state unused)
  out["encode_images"] = (jax.jit(fns.encode_images),
                          (state.replace(opt_state=None), batch["image"]))
  tokens = {k: batch[k] for k in ("input_ids", "attention_mask", "word_ids")}
  out["encode_text"] = (jax.jit(fns.encode_texts), (state.replace(opt_state=None), tokens))
  return out


# ----------------------------------------------------------------------------- one report
def lower_recipe(config, *, platform: str, devices: int, batch: int | None = None,
                 what: str = "train", name: str = "") -> dict:
  """Build and export the recipe's programs for `platform` on a mesh of `devices` devices.

  Returns:
    {"report": the JSON object main prints, "programs": {program name: export_and_check's
    result}}.
  """
  from asg_jax import parallel  # pylint: disable=import-outside-toplevel
  if platform not in PLATFORMS:
    raise ValueError(f"platform {platform!r}; expected one of {PLATFORMS}")
  if what not in ("train", "eval"):
    raise ValueError(f"what={what!r}; expected 'train' or 'eval'")
  batch = int(batch or (config.train.batch_size if what == "train" else config.eval.batch_size))
  report = {"platform": platform, "config": name or config.name, "devices": devices,
            "batch": batch, "ok": False, "ops": 0, "custom_calls": {}, "seconds": 0.0,
            "error": None}
  t0 = time.perf_counter()
  results: dict[str, dict] = {}
  blocked = device_only_settings(config, platform)
  if blocked:   # reported as they are; nothing is built
    report.update(error="; ".join(blocked), seconds=round(time.perf_counter() - t0, 2))
    return {"report": report, "programs": results}
  try:
    if batch % devices:
      raise ValueError(f"batch {batch} is not divisible by the {devices} devices")
    mesh = parallel.make_mesh(devices)
    import jax  # pylint: disable=import-outside-toplevel
    with config.unlocked():
      if what == "train":
        config.train.batch_size = batch
      else:
        config.eval.batch_size = batch
    with jax.set_mesh(mesh):
      programs = (train_programs if what == "train" else eval_programs)(config, mesh, batch)
      for key, (fn, args) in programs.items():
        results[key] = export_and_check(fn, args, platform=platform, devices=devices)
  except Exception as e:  # pylint: disable=broad-except  (reported, not raised)
    report["error"] = one_line(e)
  ops: collections.Counter = collections.Counter()
  calls: collections.Counter = collections.Counter()
  errors = [f"{key}: {r['error']}" for key, r in results.items() if r["error"]]
  for r in results.values():
    ops.update(r["ops"])
    calls.update(r["custom_calls"])
  report.update(ops=sum(ops.values()), custom_calls=dict(sorted(calls.items())),
                seconds=round(time.perf_counter() - t0, 2))
  if report["error"] is None:
    report["error"] = one_line("; ".join(errors)) if errors else None
    report["ok"] = bool(results) and not errors
  return {"report": report, "programs": results}


# ----------------------------------------------------------------------------- command line
def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--platform", choices=PLATFORMS, required=True)
  p.add_argument("--config", required=True, help="configs/<recipe>.py[:arg]")
  p.add_argument("--devices", type=int, default=8)
  p.add_argument("--batch", type=int, default=0,
                 help="global batch (default: the recipe's train / eval batch size)")
  p.add_argument("--what", choices=("train", "eval"), default="train")
  p.add_argument("--attention", default="", choices=("", "einsum", "auto", "xla", "cudnn"),
                 help="override both towers' attention_impl (default: the recipe's)")
  return p.parse_args(argv)


def simulate_cpu_devices(n: int) -> None:
  """N simulated CPU devices; effective only before JAX initialises its backends."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "",
                 os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()
  os.environ["JAX_PLATFORMS"] = "cpu"
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None) -> int:
  args = _parse(argv)
  simulate_cpu_devices(args.devices)
  sys.path.insert(0, REPO)
  config = load_config(args.config, attention=args.attention)
  out = lower_recipe(config, platform=args.platform, devices=args.devices,
                     batch=args.batch or None, what=args.what, name=args.config)
  for key, r in out["programs"].items():
    print(f"{key}: ok={r['ok']} ops={sum(r['ops'].values())} nr_devices={r['nr_devices']} "
          f"custom_calls={dict(sorted(r['custom_calls'].items()))}"
          + (f" error={r['error']}" if r["error"] else ""), flush=True)
  print(json.dumps(out["report"]), flush=True)
  return 0 if out["report"]["ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
