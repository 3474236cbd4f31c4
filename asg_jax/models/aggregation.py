"""Word-piece -> word aggregation (asg.md "Word features", docs/interfaces.md §2).

`word_ids [B, L]` (made by the input pipeline) gives each token its aggregated-word slot in
`[0, L-1)`: the pieces of one word share a slot, `[SEP]` gets the slot after the last word,
and `[CLS]` / `[PAD]` are -1 (ignored). The `[CLS]` token is dropped, so there are `N = L-1`
slots. Segment sums are one-hot einsums (static shapes, no loops, partition over the batch).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _slot_one_hot(word_ids: jax.Array, num_slots: int, dtype) -> jax.Array:
  """`[B, L]` slot ids -> `[B, L, num_slots]` one-hot (all-zero rows for id -1)."""
  return (word_ids[..., None] == jnp.arange(num_slots)).astype(dtype)


def aggregate_words(hidden: jax.Array, word_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Sums the word pieces of each word into its slot.

  Args:
    hidden: `[B, L, D]` token features.
    word_ids: int `[B, L]`, slot in `[0, L-1)` per token, -1 for `[CLS]` / `[PAD]`.
  Returns:
    word_hidden: `[B, L-1, D]`, slot n = sum of the tokens with word id n (0 if none).
    word_mask: bool `[B, L-1]`, True where a slot received at least one token.
  """
  if hidden.ndim != 3 or word_ids.shape != hidden.shape[:2]:
    raise ValueError(f"aggregate_words: expected hidden [B, L, D] and word_ids [B, L], got "
                     f"{hidden.shape} and {word_ids.shape}")
  n = hidden.shape[1] - 1
  one_hot = _slot_one_hot(word_ids, n, hidden.dtype)
  word_hidden = jnp.einsum("bln,bld->bnd", one_hot, hidden)
  word_mask = jnp.any(one_hot > 0, axis=1)
  return word_hidden, word_mask


def aggregate_importance(attention: jax.Array, word_ids: jax.Array,
                         word_mask: jax.Array) -> jax.Array:
  """Word importance from the last layer's [CLS] attention.

  Args:
    attention: `[B, H, L, L]` attention probabilities (query axis 2, key axis 3), or only
      the [CLS] query row `[B, H, 1, L]` (a fused attention_impl, models/attention.py).
    word_ids: int `[B, L]` as in `aggregate_words`.
    word_mask: bool `[B, L-1]` valid slots.
  Returns:
    `[B, L-1]` float32: the [CLS] query row averaged over heads, pieces summed into their
    word slots, renormalised to sum 1 over the valid slots; 0 at invalid slots, and an
    all-zero row (not NaN) when a row has no valid slot or zero mass.
  """
  b, _, lq, l = attention.shape
  if lq not in (1, l) or word_ids.shape != (b, l) or word_mask.shape != (b, l - 1):
    raise ValueError(f"aggregate_importance: expected attention [B, H, L or 1, L], word_ids [B, L] "
                     f"and word_mask [B, L-1], got {attention.shape}, {word_ids.shape} and "
                     f"{word_mask.shape}")
  cls_row = jnp.mean(attention[:, :, 0, :].astype(jnp.float32), axis=1)        # [B, L]
  one_hot = _slot_one_hot(word_ids, l - 1, jnp.float32)
  scores = jnp.einsum("bln,bl->bn", one_hot, cls_row) * word_mask
  total = jnp.sum(scores, axis=-1, keepdims=True)
  return jnp.where(total > 0, scores / jnp.where(total > 0, total, 1.0), 0.0)
