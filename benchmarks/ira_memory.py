"""Per-device compiled temp memory of the IRA loss: dense (one device) vs global-batch sharded.

    python benchmarks/ira_memory.py [--devices 8] [--dim 128] [--batch 1024 4096 8192]

Runs on simulated CPU devices unless real ones are present (set JAX_PLATFORMS to choose);
only compiles (`jax.jit(...).lower(...).compile().memory_analysis()`), nothing is executed.
Columns: the loss alone and `value_and_grad` w.r.t. both embeddings; `per-device` is the
released code's local-batch variant (`global_batch=False`).
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--dim", type=int, default=128)
  parser.add_argument("--batch", type=int, nargs="+", default=[1024, 4096, 8192, 16384])
  args = parser.parse_args(argv)
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={args.devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  from asg_jax import losses, parallel  # pylint: disable=import-outside-toplevel

  mesh = parallel.make_mesh(args.devices)

  def temp(fn, b, sharded):
    if not sharded:
      x = jax.ShapeDtypeStruct((b, args.dim), jnp.float32)
      return jax.jit(fn).lower(x, x).compile().memory_analysis().temp_size_in_bytes
    with jax.set_mesh(mesh):
      x = jax.ShapeDtypeStruct((b, args.dim), jnp.float32,
                               sharding=parallel.batch_sharding(mesh))
      return jax.jit(fn).lower(x, x).compile().memory_analysis().temp_size_in_bytes

  fns = {
      "loss": lambda i, t: losses.ira_loss(i, t),
      "loss+grad": jax.value_and_grad(lambda i, t: losses.ira_loss(i, t), argnums=(0, 1)),
  }
  local = {
      "loss": lambda i, t: losses.ira_loss(i, t, global_batch=False),
      "loss+grad": jax.value_and_grad(lambda i, t: losses.ira_loss(i, t, global_batch=False),
                                      argnums=(0, 1)),
  }
  mib = 2.0 ** 20
  print(f"IRA temp memory per device, D = {args.dim}, {args.devices} devices "
        f"({jax.devices()[0].platform}), MiB")
  print("| B | what | dense, 1 device | sharded global batch | ratio | per-device (local) |")
  print("|---:|---|---:|---:|---:|---:|")
  for b in args.batch:
    for name in fns:
      dense = temp(fns[name], b, False)
      sharded = temp(fns[name], b, True)
      per_dev = temp(local[name], b, True)
      print(f"| {b} | {name} | {dense / mib:.1f} | {sharded / mib:.1f} | "
            f"{sharded / dense:.3f} | {per_dev / mib:.2f} |")
  sys.stdout.flush()


if __name__ == "__main__":
  main()
