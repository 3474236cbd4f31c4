"""geometry.transform vs an independent NumPy (+ torch for resampling) reference."""
import numpy as np
import pytest
import tensorflow as tf
import torch

from asg_jax.data import geometry

MEAN = {"imagenet": np.array([0.485, 0.456, 0.406]), "half": np.array([0.5, 0.5, 0.5])}
STD = {"imagenet": np.array([0.229, 0.224, 0.225]), "half": np.array([0.5, 0.5, 0.5])}


def ref_transform(image, boxes, resize, size, offset, normalization="imagenet", min_vis=0.5):
  """NumPy reference: resize longest side (torch antialiased bilinear), centred zero pad,
  crop at `offset` = (oy, ox), normalise; boxes scaled/shifted/clipped, kept at >= min_vis."""
  img = image.astype(np.float64)
  h, w, c = img.shape
  new_h = max(int(np.floor(h * resize / max(h, w) + 0.5)), 1)
  new_w = max(int(np.floor(w * resize / max(h, w) + 0.5)), 1)
  if (new_h, new_w) != (h, w):
    t = torch.tensor(img.transpose(2, 0, 1)[None], dtype=torch.float32)
    img = torch.nn.functional.interpolate(t, size=(new_h, new_w), mode="bilinear",
                                          antialias=True, align_corners=False)[0].numpy()
    img = img.transpose(1, 2, 0).astype(np.float64)
  top, left = (resize - new_h) // 2, (resize - new_w) // 2
  padded = np.zeros((resize, resize, c))
  padded[top:top + new_h, left:left + new_w] = img
  oy, ox = offset
  crop = padded[oy:oy + size, ox:ox + size]
  if c == 1:
    crop = np.repeat(crop, 3, axis=-1)
  out = (crop / 255.0 - MEAN[normalization]) / STD[normalization]
  b = boxes.astype(np.float64).copy()
  b[:, [0, 2]] = b[:, [0, 2]] * new_w / w + left - ox
  b[:, [1, 3]] = b[:, [1, 3]] * new_h / h + top - oy
  area = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
  cb = np.clip(b, 0, size)
  inside = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
  keep = (area > 0) & (inside >= min_vis * area)
  cb[~keep] = 0
  return out, cb, keep


def run(image, boxes, **kw):
  img, b, keep = geometry.transform(tf.constant(image), tf.constant(boxes, tf.float32), **kw)
  return img.numpy(), b.numpy(), keep.numpy()


def crop_boxes_to_stored(crop_boxes, left, top, off):
  """Boxes given in crop coordinates -> stored-image coordinates (no resize)."""
  b = np.array(crop_boxes, np.float32)
  b[:, [0, 2]] += off - left
  b[:, [1, 3]] += off - top
  return b


def test_eval_centre_crop_image_and_boxes_edges():
  rng = np.random.default_rng(0)
  resize, size = 64, 56          # H=64, W=48: left pad 8, centre offset 4
  image = rng.integers(0, 256, (64, 48, 1)).astype(np.uint8)
  crop_boxes = [
      [10, 10, 30, 40],      # inside
      [0, 0, 56, 56],        # exactly the crop: touching every edge, kept
      [-10, 5, 10, 25],      # exactly half inside (50 % -> kept)
      [-11, 5, 9, 25],       # 45 % inside -> dropped
      [40, 50, 60, 62],      # 16x6 of 20x12 inside = 40 % -> dropped
      [50, 20, 62, 30],      # 6 of 12 wide inside -> 50 % kept, clipped at x = 56
      [-4, -4, -1, -1],      # fully outside (in the padding) -> dropped
      [20, 20, 20, 30],      # zero area -> dropped
  ]
  boxes = crop_boxes_to_stored(crop_boxes, left=8, top=0, off=4)
  img, b, keep = run(image, boxes, resize=resize, image_size=size, train=False)
  ref_img, ref_b, ref_keep = ref_transform(image, boxes, resize, size, (4, 4))
  np.testing.assert_allclose(img, ref_img, atol=1e-5)
  np.testing.assert_array_equal(keep, ref_keep)
  np.testing.assert_array_equal(keep, [1, 1, 1, 0, 0, 1, 0, 0])
  np.testing.assert_allclose(b, ref_b, atol=1e-4)
  np.testing.assert_allclose(b[1], [0, 0, 56, 56])
  np.testing.assert_allclose(b[5], [50, 20, 56, 30])
  assert np.all(b[~keep] == 0)
  # the padding columns (left 8 - offset 4 = 4 columns) are black before normalisation
  np.testing.assert_allclose(img[:, :4, 0], (0 - 0.485) / 0.229, atol=1e-6)


