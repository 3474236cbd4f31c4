"""L2 normalisation, shared by the models and the losses (no parameters, no Flax)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """`x / max(‖x‖₂, eps)` along `axis` (torch `F.normalize`), with a finite gradient at 0.

  The one L2-normalisation of the package (embeddings, attended contexts, label vectors).
  """
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))
