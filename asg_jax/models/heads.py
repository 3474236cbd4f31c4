"""Projection heads (asg.md "Projection heads", as MGCA's Global/LocalEmbedding).

    Linear(in, hidden) -> BatchNorm -> ReLU -> Linear(hidden, out) -> BatchNorm(no affine)
    -> L2-normalise

The same module serves the global head (`x [B, D]`) and the local head (applied per token,
`x [B, N, D]`, BatchNorm statistics over all B*N tokens, or over the valid ones with `mask`).
BatchNorm follows PyTorch defaults (momentum 0.1 => flax momentum 0.9, eps 1e-5, two-pass
variance); the running variance is the biased batch variance (PyTorch stores the unbiased one,
a factor n/(n-1) that is negligible at training batch sizes). Linear layers are initialised as
PyTorch's `nn.Linear` (uniform +-1/sqrt(fan_in) for weight and bias). In train mode their
biases get an exactly-zero gradient (`Linear`): the BatchNorm after each cancels them.

Under `jax.jit` with batch-sharded inputs the batch statistics are those of the GLOBAL batch:
the means are ordinary reductions over the batch axis, which XLA partitions across devices.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asg_jax.models.l2norm import l2_normalize


class Linear(nn.Module):
  """PyTorch `nn.Linear` (init uniform +-1/sqrt(fan_in) for weight and bias) as Flax
  `kernel [in, out]` / `bias [out]`.

  With `frozen_bias=True` the bias gets an exactly-zero gradient. The heads use it in train
  mode, where each Linear feeds a BatchNorm that subtracts the batch mean: the bias cancels
  and dL/db is mathematically 0, but autodiff returns float noise that Adam would turn into
  lr-sized random steps (runs would then depend on the device count). No output changes.
  """
  features: int
  dtype: Any = jnp.float32     # compute dtype of the matmul (float32 accumulation)

  @nn.compact
  def __call__(self, x: jax.Array, *, frozen_bias: bool = False) -> jax.Array:
    fan_in = x.shape[-1]
    bound = fan_in ** -0.5
    kernel = self.param("kernel", nn.initializers.variance_scaling(1.0 / 3.0, "fan_in",
                                                                   "uniform"),
                        (fan_in, self.features))
    bias = self.param("bias", lambda key, shape: jax.random.uniform(key, shape, jnp.float32,
                                                                    -bound, bound),
                      (self.features,))
    if frozen_bias:
      bias = jax.lax.stop_gradient(bias)
    y = jnp.matmul(x.astype(self.dtype), kernel.astype(self.dtype),
                   preferred_element_type=jnp.float32)
    return y + bias


class ProjectionHead(nn.Module):
  """MLP projection to the shared embedding space, L2-normalised.

  Attributes:
    hidden: width of the hidden layer (2048 in ASG).
    out: embedding size (128 in ASG).
  """
  hidden: int
  out: int
  dtype: Any = jnp.float32     # matmuls; BatchNorm, L2 norm and the output stay float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool, mask: jax.Array | None = None) -> jax.Array:
    """Args:
      x: `[B, D]` (global) or `[B, N, D]` (per token).
      train: BatchNorm uses batch statistics and updates `batch_stats` (apply with
        `mutable=["batch_stats"]`); otherwise the running statistics.
      mask: optional bool `[B]` / `[B, N]` (same leading shape as `x`): only these rows
        enter the batch statistics (Flax BatchNorm `mask=`). Outputs are still computed at
        every position; padding never changes the valid outputs.
    Returns:
      `[..., out]` unit-norm embeddings, float32.
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim not in (2, 3):
      raise ValueError(f"ProjectionHead input: expected [B, D] or [B, N, D], got {x.shape}")
    bn_mask = None
    if mask is not None:
      if mask.shape != x.shape[:-1]:
        raise ValueError(f"ProjectionHead mask: expected shape {x.shape[:-1]} (the leading "
                         f"axes of x {x.shape}), got {mask.shape}")
      bn_mask = jnp.asarray(mask, bool)[..., None]
    bn = lambda name, affine: nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=False,
        use_bias=affine, use_scale=affine, name=name)
    h = Linear(self.hidden, self.dtype, name="dense_0")(x, frozen_bias=train)
    h = nn.relu(bn("bn_0", True)(h, mask=bn_mask))
    h = Linear(self.out, self.dtype, name="dense_1")(h, frozen_bias=train)
    h = bn("bn_1", False)(h, mask=bn_mask)
    return l2_normalize(h)