def test_train_random_crop_matches_reference_at_its_offset():
  rng = np.random.default_rng(1)
  resize, size = 40, 32
  image = rng.integers(0, 256, (30, 40, 1)).astype(np.uint8)   # top pad 5
  boxes = np.array([[2, 2, 20, 20], [0, 0, 40, 30], [30, 20, 40, 30], [10, 0, 14, 3]],
                   np.float32)
  offsets = set()
  for s in range(12):
    seed = tf.constant([7, s], tf.int64)
    img, b, keep = run(image, boxes, resize=resize, image_size=size, train=True, seed=seed)
    img2, b2, _ = run(image, boxes, resize=resize, image_size=size, train=True, seed=seed)
    np.testing.assert_array_equal(img, img2)              # stateless: same seed, same crop
    np.testing.assert_array_equal(b, b2)
    matches = []
    for oy in range(resize - size + 1):
      for ox in range(resize - size + 1):
        ref_img, _, _ = ref_transform(image, boxes, resize, size, (oy, ox))
        if np.allclose(img, ref_img, atol=1e-5):
          matches.append((oy, ox))
    assert len(matches) == 1, matches
    offsets.add(matches[0])
    _, ref_b, ref_keep = ref_transform(image, boxes, resize, size, matches[0])
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_allclose(b, ref_b, atol=1e-4)
  assert len(offsets) >= 5   # the crop really moves with the seed


@pytest.mark.parametrize("shape", [(100, 70), (50, 90), (33, 33)])
def test_resize_when_stored_size_differs(shape):
  rng = np.random.default_rng(2)
  image = rng.integers(0, 256, shape + (1,)).astype(np.uint8)
  h, w = shape
  boxes = np.array([[0, 0, w, h], [w * 0.2, h * 0.3, w * 0.6, h * 0.9]], np.float32)
  img, b, keep = run(image, boxes, resize=64, image_size=60, train=False,
                     normalization="half")
  ref_img, ref_b, ref_keep = ref_transform(image, boxes, 64, 60, (2, 2), "half")
  # the resampled image is rounded back to uint8: at most half a grey level apart
  np.testing.assert_allclose(img, ref_img, atol=0.51 / 255 / 0.5)
  assert np.abs(img - ref_img).mean() < 0.26 / 255 / 0.5
  np.testing.assert_array_equal(keep, ref_keep)
  np.testing.assert_allclose(b, ref_b, atol=1e-3)


def test_three_channel_input_and_bad_arguments():
  rng = np.random.default_rng(3)
  image = rng.integers(0, 256, (16, 12, 3)).astype(np.uint8)
  img, _, _ = run(image, np.zeros((0, 4), np.float32), resize=16, image_size=16, train=False)
  ref_img, _, _ = ref_transform(image, np.zeros((0, 4)), 16, 16, (0, 0))
  np.testing.assert_allclose(img, ref_img, atol=1e-5)
  with pytest.raises(ValueError, match="normalization"):
    run(image, np.zeros((0, 4), np.float32), resize=16, image_size=16, train=False,
        normalization="bogus")
  with pytest.raises(ValueError, match="image_size"):
    run(image, np.zeros((0, 4), np.float32), resize=16, image_size=20, train=False)
  with pytest.raises(ValueError, match="seed"):
    run(image, np.zeros((0, 4), np.float32), resize=16, image_size=12, train=True)


def test_inside_tf_data_map():
  image = np.full((8, 6, 1), 255, np.uint8)
  ds = tf.data.Dataset.from_tensors((image, np.array([[0, 0, 6, 8]], np.float32)))
  ds = ds.map(lambda i, b: geometry.transform(i, b, resize=8, image_size=8, train=False,
                                              normalization="half"))
  img, b, keep = next(iter(ds))
  assert img.shape == (8, 8, 3) and keep.numpy().all()
  np.testing.assert_allclose(b.numpy(), [[1, 0, 7, 8]])
  np.testing.assert_allclose(img.numpy()[:, 1:7], 1.0)
  np.testing.assert_allclose(img.numpy()[:, 0], -1.0)


