"""ASG's image geometry, applied jointly to an image and its region boxes (TF ops), and the
same evaluation crop as a NumPy coordinate mapping (`crop_geometry`, for the figures).

The pipeline's functions are made of TensorFlow ops so they run inside `tf.data` `map`. The
transform of one example (asg.md "Pre-training recipe", MGCA's `resize_img`):

1. **Resize** so the longest side is `resize` (aspect kept; the short side is
   `round(short * resize / long)`), antialiased bilinear, rounded back to uint8. The stored
   images of the project's builders usually have longest side `resize` already, and are
   then not resampled.
2. **Zero-pad** to `resize × resize`, CENTRED: `floor(pad / 2)` black rows/columns on the
   top/left and the rest on the bottom/right (as MGCA/ASG's `cv2.copyMakeBorder`).
3. **Crop** `image_size × image_size`: at a uniformly random offset in
   `[0, resize - image_size]²` for training, drawn with a stateless RNG from a per-example
   seed (so it is reproducible and independent of the order of the map calls), or at the
   centre `((resize - image_size) // 2, …)` for evaluation.
4. **Normalise**: grey values / 255, replicated to 3 channels, then `(x - mean) / std` with
   ImageNet's mean/std (`"imagenet"`) or 0.5/0.5 (`"half"`). Padding is black before
   normalisation (as in MGCA). The pipeline crops in tf.data (uint8, 1 channel) and
   normalises on the host with `normalize_numpy` (a lookup table): shipping 4·3 = 12x fewer
   bytes through tf.data's batching doubled its throughput.

Boxes `(x1, y1, x2, y2)` in input-image pixels follow the same steps exactly: scaled by
`new_w / W`, `new_h / H`, shifted by the pad and by minus the crop offset, then clipped to
`[0, image_size]`. A box is KEPT when at least `min_box_visibility` (default 0.5) of its
area (measured after resize + pad, before the crop) lies inside the crop; a box with no
area is never kept. Dropped boxes come back as zeros with `keep = False` — the pipeline
drops them together with their sentence sets.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from asg_jax.data.normalization import (  # noqa: E402,F401  (re-exported)
    IMAGENET_MEAN, IMAGENET_STD, NORMALIZATIONS, normalization_constants, normalize_numpy)


def placement(height, width, resize: int, xp=tf):
  """Steps 1-2's arithmetic, the one definition of where an image lands in the padded
  `resize x resize` square (the TF `crop` and the NumPy `crop_geometry` both call it).

  Args:
    height, width: the input image's shape (tensors inside tf.data, ints for NumPy).
    xp: `tf` or `np`, the library the arithmetic runs in.
  Returns:
    `(new_h, new_w, top, left)`: the resized shape (longest side `resize`, short side
    rounded, at least 1) and the centred zero padding above / left of it; int32 tensors
    (`tf`) or ints (`np`).
  """
  if xp is tf:
    to_float, to_int = (lambda v: tf.cast(v, tf.float64)), (lambda v: tf.cast(v, tf.int32))
  elif xp is np:
    to_float, to_int = np.float64, int
  else:
    raise ValueError(f"xp must be tf or np, got {xp!r}")
  h, w = to_float(height), to_float(width)
  scale = to_float(resize) / xp.maximum(h, w)
  new_h = xp.maximum(to_int(xp.floor(h * scale + 0.5)), 1)
  new_w = xp.maximum(to_int(xp.floor(w * scale + 0.5)), 1)
  if xp is np:
    new_h, new_w = int(new_h), int(new_w)
  return new_h, new_w, (resize - new_h) // 2, (resize - new_w) // 2


def centre_offset(resize: int, image_size: int) -> int:
  """The evaluation crop's offset (both axes) in the padded `resize x resize` square."""
  return (resize - image_size) // 2


def crop_offset(resize: int, image_size: int, train: bool,
                seed: tf.Tensor | None = None) -> tf.Tensor:
  """Crop offset `(oy, ox)` int32 `[2]` in the padded `resize × resize` image.

  Args:
    train: random (needs `seed`, int `[2]`, for `tf.random.stateless_uniform`) or centred.
  """
  span = resize - image_size
  if not train or span == 0:
    centre = centre_offset(resize, image_size)
    return tf.constant([centre, centre], tf.int32)
  if seed is None:
    raise ValueError("crop_offset(train=True) needs a per-example seed")
  return tf.random.stateless_uniform([2], seed=tf.cast(seed, tf.int64), minval=0,
                                     maxval=span + 1, dtype=tf.int32)


