"""Global image–report contrastive losses (IRA). Owned by the ASG-losses work; see asg.md."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def ira_loss(image_emb: jax.Array, text_emb: jax.Array, temperature: float = 0.07) -> jax.Array:
  """Image–report alignment: CE(image→text) + CE(text→image), each a batch mean.

  Args:
    image_emb: `[B, D]` L2-normalised image embeddings.
    text_emb: `[B, D]` L2-normalised report embeddings.
  Returns:
    scalar; all-equal logits give 2·log B, B = 1 gives 0.
  """
  logits = jnp.einsum("id,jd->ij", image_emb, text_emb).astype(jnp.float32) / temperature
  diag = jnp.diagonal(logits)
  i2t = jax.nn.logsumexp(logits, axis=1) - diag
  t2i = jax.nn.logsumexp(logits, axis=0) - diag
  return jnp.mean(i2t) + jnp.mean(t2i)
