"""One process of tests/test_multihost.py: a few demo-config train steps with evaluation
and checkpoints through `train.train_and_evaluate`, on `--processes` local CPU processes ×
`--devices` simulated devices each (`jax.distributed` with a localhost coordinator).

The data is `tests.fakes.FakeData` cut per process: process p gets rows
`[p·b, (p+1)·b)` of every global batch (b = global batch / processes), so the global batches
are the same whatever the number of processes and the runs can be compared number for
number. (The real pipeline also reads only this process's part of the data, but its global
batches then depend on the process count.)

    python tests/multihost_worker.py --processes 2 --process_id 0 --port 12345 \\
        --devices 4 --workdir DIR
"""
import argparse
import os
import sys
import time

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--processes", type=int, default=1)
ARGS.add_argument("--process_id", type=int, default=0)
ARGS.add_argument("--port", type=int, default=0)
ARGS.add_argument("--devices", type=int, default=8)
ARGS.add_argument("--workdir", required=True)
args = ARGS.parse_args()

# this process's device count; other flags (the suite's backend optimisation level) kept
os.environ["XLA_FLAGS"] = " ".join(
    [f for f in os.environ.get("XLA_FLAGS", "").split()
     if not f.startswith("--xla_force_host_platform_device_count")]
    + [f"--xla_force_host_platform_device_count={args.devices}"])
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from asg_jax import distributed  # noqa: E402

if args.processes > 1:
  assert distributed.initialize(f"localhost:{args.port}", args.processes, args.process_id)

import jax  # noqa: E402
import numpy as np  # noqa: E402

from asg_jax import train  # noqa: E402
from tests.fakes import FakeData  # noqa: E402
from tests.test_train import demo_config  # noqa: E402

STEPS, BATCH = 4, 16


class ProcessSlice:
  """This process's rows of FakeData's global batches."""

  def __init__(self, data, index: int, count: int):
    self.data, self.index, self.count = data, index, count
    self.tokenizer, self.num_train_examples = data.tokenizer, data.num_train_examples

  def _cut(self, batch):
    b = len(batch["index"]) // self.count
    return {k: np.asarray(v)[self.index * b:(self.index + 1) * b] for k, v in batch.items()}

  def example_batch(self):
    return self.data.example_batch()

  def train_batches(self, start_step):
    return (self._cut(b) for b in self.data.train_batches(start_step))

  def eval_batches(self, split="", dataset=""):
    return (self._cut(b) for b in self.data.eval_batches(split, dataset))


# IRA alone (the smallest programs: the test is about the loop, evaluation and checkpoints
# across processes; the full objectives' sharding is tests/test_train_devices.py's)
config = demo_config("runlocal,ablation=ira,image=vit", evals=("loss", "retrieval"), **{
    "train.num_steps": STEPS, "train.batch_size": BATCH, "eval.batch_size": BATCH,
    "train.log_every": 1, "train.checkpoint_every": 2, "eval.every_steps": 2,
    "train.early_stop_patience": 0})
assert jax.process_count() == args.processes and jax.device_count() == 8
data = ProcessSlice(FakeData(config, num_eval=40), jax.process_index(), jax.process_count())
summary = train.train_and_evaluate(config, args.workdir, data=data)

# "process 0 does it, the others wait": the others see process 0's file after the block
marker = os.path.join(args.workdir, "first_process_marker")
with distributed.first_process_only("marker") as mine:
  if mine:
    time.sleep(1.0)
    with open(marker, "w") as f:
      f.write(str(jax.process_index()))
assert os.path.isfile(marker)
print(f"worker {jax.process_index()} done: {summary['steps']} steps", flush=True)
