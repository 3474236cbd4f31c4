"""The towers' attention on XLA:CPU: token-major vs heads-major batched dots.

    .venv/bin/python benchmarks/attention_layout.py [--batch 8] [--repeats 15]

Times the explicit-softmax attention (scores → softmax → context, float32) at ViT-B/16 shapes
(L = 197, 12 heads × 64) and BERT shapes (L = 112, padded keys masked), forward and
forward + backward (gradients with respect to q, k, v), three ways:

- `token-major`: the einsums on `[B, L, H, Dh]` operands ("bqhd,bkhd->bhqk",
  "bhqk,bkhd->bqhd"), what `asg_jax.models.attention` ran before;
- `heads-major`: the same after one transpose to `[B, H, L, Dh]` ("bhqd,bhkd->bhqk");
- `attend`: the project's `attention.attend(impl="einsum")`, which must run at the
  heads-major speed.

Prints one row per (shape, variant): median ms and the GFLOP/s of the batched dots (4·B·H·L²·Dh
forward, 3× that forward + backward; the softmax is not counted), then one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parse():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--repeats", type=int, default=15)
  return parser.parse_args()


def main():
  args = _parse()
  from asg_jax import cpu_allocator
  cpu_allocator.reexec_with_tunables()
  import jax
  import jax.numpy as jnp
  import numpy as np
  from asg_jax.models import attention

  def token_major(q, k, v, bias):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5 + bias
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)

  def heads_major(q, k, v, bias):
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5 + bias
    return jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v).transpose(0, 2, 1, 3)

  def project(q, k, v, bias, mask):
    return attention.attend(q, k, v, impl="einsum", key_mask=mask, want="none")[0]

  def median_seconds(fn, *xs):
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*xs))
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(*xs))
      times.append(time.perf_counter() - t0)
    return float(np.median(times))

  rows = []
  shapes = {"vit_b16": (197, 12, 64, 197), "bert": (112, 12, 64, 90)}   # L, H, Dh, real keys
  for name, (length, heads, dh, real) in shapes.items():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    q, k, v, g = (jax.random.normal(key, (args.batch, length, heads, dh)) for key in keys)
    mask = jnp.arange(length)[None, :].repeat(args.batch, 0) < real
    bias = jnp.where(mask, 0.0, jnp.finfo(jnp.float32).min)[:, None, None, :]
    variants = {"token-major": lambda q, k, v, f=token_major: f(q, k, v, bias),
                "heads-major": lambda q, k, v, f=heads_major: f(q, k, v, bias),
                "attend": lambda q, k, v: project(q, k, v, bias, mask)}
    ref = np.asarray(jax.jit(variants["token-major"])(q, k, v))
    flops = 4 * args.batch * heads * length * length * dh
    for variant, fn in variants.items():
      err = float(np.abs(np.asarray(jax.jit(fn)(q, k, v)) - ref).max())
      grad = jax.grad(lambda q, k, v, fn=fn: jnp.sum(fn(q, k, v) * g), argnums=(0, 1, 2))
      fwd, both = median_seconds(fn, q, k, v), median_seconds(grad, q, k, v)
      rows.append({"shape": name, "variant": variant, "fwd_ms": 1e3 * fwd,
                   "fwd_bwd_ms": 1e3 * both, "fwd_gflops": flops / fwd / 1e9,
                   "fwd_bwd_gflops": 3 * flops / both / 1e9, "max_abs_diff": err})
      r = rows[-1]
      print(f"{name:8s} {variant:12s} fwd {r['fwd_ms']:7.2f} ms ({r['fwd_gflops']:6.1f} GFLOP/s)"
            f"  fwd+bwd {r['fwd_bwd_ms']:7.2f} ms ({r['fwd_bwd_gflops']:6.1f} GFLOP/s)"
            f"  |Δ| vs token-major {err:.1e}", flush=True)
  print(json.dumps({"batch": args.batch, "backend": jax.default_backend(), "rows": rows}))


if __name__ == "__main__":
  main()
