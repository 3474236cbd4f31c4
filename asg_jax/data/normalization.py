"""Pixel normalisation of the image towers' input, in one place (no TensorFlow).

uint8 grey (or RGB) `[..., C]` → float32 `[..., 3]`: `x / 255`, replicated to 3 channels,
then `(x - mean) / std` per channel (ImageNet's mean/std, `"imagenet"`, or 0.5/0.5,
`"half"`). Computed through one 256-entry lookup table (`lookup_table`), so the host
(`normalize_numpy`, NumPy) and the device (`normalize_jax`, inside the jitted step: the
pre-training feed ships uint8 grey, 12× fewer bytes than float32 RGB) give bit-identical
numbers.
"""
from __future__ import annotations

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NORMALIZATIONS = ("imagenet", "half")


def normalization_constants(normalization: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std) per RGB channel for `normalization` in {"imagenet", "half"}."""
  if normalization == "imagenet":
    return IMAGENET_MEAN, IMAGENET_STD
  if normalization == "half":
    return (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
  raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def lookup_table(normalization: str) -> np.ndarray:
  """float32 `[256, 3]`: the normalised value of each grey level per channel."""
  mean, std = normalization_constants(normalization)
  return ((np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
           - np.asarray(mean, np.float32)) / np.asarray(std, np.float32))


def normalize_numpy(images: np.ndarray, normalization: str = "imagenet") -> np.ndarray:
  """uint8 `[..., C]` (C = 1 or 3) → float32 `[..., 3]` on the host."""
  lut = lookup_table(normalization)
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"normalize_numpy expects uint8 images, got {images.dtype}")
  if images.shape[-1] == 1:
    return np.take(lut, images[..., 0], axis=0)
  if images.shape[-1] == 3:
    return lut[images, np.arange(3)]
  raise ValueError(f"images must have 1 or 3 channels, got shape {images.shape}")


def normalize_jax(images, normalization: str = "imagenet"):
  """The same on device (traceable): uint8 `[..., C]` → float32 `[..., 3]`; any other dtype
  is taken as already normalised `[..., 3]` and returned unchanged."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  if images.dtype != jnp.uint8:
    return images
  lut = jnp.asarray(lookup_table(normalization))
  if images.shape[-1] == 1:
    return jnp.take(lut, images[..., 0].astype(jnp.int32), axis=0)
  if images.shape[-1] == 3:
    return lut[images.astype(jnp.int32), jnp.arange(3)]
  raise ValueError(f"images must have 1 or 3 channels, got shape {images.shape}")
