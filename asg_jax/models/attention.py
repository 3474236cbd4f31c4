"""Scaled dot-product attention of the two towers, in one place (no parameters).

`config.model.image.attention_impl` / `config.model.text.attention_impl`:
  "einsum" (default): the explicit softmax of Hugging Face's eager attention (float32 scores
      and softmax); returns the full probabilities `[B, H, L, L]` (what the parity tests with
      Hugging Face compare) and supports dropout on them (BERT's attention dropout).
  "auto" | "xla" | "cudnn": `jax.nn.dot_product_attention(implementation=None | "xla" |
      "cudnn")`. Only "cudnn" is a fused kernel (cuDNN flash attention, NVIDIA only, no
      `[B, H, L, L]` tensor kept for the backward pass); "auto" lets JAX choose and JAX
      (0.10 and 0.11) always chooses its XLA path, the same program as "xla" — a fused
      default needs "cudnn" named, on a GPU. No dropout on the probabilities (the
      config check requires `attention_dropout = 0`). Only the [CLS] query row of the
      probabilities is computed, separately (`want="cls"`, what RECLF's importance reads).
Equal to "einsum" within float32 rounding (tests/models/test_attention.py).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("einsum", "auto", "xla", "cudnn")


def attend(q: jax.Array, k: jax.Array, v: jax.Array, *, impl: str = "einsum",
           key_mask: jax.Array | None = None, want: str = "all",
           probs_dropout: Callable[[jax.Array], jax.Array] | None = None,
           dtype=jnp.float32) -> tuple[jax.Array, jax.Array | None]:
  """Multi-head attention of `q [B, Lq, H, Dh]` over `k, v [B, Lk, H, Dh]`.

  Args:
    impl: one of IMPLEMENTATIONS (module docstring).
    key_mask: bool `[B, Lk]`, True for real keys (None: all real).
    want: which probabilities to return: "all" `[B, H, Lq, Lk]`, "cls" `[B, H, 1, Lk]` (query
      0 only) or "none".
    probs_dropout: dropout applied to the probabilities before they weight `v` ("einsum"
      only; None = none).
    dtype: the dtype the probabilities are cast to before weighting `v` ("einsum").
  Returns:
    (context `[B, Lq, H, Dh]`, float32 probabilities as `want` says, or None).
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"attention impl {impl!r}; expected one of {IMPLEMENTATIONS}")
  if want not in ("all", "cls", "none"):
    raise ValueError(f"want={want!r}; expected 'all', 'cls' or 'none'")
  scale = q.shape[-1] ** -0.5
  bias = None
  if key_mask is not None:   # HF's extended mask: float32 min on padded keys
    keep = key_mask.astype(jnp.float32)
    bias = ((1.0 - keep) * jnp.finfo(jnp.float32).min)[:, None, None, :]

  # heads-major [B, H, L, Dh] operands: XLA:CPU runs these batched dots ≈ 3.6x faster in the
  # forward than [B, L, H, Dh] einsums at ViT-B shapes (benchmarks/RESULTS.md "Attention
  # layout"); the values are the same within float32 rounding
  def heads_major(x):
    return x.transpose(0, 2, 1, 3)

  def probabilities(queries):
    scores = jnp.einsum("bhqd,bhkd->bhqk", heads_major(queries), heads_major(k))
    scores = scores.astype(jnp.float32) * scale
    return jax.nn.softmax(scores if bias is None else scores + bias, axis=-1)

  if impl == "einsum":
    probs = probabilities(q)
    weights = probs_dropout(probs) if probs_dropout is not None else probs
    ctx = jnp.einsum("bhqk,bhkd->bhqd", weights.astype(dtype), heads_major(v))
    return heads_major(ctx), {"all": probs, "cls": probs[:, :, :1], "none": None}[want]
  if probs_dropout is not None:
    raise ValueError(f"attention impl {impl!r} has no dropout on the probabilities: set "
                     f"attention_dropout = 0 (or impl='einsum')")
  mask = None if key_mask is None else key_mask.astype(bool)[:, None, None, :]
  ctx = jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale,
                                     implementation=None if impl == "auto" else impl)
  if want == "none":
    return ctx, None
  return ctx, probabilities(q[:, :1] if want == "cls" else q)
