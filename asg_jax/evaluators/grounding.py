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


class Evaluator:
  """Region grounding (the pointing game) of region–sentence similarity maps against the
  examples' OWN boxes (`boxes_annotated`); yields `grounding_acc` and its chance level (the
  mean fraction of patch centres inside the boxes), nothing when the split has no such box
  (atlas priors are never scored)."""

  def __init__(self, predict_fns, *, data):
    from asg_jax import losses  # pylint: disable=import-outside-toplevel
    grid, size = predict_fns.info.patch_grid, predict_fns.info.image_size
    self._data = data

    def per_batch(outputs, batch):
      if "region_word_index" not in batch:
        return {}
      sentences = losses.sentence_features(outputs["word_emb"], batch["region_word_index"])
      mask = batch["region_mask"]
      if "boxes_annotated" in batch:
        mask = mask & batch["boxes_annotated"][:, None]
      g = pointing_game(outputs["patch_emb"], sentences, batch["region_boxes"], mask, grid, size)
      return {"hit": g["hit"].sum(-1), "chance": g["chance"].sum(-1), "mask": g["mask"].sum(-1)}
    data.register("grounding", per_batch)

  def run(self, state):
    arrays = self._data.run(state)["grounding"]
    if "mask" not in arrays or arrays["mask"].sum() == 0:
      return
    total = float(arrays["mask"].sum())
    yield "grounding_acc", float(arrays["hit"].sum() / total)
    yield "chance/grounding_acc", float(arrays["chance"].sum() / total)
