"""Independent float64 NumPy references of asg_jax/losses, shared by the tests of tests/losses/
(the oracles the JAX losses are checked against).

- contrastive: `np_lse`, `np_ira` (IRA), `np_soft_targets`, `np_kl`, `np_softmax`, `np_soft`
  (ERL), `np_retrieval` (in-batch top-k), `random_inputs` (embeddings + tags);
- `np_bilinear`, `np_roi_align`: a loop-by-loop transcription of torchvision's CPU RoIAlign;
- `fake_batch`: named outputs + batch keys (docs/interfaces.md) with edge cases, for the
  ASG objective.
"""
import math

import numpy as np

TAU = 0.07


# ----------------------------------------------------------------------------- contrastive
def np_lse(x, axis):
  m = np.max(x, axis=axis, keepdims=True)
  return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def np_ira(img, txt, tau=TAU):
  s = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T / tau
  d = np.diag(s)
  return np.mean(np_lse(s, 1) - d) + np.mean(np_lse(s, 0) - d)


def np_soft_targets(tags, mix=0.2):
  y = (np.asarray(tags) == 1).astype(np.float64)
  y = y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-12)
  q = (1 - mix) * np.eye(len(y)) + mix * y @ y.T + 1e-6
  return q / q.sum(1, keepdims=True)


def np_kl(p, q):  # sum over columns, mean over rows
  return np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1))


def np_softmax(x):
  e = np.exp(x - x.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def np_soft(img, txt, tags, tau=TAU, mix=0.2):
  s = np.asarray(img, np.float64) @ np.asarray(txt, np.float64).T / tau
  q = np_soft_targets(tags, mix)
  p_i2t, p_t2i = np_softmax(s), np_softmax(s.T)
  return 0.5 * (0.5 * (np_kl(q, p_i2t) + np_kl(p_i2t, q))
                + 0.5 * (np_kl(q, p_t2i) + np_kl(p_t2i, q)))


def np_retrieval(img, txt):
  s = np.asarray(img, np.float32) @ np.asarray(txt, np.float32).T
  d = np.diag(s)
  r_i2t = np.sum(s > d[:, None], 1)
  r_t2i = np.sum(s > d[None, :], 0)
  out = {}
  for k in (1, 5):
    if k <= len(s):
      out[f"i2t_top{k}"], out[f"t2i_top{k}"] = np.mean(r_i2t < k), np.mean(r_t2i < k)
      out[f"top{k}"] = 0.5 * (out[f"i2t_top{k}"] + out[f"t2i_top{k}"])
  return out


def random_inputs(b, d=16, t=40, seed=0):
  rng = np.random.default_rng(seed)
  img = rng.normal(size=(b, d))
  txt = img + 0.8 * rng.normal(size=(b, d))   # correlated pairs -> non-trivial ranks
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  txt /= np.linalg.norm(txt, axis=1, keepdims=True)
  tags = rng.choice([-1, 0, 1], size=(b, t), p=[0.5, 0.3, 0.2]).astype(np.int32)
  tags[0] = -1                                 # a study with no positive tag
  return img.astype(np.float32), txt.astype(np.float32), tags


# ----------------------------------------------------------------------------- RoIAlign
def np_bilinear(fmap, y, x):
  """torchvision `bilinear_interpolate` (pre-calc variant) for one sample; fmap [H, W, D]."""
  height, width = fmap.shape[:2]
  if y < -1.0 or y > height or x < -1.0 or x > width:
    return np.zeros(fmap.shape[-1])
  y, x = max(y, 0.0), max(x, 0.0)
  y_low, x_low = int(y), int(x)
  if y_low >= height - 1:
    y_high = y_low = height - 1
    y = float(y_low)
  else:
    y_high = y_low + 1
  if x_low >= width - 1:
    x_high = x_low = width - 1
    x = float(x_low)
  else:
    x_high = x_low + 1
  ly, lx = y - y_low, x - x_low
  hy, hx = 1.0 - ly, 1.0 - lx
  return (hy * hx * fmap[y_low, x_low] + hy * lx * fmap[y_low, x_high]
          + ly * hx * fmap[y_high, x_low] + ly * lx * fmap[y_high, x_high])


def np_roi_align(fmap, boxes, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
  """torchvision.ops.roi_align(..., output_size=1) for fmap [B,H,W,D], boxes [B,R,4]."""
  out = np.zeros(boxes.shape[:2] + fmap.shape[-1:])
  offset = 0.5 if aligned else 0.0
  for b in range(boxes.shape[0]):
    for r in range(boxes.shape[1]):
      x1, y1, x2, y2 = (float(v) * spatial_scale - offset for v in boxes[b, r])
      roi_w, roi_h = x2 - x1, y2 - y1
      if not aligned:
        roi_w, roi_h = max(roi_w, 1.0), max(roi_h, 1.0)
      bin_h, bin_w = roi_h / 1, roi_w / 1          # pooled_height = pooled_width = 1
      grid_h = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_h / 1)
      grid_w = sampling_ratio if sampling_ratio > 0 else math.ceil(roi_w / 1)
      count = max(grid_h * grid_w, 1)
      acc = np.zeros(fmap.shape[-1])
      for iy in range(grid_h):
        y = y1 + 0 * bin_h + (iy + 0.5) * bin_h / grid_h
        for ix in range(grid_w):
          x = x1 + 0 * bin_w + (ix + 0.5) * bin_w / grid_w
          acc += np_bilinear(fmap[b].astype(np.float64), y, x)
      out[b, r] = acc / count
  return out


# ----------------------------------------------------------------------------- the ASG objective's inputs
def normalize(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def fake_batch(b=4, r=5, k=6, n=9, e=8, t=40, grid=(4, 4), size=64, seed=0):
  """Named outputs + batch keys (docs/interfaces.md) with edge cases in them."""
  rng = np.random.default_rng(seed)
  gh, gw = grid
  img = normalize(rng.normal(size=(b, e)))
  outputs = {
      "image_emb": img,
      "text_emb": normalize(img + rng.normal(size=(b, e))),
      "patch_emb": normalize(rng.normal(size=(b, gh * gw, e))),
      "word_emb": normalize(rng.normal(size=(b, n, e))),
      "tag_logits": 3 * rng.normal(size=(b, t)),
  }
  outputs = {key: v.astype(np.float32) for key, v in outputs.items()}
  xy = rng.uniform(0, size * 0.7, size=(b, r, 2))
  wh = rng.uniform(size * 0.05, size * 0.5, size=(b, r, 2))
  boxes = np.concatenate([xy, np.minimum(xy + wh, size)], -1).astype(np.float32)
  mask = rng.uniform(size=(b, r)) < 0.7
  mask[0] = False                                  # an image without any valid region
  mask[-1, :2] = True
  boxes[~mask] = 0.0
  index = rng.integers(0, n, size=(b, r, k)).astype(np.int32)
  index[rng.uniform(size=index.shape) < 0.4] = -1
  index[~mask] = -1
  index[-1, 0] = -1                                # a valid region without words
  tags = rng.choice([-1, 0, 1], size=(b, t), p=[0.5, 0.3, 0.2]).astype(np.int32)
  tags[b // 2] = -1                                # a study without a positive tag
  batch = {"region_boxes": boxes, "region_mask": mask, "region_word_index": index,
           "tags": tags}
  return outputs, batch