def crop(image: tf.Tensor, boxes: tf.Tensor, *, resize: int, image_size: int, train: bool,
         seed: tf.Tensor | None = None, min_box_visibility: float = 0.5
         ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Steps 1-3 (resize, pad, crop) on the uint8 image; the boxes follow.

  Args:
    image: uint8 `[H, W, C]`, `C` = 1 (grey) or 3.
    boxes: float32 `[R, 4]` `(x1, y1, x2, y2)` in `image` pixels.
    resize: longest side after resizing and the side of the zero-padded square.
    image_size: crop side `S` (`<= resize`).
    train: random crop (seeded by `seed`, int `[2]`) or centre crop.
    min_box_visibility: fraction of a box's area that must stay inside the crop.
  Returns:
    image uint8 `[S, S, C]` (a resampled image is rounded back to uint8), boxes float32
    `[R, 4]` in crop pixels (zeros where dropped), keep bool `[R]`.
  """
  if image_size > resize:
    raise ValueError(f"image_size={image_size} is larger than resize={resize}")
  image = tf.convert_to_tensor(image)
  if image.shape.rank != 3:
    raise ValueError(f"image must be [H, W, C], got shape {image.shape}")
  channels = image.shape[-1]
  if channels not in (1, 3):
    raise ValueError(f"image must have 1 or 3 channels, got {channels}")
  if image.dtype != tf.uint8:
    image = tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0, 255), tf.uint8)
  boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  new_h, new_w, top, left = placement(height, width, resize)
  needs_resize = tf.logical_or(tf.not_equal(new_h, height), tf.not_equal(new_w, width))

  def resample():
    out = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]),
                          method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

  image = tf.cond(needs_resize, resample, lambda: image)
  sx = tf.cast(new_w, tf.float32) / tf.cast(width, tf.float32)
  sy = tf.cast(new_h, tf.float32) / tf.cast(height, tf.float32)
  image = tf.pad(image, [[top, resize - new_h - top], [left, resize - new_w - left], [0, 0]])
  offset = crop_offset(resize, image_size, train, seed)
  image = tf.slice(image, tf.stack([offset[0], offset[1], 0]), [image_size, image_size, channels])
  image = tf.ensure_shape(image, [image_size, image_size, channels])

  scale = tf.stack([sx, sy, sx, sy])
  shift = tf.cast(tf.stack([left - offset[1], top - offset[0],
                            left - offset[1], top - offset[0]]), tf.float32)
  moved = boxes * scale + shift
  area = (tf.maximum(moved[:, 2] - moved[:, 0], 0.0) *
          tf.maximum(moved[:, 3] - moved[:, 1], 0.0))
  clipped = tf.clip_by_value(moved, 0.0, float(image_size))
  inside = (tf.maximum(clipped[:, 2] - clipped[:, 0], 0.0) *
            tf.maximum(clipped[:, 3] - clipped[:, 1], 0.0))
  keep = tf.logical_and(area > 0.0, inside >= min_box_visibility * area)
  clipped = tf.where(keep[:, None], clipped, tf.zeros_like(clipped))
  return image, clipped, keep


def normalize(image: tf.Tensor, normalization: str = "imagenet") -> tf.Tensor:
  """Step 4 in TF: uint8 `[..., C]` (C = 1 or 3) → float32 `[..., 3]` normalised."""
  mean, std = normalization_constants(normalization)
  image = tf.cast(image, tf.float32)
  if image.shape[-1] == 1:
    image = tf.tile(image, [1] * (image.shape.rank - 1) + [3])
  return (image / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def transform(image: tf.Tensor, boxes: tf.Tensor, *, resize: int, image_size: int, train: bool,
              seed: tf.Tensor | None = None, normalization: str = "imagenet",
              min_box_visibility: float = 0.5) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """All four steps in TF: `crop` then `normalize`.

  Returns:
    image float32 `[S, S, 3]`, boxes float32 `[R, 4]` in crop pixels (zeros where dropped),
    keep bool `[R]`.
  """
  normalization_constants(normalization)
  image, boxes, keep = crop(image, boxes, resize=resize, image_size=image_size, train=train,
                            seed=seed, min_box_visibility=min_box_visibility)
  return normalize(image, normalization), boxes, keep


# ----------------------------------------------------------------------------- NumPy
@dataclasses.dataclass(frozen=True)
class CropGeometry:
  """Where the evaluation crop (`crop(train=False)`) lies in an original `height x width`
  image, in NumPy (the figures draw on the original image). Built by `crop_geometry` from
  `placement` and `centre_offset`, the pipeline's own arithmetic. A point `x` of the original
  (continuous pixel coordinates, pixel centres at `i + 0.5`) lies at
  `x * scale_x + left - offset_x` in the crop (likewise for y), as `crop` moves boxes.
  """
  height: int
  width: int
  resize: int
  image_size: int
  scale_x: float
  scale_y: float
  left: int
  top: int
  offset_x: int
  offset_y: int

  def to_crop(self, x, y):
    """Original coordinates -> crop coordinates."""
    return (np.asarray(x, np.float64) * self.scale_x + self.left - self.offset_x,
            np.asarray(y, np.float64) * self.scale_y + self.top - self.offset_y)

  def to_original(self, u, v):
    """Crop coordinates -> original coordinates."""
    return ((np.asarray(u, np.float64) - self.left + self.offset_x) / self.scale_x,
            (np.asarray(v, np.float64) - self.top + self.offset_y) / self.scale_y)

  def crop_box(self) -> tuple[float, float, float, float]:
    """The crop square `(x1, y1, x2, y2)` in original coordinates (may exceed the image)."""
    x1, y1 = self.to_original(0.0, 0.0)
    x2, y2 = self.to_original(float(self.image_size), float(self.image_size))
    return float(x1), float(y1), float(x2), float(y2)


def crop_geometry(height: int, width: int, resize: int, image_size: int) -> CropGeometry:
  """The evaluation crop of an original `height x width` image (see `CropGeometry`)."""
  if image_size > resize:
    raise ValueError(f"image_size={image_size} is larger than resize={resize}")
  new_h, new_w, top, left = placement(height, width, resize, xp=np)
  offset = centre_offset(resize, image_size)
  return CropGeometry(height=int(height), width=int(width), resize=int(resize),
                      image_size=int(image_size), scale_x=new_w / width, scale_y=new_h / height,
                      left=left, top=top, offset_x=offset, offset_y=offset)
