"""Command line: `python -m asg_jax.main --config configs/demo.py --workdir DIR`.

Overrides use ml_collections syntax, e.g. `--config.train.num_steps=10`; an unknown key or
an impossible value is a one-line error naming the key (exit status 2), before any data is
generated or built. Rerunning the same command resumes from the last checkpoint; rerunning a
finished one says so and keeps its summary.json (`--reevaluate` evaluates it again).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file in configs/ "
                                          "(optionally `file.py:arg`).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, logs, summary).")
_REEVALUATE = flags.DEFINE_bool("reevaluate", False, "Evaluate a finished run again and "
                                "rewrite its summary.json.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # The train loop pins TF to the CPU; it must never grab the accelerator JAX uses.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  from asg_jax import config as config_lib, train  # pylint: disable=import-outside-toplevel
  from asg_jax.data import owned_dir  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  try:
    config_lib.check_overrides_applied(config)
    logging.info("config:\n%s", config)
    summary = train.train_and_evaluate(config, _WORKDIR.value, reevaluate=_REEVALUATE.value)
  except (config_lib.ConfigError, owned_dir.NotOwnedError) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    logging.error("%s", e)
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(3)
  if summary:
    metrics = summary["metrics"]
    print("Final validation metrics (chance in brackets):")
    for name in sorted(metrics):
      chance = summary["chance"].get(name)
      suffix = f"   [{chance:.4f}]" if chance is not None else ""
      print(f"  {name:24s} {metrics[name]:.4f}{suffix}")
  if summary and config.transfer:
    run_transfer(config.transfer, _WORKDIR.value)


def run_transfer(spec: str, workdir: str) -> None:
  """The downstream evaluation of `spec` (a transfer config) on the finished workdir."""
  from asg_jax import evaluate  # pylint: disable=import-outside-toplevel
  path, _, arg = spec.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
  print(f"Downstream evaluation ({spec}):", flush=True)
  results = evaluate.run_transfer(workdir, evaluate.load_config(path + (f":{arg}" if arg else "")))
  print(evaluate.format_table(results["rows"]), flush=True)
  print(f"Downstream results written to {os.path.join(workdir, 'transfer')}", flush=True)


def check_command_line(argv: list[str]) -> None:
  """Exit with one line naming the key when a `--config.<key>` override is not a key of the
  config (ml_collections would raise a long chained traceback while parsing flags)."""
  from asg_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  spec, keys = None, []
  for i, arg in enumerate(argv[1:], start=1):
    if arg.startswith("--config="):
      spec = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      spec = argv[i + 1]
    elif arg.startswith("--config."):
      keys.append(arg[len("--config."):].split("=", 1)[0])
  if not spec or not keys:
    return
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    print(f"ERROR: --config {path}: no such file", file=sys.stderr)
    sys.exit(2)
  import importlib.util  # pylint: disable=import-outside-toplevel
  module_spec = importlib.util.spec_from_file_location("_asg_jax_recipe", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None) if arg else module.get_config()
    for key in keys:
      config_lib.check_override_key(config, key)
  except config_lib.ConfigError as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(2)


def cli():
  check_command_line(sys.argv)
  app.run(main)


if __name__ == "__main__":
  cli()
