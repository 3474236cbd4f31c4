"""Region grounding: the pointing game of region–sentence similarity maps vs true boxes."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def patch_centers(grid: tuple[int, int], input_size: int) -> jax.Array:
  """`[gh*gw, 2]` (x, y) centres of the patch cells in input pixels, row-major."""
  gh, gw = grid
  ys = (jnp.arange(gh) + 0.5) * (input_size / gh)
  xs = (jnp.arange(gw) + 0.5) * (input_size / gw)
  yy, xx = jnp.meshgrid(ys, xs, indexing="ij")
  return jnp.stack([xx.reshape(-1), yy.reshape(-1)], axis=-1)


def pointing_game(patch_emb: jax.Array, sentence_emb: jax.Array, boxes: jax.Array,
                  region_mask: jax.Array, grid: tuple[int, int],
                  input_size: int) -> dict[str, jax.Array]:
  """Does the patch most similar to a region's sentence fall inside the region's box?

  Args:
    patch_emb: `[B, M, D]` local image embeddings (M = gh·gw, row-major).
    sentence_emb: `[B, R, D]` the sentence feature of each region (ARSA's S_r).
    boxes: `[B, R, 4]` (x1, y1, x2, y2) in input pixels.
    region_mask: `[B, R]` valid regions.
  Returns:
    `hit [B,R]` 1.0 where the arg-max patch centre lies in the box, `chance [B,R]` the
    fraction of patch centres inside the box (a random patch's hit rate), `mask [B,R]`.
  """
  centers = patch_centers(grid, input_size)                        # [M, 2]
  sim = jnp.einsum("bmd,brd->brm", patch_emb, sentence_emb)        # [B, R, M]
  best = jnp.argmax(sim, axis=-1)                                  # [B, R]
  cx, cy = centers[:, 0], centers[:, 1]
  x1, y1, x2, y2 = (boxes[..., i][..., None] for i in range(4))    # [B, R, 1]
  inside = (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= y2)       # [B, R, M]
  hit = jnp.take_along_axis(inside, best[..., None], axis=-1)[..., 0]
  mask = region_mask.astype(jnp.float32)
  return {"hit": hit.astype(jnp.float32) * mask,
          "chance": jnp.mean(inside.astype(jnp.float32), axis=-1) * mask,
          "mask": mask}
