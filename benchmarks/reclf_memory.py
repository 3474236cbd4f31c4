"""Compiled memory and FLOPs of the RECLF / GLoRIA local loss at the real per-device size.

    .venv/bin/python benchmarks/reclf_memory.py [--block-sizes 8,16,32] [--devices 4] [--dtype bfloat16]

Lowers and compiles (never runs) `value_and_grad` of the local loss (the head's `[B, B]`
local similarity → semantic contrastive loss at τ_l) with respect to the patch embeddings,
the word embeddings and the head's parameters, at B_local = 72 images against B_global = 288
reports, N = 111 words, M = 196 patches, E = 128 (the ASG recipe: 72 per GPU × 4 GPUs), and
prints a table of `compiled.memory_analysis()` / `compiled.cost_analysis()` figures:

- `single`: one device computing its 72 image rows against all 288 reports — the per-device
  work of the sharded step without the collectives.
- `sharded`: the actual `shard_map` path on a `data` mesh of `--devices` simulated CPU
  devices with global B = 72 × devices (XLA's memory analysis is per device).

FLOPs: XLA's cost analysis counts a while-loop body ONCE, so for a blocked program it reports
the FLOPs outside the loop plus ONE block (`GFLOP(xla)`). The per-step total (`GFLOP`) is
recovered from two block sizes b1 < b2 of the same layout: F(b) = outside + b·per_report, so
per_report = (F(b2) - F(b1)) / (b2 - b1) and total = outside + per_report · blocks · b
(rematerialised forward included). Compiling with a single block instead under-counts,
because XLA then merges the recomputed forward with the original one.
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--block-sizes", default="8,16,32", help="reports per block")
  parser.add_argument("--devices", type=int, default=4, help="simulated devices (sharded)")
  parser.add_argument("--b-local", type=int, default=72)
  parser.add_argument("--words", type=int, default=111)
  parser.add_argument("--patches", type=int, default=196)
  parser.add_argument("--embed", type=int, default=128)
  parser.add_argument("--modes", default="reclf,gloria", help="head modes to measure")
  parser.add_argument("--no-sharded", action="store_true")
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                      help="the head's compute dtype (config.model.dtype)")
  return parser.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
  flags = os.environ.get("XLA_FLAGS", "")
  if "--xla_force_host_platform_device_count" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={ARGS.devices}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from asg_jax import parallel  # noqa: E402
from asg_jax.losses import reclf  # noqa: E402
from asg_jax.models.relation import LocalMatchingHead  # noqa: E402

MIB = 2**20


def local_loss_fn(head: LocalMatchingHead, local_temperature: float = 0.1):
  """`(params, patch [Bi,M,E], words [Bj,N,E], mask, importance) -> loss` with Bi ≤ Bj: the
  first Bi reports are the images' own (diagonal of the rectangular block)."""
  def loss(params, patch, words, mask, importance):
    sim = head.apply(params, patch, words, mask, importance) / local_temperature
    bi = sim.shape[0]
    if bi == sim.shape[1]:
      return reclf.semantic_contrastive_loss(sim, None, 0.0)
    return jnp.mean(jax.nn.logsumexp(sim, axis=1) - jnp.diagonal(sim[:, :bi]))
  return jax.value_and_grad(loss, argnums=(0, 1, 2))


def _shapes(bi, bj, n, m, e, sharding=None):
  kw = {} if sharding is None else {"sharding": sharding}
  return [jax.ShapeDtypeStruct((bi, m, e), jnp.float32, **kw),
          jax.ShapeDtypeStruct((bj, n, e), jnp.float32, **kw),
          jax.ShapeDtypeStruct((bj, n), jnp.bool_, **kw),
          jax.ShapeDtypeStruct((bj, n), jnp.float32, **kw)]


def _params(head, n, e):
  return jax.eval_shape(lambda: head.init(
      jax.random.key(0), jnp.zeros((2, 4, e)), jnp.zeros((2, n, e)), jnp.ones((2, n), bool),
      jnp.ones((2, n))))


def compile_single(mode, block_size, bi, bj, n, m, e, dtype=jnp.float32):
  head = LocalMatchingHead(mode=mode, block_size=block_size, dtype=dtype)
  fn = jax.jit(local_loss_fn(head))
  return fn.lower(_params(head, n, e), *_shapes(bi, bj, n, m, e)).compile()


def compile_sharded(mode, block_size, devices, bi, n, m, e, dtype=jnp.float32):
  mesh = parallel.make_mesh(devices)
  head = LocalMatchingHead(mode=mode, block_size=block_size, dtype=dtype)
  with jax.set_mesh(mesh):
    fn = jax.jit(local_loss_fn(head))
    shapes = _shapes(bi * devices, bi * devices, n, m, e, parallel.batch_sharding(mesh))
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                         sharding=parallel.replicated(mesh)),
                          _params(head, n, e))
    return fn.lower(params, *shapes).compile()


def _flops(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", float("nan")))


def main(args):
  n, m, e, bi = args.words, args.patches, args.embed, args.b_local
  bj = bi * args.devices
  blocks = [int(b) for b in args.block_sizes.split(",") if b]
  attention = bi * bj * n * m
  print(f"RECLF local loss, value_and_grad: B_local={bi} B_global={bj} N={n} M={m} E={e}; "
        f"full attention tensor {attention / 1e6:.0f} M floats "
        f"= {attention * 4 / MIB:.0f} MiB per device")
  print(f"{'mode':7s} {'layout':8s} {'block':>5s} {'temp MiB':>9s} {'args MiB':>9s} "
        f"{'out MiB':>8s} {'GFLOP':>8s} {'GFLOP(xla)':>10s} {'compile s':>9s}")
  for mode in args.modes.split(","):
    layouts = ["single"] + (["sharded"] if not args.no_sharded and args.devices > 1 else [])
    for layout in layouts:
      rows = []
      for block in blocks:
        t0 = time.time()
        if layout == "single":
          compiled = compile_single(mode, block, bi, bj, n, m, e, jnp.dtype(args.dtype))
        else:
          compiled = compile_sharded(mode, block, args.devices, bi, n, m, e,
                                     jnp.dtype(args.dtype))
        rows.append((block, compiled.memory_analysis(), _flops(compiled), time.time() - t0))
      per_report = outside = float("nan")
      if len(rows) >= 2:
        (b1, _, f1, _), (b2, _, f2, _) = rows[0], rows[1]
        per_report = (f2 - f1) / (b2 - b1)
        outside = f1 - b1 * per_report
      for block, mem, flops, seconds in rows:
        total = outside + per_report * block * -(-bj // block)
        print(f"{mode:7s} {layout:8s} {block:5d} {mem.temp_size_in_bytes / MIB:9.1f} "
              f"{mem.argument_size_in_bytes / MIB:9.1f} {mem.output_size_in_bytes / MIB:8.1f} "
              f"{total / 1e9:8.1f} {flops / 1e9:10.1f} {seconds:9.1f}", flush=True)

if __name__ == "__main__":
  main(ARGS)
