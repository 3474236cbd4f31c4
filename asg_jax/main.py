"""Command line: `python -m asg_jax.main --config configs/demo.py --workdir DIR`.

Overrides use ml_collections syntax, e.g. `--config.train.num_steps=10`; an unknown key is
an error naming the key. Rerunning the same command resumes from the last checkpoint.
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
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # The train loop pins TF to the CPU; it must never grab the accelerator JAX uses.
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  from asg_jax import config as config_lib, train  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  config_lib.check_overrides_applied(config)
  logging.info("config:\n%s", config)
  try:
    summary = train.train_and_evaluate(config, _WORKDIR.value)
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


def cli():
  app.run(main)


if __name__ == "__main__":
  cli()
