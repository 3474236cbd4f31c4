"""Speed of the real pre-training step: compile time, memory, step time, pairs/s, FLOPs, MFU.

    .venv/bin/python benchmarks/train_step.py [--size tiny|base] [--batch 8] [--steps 10]
        [--dtype float32|bfloat16] [--ablation full|ira|...] [--loss asg|reclf|mgca|convirt]
        [--attention einsum|auto|xla|cudnn] [--remat none|block|dots_saveable]
        [--scan] [--devices N] [--json] [--profile DIR [--profile-steps 3]]

Builds the step exactly as pre-training does (`asg_jax.train.build_train_step`: the recipe's
model, objective and AdamW, state replicated and donated, batch sharded over the `data`
mesh) from `configs/asg_vit_b16.py` (`--loss reclf`: `configs/reclf_vit_b16.py`, `mgca`:
`configs/mgca_vit_b16.py`, `convirt`: `configs/convirt_resnet50.py`; `--ablation` is the
ASG row, the RECLF rung or the MGCA levels) with
random initialisation (no checkpoint is read) on a random batch in the interfaces.md §2
layout (`asg_jax.data.pipeline.random_batch`: full-length captions, every region valid). `--size
tiny` is the recipe's `runlocal` architecture. Reports:

- compile seconds (lower + compile), peak memory (`memory_analysis`: arguments + outputs +
  temporaries), median and p90 step time over `--steps` steps after one warm-up;
- pairs/s; model FLOPs per pair counted from the architecture (`asg_jax.flops`) beside XLA's
  `cost_analysis()` of the compiled step (per pair);
- MFU against the device's spec peak (a table below; CPU: none) and against a bf16 (GPU/TPU)
  or float32 (CPU) matmul measured in the same run;
- with `--profile DIR`: a `jax.profiler` trace of `--profile-steps` more steps in DIR, and
  under "profile" where their device time went: by model part and pass, matmul vs other,
  the top ops (benchmarks/profile_summary.py; printed as tables too).

The last line printed is one JSON object with every figure (`--json`: only that line).
Imports neither TensorFlow nor tfds (the GPU machine has neither).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# dense bf16 peak FLOP/s per chip, from the vendors' spec sheets
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
             "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
             "TPU v6 lite": 918e12}


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", choices=("tiny", "base"), default="tiny")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--steps", type=int, default=10)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--ablation", default="full")
  p.add_argument("--loss", choices=tuple(RECIPES), default="asg")
  p.add_argument("--attention", default="einsum")
  p.add_argument("--remat", default="none")
  p.add_argument("--scan", action="store_true")
  p.add_argument("--devices", type=int, default=1)
  p.add_argument("--json", action="store_true")
  p.add_argument("--profile", default="", metavar="DIR",
                 help="after timing, trace --profile-steps steps into DIR with jax.profiler "
                 "and add where their time went (benchmarks/profile_summary.py) to the JSON")
  p.add_argument("--profile-steps", type=int, default=3)
  return p.parse_args(argv)


def _profile_summary():
  """benchmarks/profile_summary.py, whether this file runs as a script or is imported."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import profile_summary  # pylint: disable=import-outside-toplevel
  return profile_summary


# --loss -> (recipe, the name of its ablation argument or None)
RECIPES = {"asg": ("asg_vit_b16", "ablation"), "reclf": ("reclf_vit_b16", "rung"),
           "mgca": ("mgca_vit_b16", "ablation"), "convirt": ("convirt_resnet50", None)}


def make_config(*, size: str = "tiny", dtype: str = "float32", ablation: str = "full",
                loss: str = "asg", attention: str = "einsum", remat: str = "none",
                scan: bool = False, batch: int = 8):
  """The recipe's config as the benchmark runs it (random init, no data, no evaluation)."""
  recipe, ablation_key = RECIPES[loss]
  args = [f"{ablation_key}={ablation}"] if ablation_key else []
  if size == "tiny":
    args.append("runlocal")
  from asg_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  arg = ",".join(a for a in args if not a.endswith("=full"))
  config = config_lib.load_recipe(os.path.join(REPO, "configs", f"{recipe}.py") +
                                  (f":{arg}" if arg else ""))
  with config.unlocked():
    config.model.image.pretrained = config.model.text.pretrained = ""
    config.model.dtype = dtype
    for tower in (config.model.image, config.model.text):
      tower.attention_impl = attention
      if "remat" in tower:
        tower.remat = remat
      if "scan" in tower:
        tower.scan = scan
    if attention != "einsum":
      config.model.text.attention_dropout = 0.0
    config.train.batch_size = config.eval.batch_size = batch
    config.train.num_steps = 1000
  return config


