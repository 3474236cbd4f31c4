"""Transfer evaluation of a pre-trained workdir, from the command line (docs/transfer.md):

    python -m asg_jax.evaluate --workdir workdir/demo --config configs/transfer/demo.py
    python -m asg_jax.evaluate --config configs/transfer/chexpert.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

runs the evaluators declared in the transfer config (`config.evals`: linear_probe, zeroshot,
retrieval, segmentation) on the workdir's best checkpoint (`init` = "pretrained") and on the
baselines named in `config.inits` ("random": the same architecture, freshly initialised;
"imagenet": the same with the image tower loaded from the local checkpoint
`config.imagenet`, added whenever that is set), prints the table and writes
`<out>/results.json` and `<out>/results.md` (`<out>` = `--out`, `config.out`, default
`<workdir>/transfer`). The work is asg_jax/transfer/run.py's; this module is its command line.
"""
from __future__ import annotations

import contextlib
import os
import sys


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # before anything imports TensorFlow
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file("config", None, "configs/transfer/<x>.py[:arg]",
                                                flag_values=fv, lock_config=True)
  workdir_flag = flags.DEFINE_string("workdir", "", "pre-trained workdir (or --config.init)",
                                     flag_values=fv)
  out_flag = flags.DEFINE_string("out", "", "output folder (default <workdir>/transfer)",
                                 flag_values=fv)
  verbose_flag = flags.DEFINE_bool("verbose", False, "show every library log line (absl, TF, "
                                   "orbax, tfds); default: the project's lines only",
                                   flag_values=fv)
  fv(argv)
  if config_flag.value is None:
    print("ERROR: --config configs/transfer/<x>.py is required", file=sys.stderr)
    return 2
  from asg_jax import console, locking  # pylint: disable=import-outside-toplevel
  from asg_jax.transfer import run, table  # pylint: disable=import-outside-toplevel
  console.configure(verbose=verbose_flag.value)
  workdir = config_flag.value.init or workdir_flag.value
  out = out_flag.value or config_flag.value.out or os.path.join(workdir, "transfer")
  # writing into the workdir (the default out) takes its lock, as training does; reading
  # it with --out elsewhere takes none (a live training run may be evaluated that way)
  inside = bool(workdir) and os.path.commonpath(
      [os.path.abspath(out), os.path.abspath(workdir)]) == os.path.abspath(workdir)
  try:
    with locking.hold_workdir(workdir) if inside else contextlib.nullcontext():
      results = run.run_transfer(workdir_flag.value, config_flag.value, out_dir=out_flag.value)
  except locking.WorkdirBusyError as e:
    print(f"ERROR: {e} (or write the results elsewhere with --out)", file=sys.stderr)
    return 2
  print(table.format_table(results["rows"]))
  print(f"wrote {os.path.join(out, table.RESULTS_JSON)} and {table.RESULTS_MD}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
