"""Installs asg_jax into a Colab (or any pip) runtime with the jax build of its accelerator.

    !python colab/install.py              # from the repository root, in a notebook cell
    python colab/install.py --dry-run     # print what would run

Detects the runtime's accelerator (TPU: the TPU variables Colab sets or /dev/accel*; GPU:
`COLAB_GPU` or /dev/nvidia0; then TPU v2/v3: /dev/vfio/<n>; otherwise CPU) and runs ONE pip
resolution: the package (editable) with its pinned dependencies (constraints.txt) plus the
matching jax extra — `jax[tpu]`, `jax[cuda12]` or plain `jax` — at the pinned jax version.
`--accelerator tpu|gpu|cpu` overrides the detection.
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import subprocess
import sys
from typing import Mapping, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAX_EXTRA = {"tpu": "tpu", "gpu": "cuda12", "cpu": ""}
_TPU_ENV = ("COLAB_TPU_1VM", "COLAB_TPU_ADDR", "TPU_ACCELERATOR_TYPE", "TPU_NAME")


def detect_accelerator(env: Mapping[str, str] | None = None, root: str = "/") -> str:
  """"tpu", "gpu" or "cpu" for the machine whose device files are under `root`."""
  env = os.environ if env is None else env
  dev = os.path.join(root, "dev")
  if any(env.get(k) for k in _TPU_ENV) or glob.glob(os.path.join(dev, "accel*")):
    return "tpu"                                   # TPU v4 and later, or Colab says so
  if env.get("COLAB_GPU") or os.path.exists(os.path.join(dev, "nvidia0")):
    return "gpu"
  if glob.glob(os.path.join(dev, "vfio", "[0-9]*")):
    return "tpu"                                   # TPU v2 / v3 VMs (after the GPU check)
  return "cpu"


def pinned_version(package: str, constraints: str) -> str:
  """`package`'s version pinned in a constraints file (`name==version` lines)."""
  with open(constraints) as f:
    for line in f:
      m = re.match(rf"^{re.escape(package)}==(\S+)", line.strip(), re.IGNORECASE)
      if m:
        return m.group(1)
  raise ValueError(f"{constraints}: no `{package}==<version>` line")


def pip_command(accelerator: str, repo: str = REPO, python: str = sys.executable) -> list[str]:
  """The one pip install of the package + the jax build for `accelerator`."""
  if accelerator not in JAX_EXTRA:
    raise ValueError(f"accelerator={accelerator!r}; expected one of {sorted(JAX_EXTRA)}")
  constraints = os.path.join(repo, "constraints.txt")
  extra = JAX_EXTRA[accelerator]
  jax = f"jax[{extra}]" if extra else "jax"
  return [python, "-m", "pip", "install", "-q", "-c", constraints, "-e", repo,
          f"{jax}=={pinned_version('jax', constraints)}"]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python colab/install.py", description=__doc__.split("\n")[0])
  parser.add_argument("--accelerator", choices=["auto", *JAX_EXTRA], default="auto")
  parser.add_argument("--dry-run", action="store_true", help="print the command only")
  args = parser.parse_args(argv)
  accelerator = detect_accelerator() if args.accelerator == "auto" else args.accelerator
  cmd = pip_command(accelerator)
  print(f"Accelerator: {accelerator}\n{shlex.join(cmd)}", flush=True)
  if args.dry_run:
    return 0
  return subprocess.call(cmd)


if __name__ == "__main__":
  sys.exit(main())