class Runner:
  """The compiled train step of `config` on a random batch, ready to time.

  Attributes (after construction): `compile_seconds`, `memory` (dict of bytes),
  `cost_flops` (XLA's count for the whole step), `num_params`, `flops_per_pair`.
  """

  def __init__(self, config, batch: int, num_devices: int = 1, seed: int = 0):
    import jax  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from asg_jax import flops, parallel, train  # pylint: disable=import-outside-toplevel
    from asg_jax import state as state_lib  # pylint: disable=import-outside-toplevel
    from asg_jax.data.pipeline import random_batch  # pylint: disable=import-outside-toplevel
    self.config, self.batch_size = config, batch
    self.mesh = parallel.make_mesh(num_devices)
    rng = jax.random.PRNGKey(seed)
    init_rng, dropout_rng = jax.random.split(rng)
    program = train.build_train_step(config, self.mesh, num_steps=config.train.num_steps,
                                     dropout_rng=dropout_rng)
    host_batch = random_batch.random_batch(config, batch, seed)
    constants = {}
    if config.model.tag_decoder.enabled:   # the frozen tower's tag-phrase features: random
      constants["tag_queries"] = np.random.default_rng(seed).normal(
          size=(random_batch.NUM_TAGS, config.model.text.hidden_size)).astype(np.float32)
    with jax.set_mesh(self.mesh):
      self.constants = parallel.replicate(constants, self.mesh)
      self.state = state_lib.init_state(config, program.model, program.tx, init_rng,
                                        host_batch, self.constants, self.mesh)
      self.batch = parallel.shard_batch(host_batch, self.mesh)
      t0 = time.perf_counter()
      compiled = program.step.lower(self.state, self.batch, self.constants).compile()
      self.compile_seconds = time.perf_counter() - t0
    self.compiled = compiled   # the compiled train step (state, batch, constants)
    mem = compiled.memory_analysis()
    self.memory = {} if mem is None else {
        k: int(getattr(mem, f"{k}_size_in_bytes", 0))
        for k in ("argument", "output", "temp", "generated_code")}
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    self.cost_flops = float((cost or {}).get("flops", float("nan")))
    self.num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(self.state.params)))
    self.flops_per_pair = flops.train_flops_per_pair(config, batch)

  def step(self) -> dict:
    """One train step, waited for; returns its measurements."""
    import jax  # pylint: disable=import-outside-toplevel
    self.state, measurements = self.compiled(self.state, self.batch, self.constants)
    return jax.block_until_ready(measurements)

  def profile(self, trace_dir: str, steps: int) -> dict:
    """Trace `steps` steps into `trace_dir`; their time by model part, pass and kind."""
    import jax  # pylint: disable=import-outside-toplevel
    profile_summary = _profile_summary()
    self.step()
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    try:
      for _ in range(steps):
        self.step()
    finally:
      jax.profiler.stop_trace()
    hlo_text = self.compiled.as_text()
    with open(os.path.join(trace_dir, "hlo.txt"), "w") as f:   # for profile_summary.py DIR
      f.write(hlo_text)
    with open(os.path.join(trace_dir, "steps.txt"), "w") as f:
      f.write(str(steps))
    return profile_summary.summarize(trace_dir, hlo_text, "jit_train_step", steps)

  def time_steps(self, steps: int) -> list[float]:
    self.step()   # warm-up (first execution)
    out = []
    for _ in range(steps):
      t0 = time.perf_counter()
      self.step()
      out.append(time.perf_counter() - t0)
    return out


def matmul_flops_per_second(dtype: str, size: int | None = None, repeats: int = 5) -> float:
  """FLOP/s of a square matmul on the default device (the "measured peak")."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  size = size or (8192 if jax.default_backend() != "cpu" else 1024)
  a = jnp.ones((size, size), dtype)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a))
    times.append(time.perf_counter() - t0)
  return 2 * size ** 3 / min(times)


def spec_peak(device_kind: str) -> float | None:
  for name, peak in PEAK_BF16.items():
    if name.lower() in device_kind.lower():
      return peak
  return None


def run(args) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  config = make_config(size=args.size, dtype=args.dtype, ablation=args.ablation,
                       loss=args.loss, attention=args.attention, remat=args.remat,
                       scan=args.scan, batch=args.batch)
  runner = Runner(config, args.batch, args.devices)
  times = runner.time_steps(args.steps)
  median = statistics.median(times)
  p90 = sorted(times)[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
  pairs_per_s = args.batch / median
  kind = jax.devices()[0].device_kind
  matmul_dtype = "bfloat16" if jax.default_backend() != "cpu" else "float32"
  measured_peak = matmul_flops_per_second(matmul_dtype) * args.devices
  peak = spec_peak(kind)
  achieved = runner.flops_per_pair * pairs_per_s
  result = {
      "size": args.size, "batch": args.batch, "dtype": args.dtype, "ablation": args.ablation,
      "loss": args.loss, "attention": args.attention, "remat": args.remat, "scan": args.scan,
      "devices": f"{args.devices} x {kind}", "jax": jax.__version__,
      "num_params": runner.num_params, "compile_s": round(runner.compile_seconds, 2),
      "memory_bytes": runner.memory,
      "step_s_median": round(median, 5), "step_s_p90": round(p90, 5),
      "pairs_per_s": round(pairs_per_s, 2),
      "gflops_per_pair": round(runner.flops_per_pair / 1e9, 3),
      "gflops_per_pair_xla": round(runner.cost_flops / args.batch / 1e9, 3),
      "achieved_tflops": round(achieved / 1e12, 4),
      "matmul_tflops_measured": round(measured_peak / 1e12, 3), "matmul_dtype": matmul_dtype,
      "mfu_vs_measured_matmul": round(achieved / measured_peak, 4),
      "mfu_vs_spec": None if peak is None else round(achieved / (peak * args.devices), 4),
  }
  if args.profile:
    try:
      result["profile"] = runner.profile(args.profile, args.profile_steps)
    except Exception as e:  # pylint: disable=broad-except  (the timings above still count)
      result["profile"] = {"error": repr(e)[-400:]}
  return result


def main(argv=None):
  args = _parse(argv)
  result = run(args)
  if not args.json:
    for k, v in result.items():
      if k != "profile":
        print(f"{k:>24}: {v}")
    if "by_part" in result.get("profile", {}):
      print(_profile_summary().format_table(result["profile"]))
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  from asg_jax import cpu_allocator  # noqa: E402  (the project's own CPU setting, as main.py)
  cpu_allocator.reexec_with_tunables()
  main()
