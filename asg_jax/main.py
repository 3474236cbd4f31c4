"""Command line: `python -m asg_jax.main --config configs/demo.py --workdir DIR`.

Overrides use ml_collections syntax, e.g. `--config.train.num_steps=10`; an unknown key or
an impossible value is a one-line error naming the key (exit status 2), before any data is
generated or built. Rerunning the same command resumes from the last checkpoint; rerunning a
finished one says so and keeps its summary.json (`--reevaluate` evaluates it again).
Multi-host: the same command on every host, plus `--jax_coordinator_address=host0:1234
--jax_num_processes=N --jax_process_id=i` (or the launcher's environment,
asg_jax/distributed.py); process 0 generates and builds the data while the others wait.
SIGTERM / SIGINT (preemption, Ctrl-C) finish the current step, checkpoint it and exit with
status 75 (asg_jax/preemption.py); the same command then continues from that step. Exit
status 2: a bad config or folder, a full disk, or a workdir another live run holds (one
`ERROR:` line, asg_jax/os_errors.py, asg_jax/locking.py; `--verbosity` shows the traceback of
a file-system error); 3: a non-finite loss. Nothing is written before the workdir and the
manual_dir are found usable; a run killed at any moment resumes from its last complete
checkpoint (asg_jax/checkpoints.py).

The console shows the project's lines only (data generation / build, "Initialising the
model", "Compiling the train step", the progress line, evaluation lines, the final metrics and
where everything is); `--verbosity=0` (absl's flag) brings back every library log line
(asg_jax/console.py). The resolved config is written to `<workdir>/config.json`, not printed.
At the end the run's figures are drawn into `<workdir>/figures/` (asg_jax/visualize.py;
`--nofigures` skips them).
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
import numpy as np
from ml_collections import config_flags

from asg_jax import config as config_lib
from asg_jax.errors import ConfigError

# jax, TensorFlow and orbax (through os_errors) are imported inside the functions that need
# them: `cli` first re-executes the process with the CPU allocator's settings, and a second
# run on a held workdir is refused before the slow imports.

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe file in configs/ "
                                          "(optionally `file.py:arg`).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (checkpoints, logs, summary).")
_REEVALUATE = flags.DEFINE_bool("reevaluate", False, "Evaluate a finished run again and "
                                "rewrite its summary.json.")
_FIGURES = flags.DEFINE_bool("figures", True, "At the end, write the figures of the run "
                             "(grounding, retrieval, t-SNE, curves) into <workdir>/figures.")
_COORDINATOR = flags.DEFINE_string(
    "jax_coordinator_address", None, "Multi-host: host:port of process 0's coordinator "
    "(with --jax_num_processes and --jax_process_id; else the JAX_* environment variables or "
    "the cluster JAX detects: asg_jax/distributed.py).")
_NUM_PROCESSES = flags.DEFINE_integer("jax_num_processes", None, "Multi-host: processes.")
_PROCESS_ID = flags.DEFINE_integer("jax_process_id", None, "Multi-host: this process's index.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from asg_jax import console, distributed  # pylint: disable=import-outside-toplevel
  try:   # before anything touches a device
    distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  except ValueError as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(2)
  # the project's lines only, unless the user asked for library logs with --verbosity
  verbose = flags.FLAGS["verbosity"].present
  console.configure(verbose=verbose)
  from asg_jax import os_errors  # pylint: disable=import-outside-toplevel
  if not verbose:
    os_errors.hold_back_library_reports()
  problem = os_errors.check_folders(_CONFIG.value, _WORKDIR.value)   # before anything is written
  if problem:
    print(f"ERROR: {problem}", file=sys.stderr)
    sys.exit(2)
  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax import locking  # pylint: disable=import-outside-toplevel
  config = _CONFIG.value
  try:
    config_lib.check_overrides_applied(config)
    # one run per workdir, held until this process exits (figures and transfer included);
    # taken before the slow imports, so a second run is refused at once
    locking.acquire_workdir(_WORKDIR.value, jax.process_index())
  except (ConfigError, locking.WorkdirBusyError) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(2)
  with console.quiet_native_stderr(not verbose):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
  # The train loop pins TF to the CPU; it must never grab the accelerator JAX uses.
  tf.config.set_visible_devices([], "GPU")
  from asg_jax import preemption, train  # pylint: disable=import-outside-toplevel
  from asg_jax.data.demo import owned_dir  # pylint: disable=import-outside-toplevel
  try:
    logging.info("config:\n%s", config)   # shown with --verbosity; always in config.json
    summary = train.train_and_evaluate(config, _WORKDIR.value, reevaluate=_REEVALUATE.value)
  except (ConfigError, owned_dir.NotOwnedError, locking.WorkdirBusyError) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(2)
  except train.NonFiniteLossError as e:
    logging.error("%s", e)
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(3)
  except preemption.Preempted as e:
    print(f"Preempted: {e}", file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_CODE)
  except Exception as e:  # pylint: disable=broad-except
    _exit_if_users_os_error(e, verbose)
    raise
  if summary:
    metrics = summary["metrics"]
    print("Final validation metrics (chance in brackets):")
    for name in sorted(metrics):
      chance = summary["chance"].get(name)
      suffix = f"   [{chance:.4f}]" if chance is not None else ""
      print(f"  {name:24s} {metrics[name]:.4f}{suffix}")
  figures = write_figures(_WORKDIR.value) if summary and _FIGURES.value else {}
  if summary and config.transfer:
    try:
      run_transfer(config.transfer, _WORKDIR.value)
    except Exception as e:  # pylint: disable=broad-except
      _exit_if_users_os_error(e, verbose, "downstream evaluation: ")
      raise
  if summary:
    print_where(_WORKDIR.value, figures, bool(config.transfer))


def _exit_if_users_os_error(error: Exception, verbose: bool, what: str = "") -> None:
  """A file-system problem of the user's (full disk, read-only folder, ...) inside `error`:
  one `ERROR:` line and exit status 2 (asg_jax/os_errors.py). Otherwise, or with
  `--verbosity`, returns and the caller re-raises (the traceback)."""
  from asg_jax import os_errors  # pylint: disable=import-outside-toplevel
  line = None if verbose else os_errors.describe(error, _WORKDIR.value)
  if line is not None:
    os_errors.exit_with(what + line)


def write_figures(workdir: str) -> dict[str, str]:
  """The figures of the finished run (asg_jax.visualize) unless they are newer than its
  summary.json; a figure that fails is reported, never fatal (the run is done).

  With several processes every process loads the model and computes the figures (the
  checkpoint restore is collective) and process 0 alone writes them; the others draw into
  a scratch folder that is then removed."""
  import shutil  # pylint: disable=import-outside-toplevel
  import tempfile  # pylint: disable=import-outside-toplevel

  import jax  # pylint: disable=import-outside-toplevel
  from asg_jax import visualize  # pylint: disable=import-outside-toplevel
  first = jax.process_index() == 0
  out = os.path.join(workdir, visualize.FIGURES_DIR)
  paths = {n: os.path.join(out, f"{n}.png") for n in visualize.FIGURE_NAMES}
  summary = os.path.join(workdir, "summary.json")
  fresh = all(os.path.isfile(p) and os.path.getmtime(p) >= os.path.getmtime(summary)
              for p in paths.values())
  if jax.process_count() > 1:   # process 0 decides for all (they must all draw, or none)
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    fresh = bool(multihost_utils.broadcast_one_to_all(np.int32(fresh)))
  if fresh:
    return paths if first else {}
  if first:
    print("Drawing the figures (grounding, retrieval, t-SNE, curves) ...", flush=True)
  scratch = None if first else tempfile.mkdtemp(prefix="asg_jax_figures_")
  try:
    written = visualize.write_figures(workdir, out if first else scratch,
                                      log=print if first else (lambda *_: None))
    return written if first else {}
  except Exception as e:  # pylint: disable=broad-except
    if first:
      print(f"WARNING: the figures were not written ({type(e).__name__}: {e}); "
            f"`python -m asg_jax.visualize --workdir {workdir}` draws them", flush=True)
    return {}
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)


def print_where(workdir: str, figures: dict[str, str], transfer: bool) -> None:
  """The closing lines: where the results of the run are."""
  print(f"Results in {workdir}:", flush=True)
  print(f"  metrics      {os.path.join(workdir, 'summary.json')}")
  if transfer:
    print(f"  downstream   {os.path.join(workdir, 'transfer', 'results.md')}")
  if figures:
    folder = os.path.dirname(next(iter(figures.values())))
    print(f"  figures      {folder}/ ({', '.join(os.path.basename(p) for p in figures.values())})")
  print(f"  TensorBoard  tensorboard --logdir {workdir}")
  print(f"  config       {os.path.join(workdir, 'config.json')}   (checkpoints: "
        f"{os.path.join(workdir, 'best')}, {os.path.join(workdir, 'checkpoints')})", flush=True)


def run_transfer(spec: str, workdir: str) -> None:
  """The downstream evaluation of `spec` (a transfer config) on the finished workdir."""
  from asg_jax.transfer import config as transfer_config, run, table  # pylint: disable=import-outside-toplevel
  path, _, arg = spec.partition(":")
  if not os.path.isabs(path) and not os.path.exists(path):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), path)
  print(f"Downstream evaluation ({spec}):", flush=True)
  results = run.run_transfer(workdir, transfer_config.load(path + (f":{arg}" if arg else "")))
  import jax  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:   # every process computed the table; process 0 wrote it
    print(table.format_table(results["rows"]), flush=True)
    print(f"Downstream results written to {os.path.join(workdir, 'transfer')}", flush=True)


def check_command_line(argv: list[str]) -> None:
  """Exit with one line naming the key when a `--config.<key>` override is not a key of the
  config (ml_collections would raise a long chained traceback while parsing flags)."""
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
  path = spec.partition(":")[0]
  if not os.path.isfile(path):
    print(f"ERROR: --config {path}: no such file", file=sys.stderr)
    sys.exit(2)
  try:
    config = config_lib.load_recipe(spec)
    for key in keys:
      config_lib.check_override_key(config, key)
  except ConfigError as e:
    print(f"ERROR: {e}", file=sys.stderr)
    sys.exit(2)


def cli():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # before anything imports TensorFlow
  from asg_jax import cpu_allocator  # pylint: disable=import-outside-toplevel
  cpu_allocator.reexec_with_tunables()   # CPU: huge pages for XLA's per-step buffers
  check_command_line(sys.argv)
  app.run(main)


if __name__ == "__main__":
  cli()