@pytest.mark.parametrize("normalization", ["imagenet", "half"])
def test_numpy_normalisation_equals_tf(normalization):
  rng = np.random.default_rng(4)
  for channels in (1, 3):
    images = rng.integers(0, 256, (2, 5, 7, channels)).astype(np.uint8)
    got = geometry.normalize_numpy(images, normalization)
    want = geometry.normalize(tf.constant(images), normalization).numpy()
    assert got.dtype == np.float32 and got.shape == (2, 5, 7, 3)
    np.testing.assert_allclose(got, want, atol=1e-6)
    grey = images[..., :1] if channels == 1 else images
    ref = (np.repeat(grey, 3 // channels, -1) / 255.0 - MEAN[normalization]) / STD[normalization]
    np.testing.assert_allclose(got, ref, atol=1e-5)
  with pytest.raises(ValueError, match="uint8"):
    geometry.normalize_numpy(np.zeros((2, 2, 1), np.float32))


def test_crop_returns_uint8_that_normalises_to_transform():
  rng = np.random.default_rng(5)
  image = rng.integers(0, 256, (40, 31, 1)).astype(np.uint8)
  boxes = np.array([[3, 4, 20, 30]], np.float32)
  seed = tf.constant([1, 2], tf.int64)
  small, b1, k1 = geometry.crop(image, boxes, resize=40, image_size=36, train=True, seed=seed)
  full, b2, k2 = geometry.transform(image, boxes, resize=40, image_size=36, train=True,
                                    seed=seed)
  assert small.dtype == tf.uint8 and small.shape == (36, 36, 1)
  np.testing.assert_allclose(geometry.normalize_numpy(small.numpy()), full.numpy(), atol=1e-6)
  np.testing.assert_array_equal(b1.numpy(), b2.numpy())
  np.testing.assert_array_equal(k1.numpy(), k2.numpy())


# ----------------------------------------------------------------------------- NumPy == TF
SHAPES = [(300, 200), (200, 300), (128, 100), (90, 128), (90, 160), (64, 64), (40, 30),
          (17, 300), (128, 128)]        # portrait, landscape, stored size, smaller than resize


@pytest.mark.parametrize("shape", SHAPES)
def test_numpy_crop_geometry_equals_the_tf_crop(shape):
  """`crop_geometry` (NumPy, the figures) maps boxes and pixels where `crop(train=False)`
  (TF, the pipeline) puts them: the same `placement` / `centre_offset` arithmetic."""
  h, w = shape
  resize, size = 128, 112
  geo = geometry.crop_geometry(h, w, resize, size)
  new_h, new_w, top, left = (int(t) for t in geometry.placement(tf.constant(h), tf.constant(w),
                                                                 resize))
  assert (geo.scale_x, geo.scale_y) == (new_w / w, new_h / h)
  assert (geo.top, geo.left) == (top, left)
  assert geo.offset_x == geo.offset_y == int(geometry.crop_offset(resize, size, False)[0])
  # boxes: random boxes on the original, the TF crop's arithmetic (clipped to the crop) vs
  # the NumPy mapping of their corners
  rng = np.random.default_rng(h * 1000 + w)
  xy = rng.uniform(-0.1, 1.1, (64, 2, 2)) * [w, h]
  boxes = np.concatenate([xy.min(1), xy.max(1)], -1).astype(np.float32)      # [R, 4]
  _, moved, keep = geometry.crop(tf.zeros((h, w, 1), tf.uint8), boxes, resize=resize,
                                 image_size=size, train=False, min_box_visibility=0.0)
  assert keep.numpy().all()
  u1, v1 = geo.to_crop(boxes[:, 0], boxes[:, 1])
  u2, v2 = geo.to_crop(boxes[:, 2], boxes[:, 3])
  np.testing.assert_allclose(moved.numpy(), np.clip(np.stack([u1, v1, u2, v2], -1), 0, size),
                             atol=2e-4)
  x, y = geo.to_original(u1, v1)                                             # round trip
  np.testing.assert_allclose(np.stack([x, y], -1), boxes[:, :2], atol=1e-9, rtol=1e-9)
  # pixels: a crop pixel shows the image iff its centre maps inside the original...
  pixels = geometry.crop(tf.fill([h, w, 1], tf.constant(255, tf.uint8)), tf.zeros((0, 4)),
                         resize=resize, image_size=size, train=False)[0].numpy()[..., 0]
  x, y = geo.to_original(np.arange(size) + 0.5, np.arange(size) + 0.5)
  inside = ((y >= 0) & (y < h))[:, None] & ((x >= 0) & (x < w))[None, :]
  np.testing.assert_array_equal(pixels == 255, inside)
  assert np.isin(pixels, [0, 255]).all()
  # ... and the value of the original at that place: a linear ramp, resampled or not
  ramp = lambda x, y: 40 + 80 * x / w + 120 * y / h                         # noqa: E731
  jj, ii = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
  image = np.round(ramp(jj, ii)).astype(np.uint8)[..., None]
  cropped = geometry.crop(tf.constant(image), tf.zeros((0, 4)), resize=resize, image_size=size,
                          train=False)[0].numpy()[..., 0].astype(np.float64)
  margin = 2 * max(w / new_w, h / new_h, 1.0)      # the resampling filter's reach at the edge
  xx, yy = np.meshgrid(x, y)
  interior = ((xx > margin) & (xx < w - margin) & (yy > margin) & (yy < h - margin))
  if (new_h, new_w) == (h, w):                     # no resampling: the very pixel
    np.testing.assert_array_equal(
        cropped[inside], image[np.floor(yy).astype(int)[inside], np.floor(xx).astype(int)[inside], 0])
  if interior.any():
    np.testing.assert_allclose(cropped[interior], ramp(xx, yy)[interior], atol=1.5)
