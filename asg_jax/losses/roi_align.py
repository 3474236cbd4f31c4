"""RoIAlign with a 1×1 output and torchvision's semantics, static shapes (asg.md §2, ARSA).

torchvision's CPU kernel (`roi_align_forward_kernel_impl`) for one box and a 1×1 output:

    offset = 0.5 if aligned else 0
    x1, y1, x2, y2 = box * spatial_scale - offset
    w, h = x2 - x1, y2 - y1;  if not aligned: w, h = max(w, 1), max(h, 1)
    gh = sampling_ratio if > 0 else ceil(h);  gw likewise;  count = max(gh·gw, 1)
    for iy < gh, ix < gw:
      y = y1 + (iy + .5)·h / gh;  x = x1 + (ix + .5)·w / gw
      if y < -1 or y > H or x < -1 or x > W: the sample is 0
      y, x = max(y, 0), max(x, 0)
      y_low = floor(y); if y_low >= H - 1: y_low = y_high = H - 1, y = y_low else y_high = y_low+1
      (x likewise), bilinear interpolation of the 4 neighbours
    out = (sum of the samples) / count

The sample grid is a tensor product and both the bilinear weights and the out-of-range rule
factor into a y-part times an x-part, so the output is exactly

    out[b, r] = Σ_{h, w} Wy[b, r, h] · Wx[b, r, w] · F[b, h, w] / count

where Wy (`[B, R, H]`) accumulates the weights of the ≤ `max_h` y-samples of the box (Wx likewise).
This needs no gather, has static shapes inside `jit`, and costs one `[R, H·W] × [H·W, D]`
product per image.

Static sample grid: the adaptive count ceil(h) varies per box, so samples are laid out on a
static grid of `max_samples = (max_h, max_w)` per dimension (default `(H, W)`, i.e. at most H×W
samples per box) and the unused ones are masked. Every box no taller than `max_h` cells and no
wider than `max_w` cells is exact (all boxes inside the grid are, with the default); a larger box
uses `max_h` (`max_w`) evenly spaced samples instead of ceil(h) (ceil(w)) — pass a larger
`max_samples` if you need torchvision's exact values for such boxes.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def roi_align(feature_map: jax.Array, boxes: jax.Array, *, spatial_scale: float = 1.0,
              sampling_ratio: int = -1, aligned: bool = False,
              max_samples: tuple[int, int] | None = None) -> jax.Array:
  """RoIAlign, 1×1 output, torchvision semantics (see the module docstring).

  Args:
    feature_map: `[B, H, W, D]` features (channels last).
    boxes: `[B, R, 4]` (x1, y1, x2, y2) per image, in feature-grid units × 1/spatial_scale
      (with the default scale 1: grid cells; pixel (x, y) of a 224² input on a 14×14 grid is
      (x, y)·14/224). Any values (padding rows, boxes leaving the grid) are allowed.
    spatial_scale: multiplies the box coordinates.
    sampling_ratio: > 0: a fixed number of samples per dimension; ≤ 0: adaptive ceil(size).
    aligned: torchvision's `aligned` (half-pixel offset, no minimum box size of 1).
    max_samples: `(max_h, max_w)` static bound of the adaptive sample grid; default `(H, W)`.
  Returns:
    `[B, R, D]` in the dtype of `feature_map` (accumulated in float32).
  """
  if feature_map.ndim != 4 or boxes.ndim != 3 or boxes.shape[-1] != 4:
    raise ValueError(f"feature_map {feature_map.shape} must be [B,H,W,D] and boxes "
                     f"{boxes.shape} [B,R,4]")
  _, height, width, _ = feature_map.shape
  if sampling_ratio > 0:
    max_h = max_w = int(sampling_ratio)
  else:
    max_h, max_w = max_samples if max_samples is not None else (height, width)
  boxes = boxes.astype(jnp.float32) * spatial_scale - (0.5 if aligned else 0.0)
  x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
  roi_w, roi_h = x2 - x1, y2 - y1
  if not aligned:
    roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
  if sampling_ratio > 0:
    grid_h = jnp.full_like(roi_h, float(sampling_ratio))
    grid_w = jnp.full_like(roi_w, float(sampling_ratio))
  else:
    # ceil of the (non-negative) size; a degenerate aligned box gets 0 samples (count 1)
    grid_h = jnp.clip(jnp.ceil(jax.lax.stop_gradient(roi_h)), 0, max_h)
    grid_w = jnp.clip(jnp.ceil(jax.lax.stop_gradient(roi_w)), 0, max_w)
  count = jnp.maximum(grid_h * grid_w, 1.0)
  wy = _axis_weights(y1, roi_h, grid_h, max_h, height)              # [B, R, H]
  wx = _axis_weights(x1, roi_w, grid_w, max_w, width)               # [B, R, W]
  weights = wy[..., :, None] * wx[..., None, :] / count[..., None, None]   # [B, R, H, W]
  out = jnp.einsum("brhw,bhwd->brd", weights, feature_map.astype(jnp.float32))
  return out.astype(feature_map.dtype)


def _axis_weights(start: jax.Array, size: jax.Array, grid: jax.Array, max_grid: int,
                  length: int) -> jax.Array:
  """Summed bilinear weights along one axis of the `grid` samples of each box.

  Args:
    start, size, grid: `[B, R]` box start, (clamped) size and number of samples (float).
    max_grid: static bound of `grid`.
    length: the feature-map size along this axis.
  Returns:
    `[B, R, length]`: Σ over the box's samples of the weights of the two neighbours.
  """
  i = jnp.arange(max_grid, dtype=jnp.float32)
  g = jnp.maximum(grid, 1.0)[..., None]
  pos = start[..., None] + (i + 0.5) * size[..., None] / g         # [B, R, G]
  active = (i < grid[..., None]) & (pos >= -1.0) & (pos <= length)
  pos = jnp.maximum(pos, 0.0)
  low = jnp.floor(jax.lax.stop_gradient(pos))
  clamp = low >= length - 1
  low = jnp.where(clamp, length - 1.0, low)
  high = jnp.where(clamp, length - 1.0, low + 1.0)
  pos = jnp.where(clamp, low, pos)
  frac = pos - low
  cells = jnp.arange(length, dtype=jnp.float32)
  w = ((1.0 - frac)[..., None] * (cells == low[..., None])
       + frac[..., None] * (cells == high[..., None]))              # [B, R, G, length]
  return jnp.sum(jnp.where(active[..., None], w, 0.0), axis=-2)
