"""Pairs/s of the JAX pre-training step against the same model in PyTorch (eager, compiled).

    .venv/bin/python benchmarks/compare_torch.py [--size tiny|base] [--batch 8] [--rounds 5]
        [--steps 5] [--dtype float32|bfloat16] [--ablation full|ira|...] [--no-compile]

Builds, from one config (`train_step.make_config`: the recipe's architecture, random init,
a random batch in the interfaces.md §2 layout), three training steps on the same shapes:

- `jax`: `train_step.Runner`, the real pre-training step (`asg_jax.train.build_train_step`);
- `torch_eager`: `torch_reference.make_torch_step(compile=False)` (HF ViTModel + BertModel,
  the heads, the tag decoder, the ASG losses, AdamW; see benchmarks/torch_reference.py for
  what differs);
- `torch_compile`: the same with model + loss under `torch.compile` (if that fails here, its
  figure is null and the error is reported; the other two still run).

Each is warmed up (JAX: compiled + 1 step; torch: 2 steps, the first compiling under
`torch.compile`), then `--rounds` interleaved rounds (jax, eager, compile, jax, ...) of
`--steps` steps each are timed; a round's figure is steps × batch / its wall time. torch runs
with as many intra-op threads as there are usable cores (`--torch-threads` to change); XLA
uses all of them by default.

`OMP_WAIT_POLICY` defaults to PASSIVE here (an explicit setting in the environment wins; it is
reported): on a shared, oversubscribed CPU box (load above the core count) torch's OpenMP
threads otherwise spin at every barrier while a sibling thread is descheduled, and the tiny
eager step measured 0.3–1.4 s instead of 0.07 s at 2 threads (1 thread: 0.05 s) — a figure
of the machine's other tenants, not of PyTorch.
Prints a table (one row per round, then the medians) and, as its LAST line, one JSON object:
`size, batch, dtype, ablation, jax, torch_eager, torch_compile` (pairs/s, median over the
rounds), `num_params` (the JAX count; `torch_num_params` must equal it), the ratios
`jax_over_eager`, `jax_over_compile`, plus the per-round figures, warm-up/compile seconds,
threads, versions and `torch_compile_error` (null when it worked).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.join(HERE, "..")
NAMES = ("jax", "torch_eager", "torch_compile")


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--size", choices=("tiny", "base"), default="tiny")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
  p.add_argument("--ablation", default="full")
  p.add_argument("--no-compile", action="store_true", help="skip the torch.compile step")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--only", default="", help="comma-separated subset of jax,torch_eager,"
                 "torch_compile (e.g. benchmarks/gpu.sh's torch-only stage)")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch intra-op threads (0: the usable core count)")
  return p.parse_args(argv)


def _cores() -> int:
  if hasattr(os, "sched_getaffinity"):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _timed(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def run(args) -> dict:
  sys.path[:0] = [p for p in (REPO, HERE) if p not in sys.path]
  if "torch" not in sys.modules:   # read by OpenMP when torch loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
  import jax  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  import torch_reference  # pylint: disable=import-outside-toplevel
  import train_step  # pylint: disable=import-outside-toplevel

  threads = torch_reference.set_threads(args.torch_threads or _cores())
  config = train_step.make_config(size=args.size, dtype=args.dtype, ablation=args.ablation,
                                  batch=args.batch)
  steps, warmup_s, errors = {}, {}, {}

  only = set(filter(None, args.only.split(","))) or set(NAMES)
  unknown = only - set(NAMES)
  if unknown:
    raise SystemExit(f"--only: unknown {sorted(unknown)}; expected names of {NAMES}")
  runner = None
  if "jax" in only:
    runner = train_step.Runner(config, args.batch, seed=args.seed)
    warmup_s["jax_compile"] = round(runner.compile_seconds, 2)
    warmup_s["jax_first_step"] = round(_timed(runner.step), 3)
    steps["jax"] = runner.step

  eager, torch_params = torch_reference.make_torch_step(config, args.batch, compile=False,
                                                        seed=args.seed)
  if "torch_eager" in only:
    warmup_s["torch_eager_first_steps"] = round(_timed(eager) + _timed(eager), 3)
    steps["torch_eager"] = eager
  if runner is not None and torch_params != runner.num_params:
    print(f"WARNING: torch has {torch_params:,} parameters, JAX {runner.num_params:,}",
          file=sys.stderr)

  errors["torch_compile"] = None
  if "torch_compile" not in only:
    errors["torch_compile"] = "not run (--only)"
  elif not args.no_compile:
    try:
      compiled, _ = torch_reference.make_torch_step(config, args.batch, compile=True,
                                                    seed=args.seed)
      warmup_s["torch_compile_first_step"] = round(_timed(compiled), 3)
      warmup_s["torch_compile_second_step"] = round(_timed(compiled), 3)
      steps["torch_compile"] = compiled
    except Exception as e:  # pylint: disable=broad-except
      errors["torch_compile"] = f"{type(e).__name__}: {e}"[:2000]
      traceback.print_exc(file=sys.stderr)
      print(f"torch.compile failed, reported as null: {errors['torch_compile'][:300]}",
            file=sys.stderr)
  else:
    errors["torch_compile"] = "skipped (--no-compile)"

  rounds = {name: [] for name in NAMES}
  for _ in range(args.rounds):
    for name in NAMES:
      fn = steps.get(name)
      if fn is None:
        continue
      t0 = time.perf_counter()
      for _ in range(args.steps):
        fn()
      rounds[name].append(args.steps * args.batch / (time.perf_counter() - t0))

  median = {name: (round(statistics.median(v), 3) if v else None) for name, v in rounds.items()}
  ratio = lambda a, b: None if a is None or b is None else round(a / b, 3)  # noqa: E731
  load = os.getloadavg() if hasattr(os, "getloadavg") else None
  return {
      "size": args.size, "batch": args.batch, "dtype": args.dtype, "ablation": args.ablation,
      "jax": median["jax"], "torch_eager": median["torch_eager"],
      "torch_compile": median["torch_compile"],
      "num_params": runner.num_params if runner is not None else torch_params,
      "jax_over_eager": ratio(median["jax"], median["torch_eager"]),
      "jax_over_compile": ratio(median["jax"], median["torch_compile"]),
      "torch_num_params": torch_params,
      "torch_compile_error": errors["torch_compile"],
      "rounds": args.rounds, "steps": args.steps,
      "per_round": {k: [round(x, 3) for x in v] for k, v in rounds.items()},
      "warmup_s": warmup_s, "threads": threads, "cores": _cores(),
      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
      "torch_optimizer": eager.runner.optimizer_impl,
      "device": f"{jax.devices()[0].device_kind} / torch {eager.runner.device}",
      "versions": {"jax": jax.__version__, "torch": torch.__version__},
      "loadavg_end": None if load is None else [round(x, 2) for x in load],
  }


def print_table(result: dict) -> None:
  cols = [n for n in NAMES if result["per_round"][n]] or list(NAMES)
  print(f"pairs/s, {result['size']} ablation={result['ablation']} batch={result['batch']} "
        f"{result['dtype']}, {result['steps']} steps per round, {result['threads']} threads")
  print("| round | " + " | ".join(cols) + " |")
  print("|---:|" + "---:|" * len(cols))
  for i in range(result["rounds"]):
    cells = [f"{result['per_round'][n][i]:.2f}" if i < len(result["per_round"][n]) else "-"
             for n in cols]
    print(f"| {i + 1} | " + " | ".join(cells) + " |")
  med = [("-" if result[n] is None else f"{result[n]:.2f}") for n in cols]
  print("| median | " + " | ".join(med) + " |")
  if result["torch_compile_error"] and result["torch_compile"] is None:
    print(f"torch.compile: {result['torch_compile_error'][:300]}")
  print(f"jax/eager = {result['jax_over_eager']}, jax/compile = {result['jax_over_compile']}; "
        f"params {result['num_params']:,} (torch {result['torch_num_params']:,}); "
        f"warm-up {result['warmup_s']}")


def main(argv=None):
  args = _parse(argv)
  result = run(args)
  print_table(result)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  from asg_jax import cpu_allocator  # the project's own CPU allocator setting (as main.py)
  cpu_allocator.reexec_with_tunables()
  main()
