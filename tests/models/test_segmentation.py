"""Segmentation models: the paper-size decoders' output shapes and parameter counts (abstract,
`jax.eval_shape`), the ResNet feature pyramid equals the tower, and the augmentation moves
image and mask together (a 90-degree turn is np.rot90 on an asymmetric mask)."""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from asg_jax import config as config_lib
from asg_jax.models import resnet
from asg_jax.models import segmentation as seg


def _conv(cin, cout, bias=False):
  return 9 * cin * cout + (cout if bias else 0)


def _bn(c):
  return 2 * c


# Hand-derived parameter counts of the paper-size decoders (data.md "Evaluation protocols").
# SETR: Dense 768 -> 768, then [conv3x3 (no bias) + BN] 768->512->256->128->64, conv3x3 64 -> 1.
SETR_PARAMS = (768 * 768 + 768) + sum(_conv(a, b) + _bn(b) for a, b in
                                      [(768, 512), (512, 256), (256, 128), (128, 64)]) + _conv(64, 1, True)
# U-Net over ResNet-50 (smp Unet): input = upsampled + skip channels, 2 x [conv3x3 + BN] per block.
_UNET_IN = [(2048 + 1024, 256), (256 + 512, 128), (128 + 256, 64), (64 + 64, 32), (32, 16)]
UNET_PARAMS = sum(_conv(i, o) + _bn(o) + _conv(o, o) + _bn(o) for i, o in _UNET_IN) + _conv(16, 1, True)


@pytest.mark.parametrize("tower,decoder_params,encoder_params",
                         [("vit", SETR_PARAMS, 85_798_656), ("resnet50", UNET_PARAMS, 23_508_032)])
def test_paper_decoders_shapes_and_parameter_counts(tower, decoder_params, encoder_params):
  assert (SETR_PARAMS, UNET_PARAMS) == (5_680_321, 9_013_073)
  image = config_lib.base_config().model.image.to_dict()
  image["name"] = tower
  model = seg.Segmenter(ml_collections.FrozenConfigDict(image))   # default = paper widths
  batch = {"image": jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32),
           "mask": jax.ShapeDtypeStruct((2, 224, 224, 1), jnp.float32)}
  key = jax.random.PRNGKey(0)
  v = jax.eval_shape(lambda b: model.init({"params": key, "dropout": key}, b, train=False), batch)
  assert set(v["params"]) == {"image_encoder", "decoder"}
  assert seg.num_params(v["params"]["decoder"]) == decoder_params
  assert seg.num_params(v["params"]["image_encoder"]) == encoder_params   # ViT-B/16, ResNet-50
  out = jax.eval_shape(lambda v, b: model.apply(v, b, train=True, rngs={"dropout": key},
                                                mutable=["batch_stats"])[0], v, batch)
  assert out["logits"].shape == (2, 224, 224, 1) and out["mask"].shape == (2, 224, 224, 1)


def test_resnet_stages_are_the_tower_with_every_scale():
  tower = resnet.ResNet50((1, 1, 1, 1), 4)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 40, 40, 3)).astype(np.float32)
  shapes = jax.eval_shape(lambda x: tower.init(jax.random.PRNGKey(0), x, train=False), x)
  v = {"params": jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32),
                              shapes["params"]),
       "batch_stats": jax.tree.map(lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32),
                                   shapes["batch_stats"])}
  stages = seg.ResNetStages((1, 1, 1, 1), 4)
  mine = jax.eval_shape(lambda x: stages.init(jax.random.PRNGKey(0), x, train=False), x)
  assert jax.tree.structure(mine) == jax.tree.structure(shapes)   # the same parameter tree
  assert jax.tree.map(lambda a: a.shape, mine) == jax.tree.map(lambda a: a.shape, shapes)
  feats, out = jax.jit(lambda v, x: (stages.apply(v, x, train=False),
                                     tower.apply(v, x, train=False)))(v, x)
  assert [f.shape[1] for f in feats] == [20, 10, 5, 3, 2]           # strides 2 .. 32
  np.testing.assert_allclose(feats[3], out["layer3"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(feats[4].mean((1, 2)), out["pooled"], rtol=1e-5, atol=1e-5)
  assert float(np.abs(feats[3]).mean()) > 1e-3


def test_decoder_init_follows_the_smp_recipe():
  shapes = {"params": {"block_0": {"conv": {"kernel": jax.ShapeDtypeStruct((3, 3, 40, 50), jnp.float32)},
                                   "bn": {"scale": jax.ShapeDtypeStruct((50,), jnp.float32),
                                          "bias": jax.ShapeDtypeStruct((50,), jnp.float32)}},
                       "head": {"kernel": jax.ShapeDtypeStruct((3, 3, 50, 1), jnp.float32),
                                "bias": jax.ShapeDtypeStruct((1,), jnp.float32)}},
            "batch_stats": {"block_0": {"bn": {"mean": jax.ShapeDtypeStruct((50,), jnp.float32),
                                               "var": jax.ShapeDtypeStruct((50,), jnp.float32)}}}}
  v = seg.init_decoder(shapes, 0)
  k = v["params"]["block_0"]["conv"]["kernel"]
  bound = np.sqrt(6 / (9 * 40))                                   # He-uniform, fan in
  assert k.shape == (3, 3, 40, 50) and np.abs(k).max() <= bound and np.abs(k).max() > 0.95 * bound
  assert np.std(k) == pytest.approx(bound / np.sqrt(3), rel=0.05)
  head = v["params"]["head"]["kernel"]
  assert np.abs(head).max() <= np.sqrt(6 / (9 * 50 + 9))           # Glorot-uniform
  assert np.all(v["params"]["block_0"]["bn"]["scale"] == 1) and np.all(v["params"]["head"]["bias"] == 0)
  assert np.all(v["batch_stats"]["block_0"]["bn"]["var"] == 1)
  again = seg.init_decoder(shapes, 0)
  np.testing.assert_array_equal(again["params"]["block_0"]["conv"]["kernel"], k)
  assert not np.array_equal(seg.init_decoder(shapes, 1)["params"]["block_0"]["conv"]["kernel"], k)
  # the focal-loss prior: the head's bias only, sigmoid(bias) = p; the rest as without it
  primed = seg.init_decoder(shapes, 0, head_prior=0.01)
  assert primed["params"]["head"]["bias"][0] == pytest.approx(np.log(0.01 / 0.99), rel=1e-6)
  assert 1 / (1 + np.exp(-primed["params"]["head"]["bias"][0])) == pytest.approx(0.01, rel=1e-5)
  np.testing.assert_array_equal(primed["params"]["head"]["kernel"], head)
  np.testing.assert_array_equal(primed["params"]["block_0"]["bn"]["bias"], 0)
  with pytest.raises(ValueError, match="head_prior"):
    seg.init_decoder(shapes, 0, head_prior=1.0)


def _asymmetric(size=8):
  """An L-shaped mask (no symmetry) and an image that is bright exactly there."""
  m = np.zeros((size, size, 1), np.float32)
  m[1:6, 2, 0] = 1
  m[5, 2:6, 0] = 1
  img = np.concatenate([np.where(m > 0, 1.0, -1.0)] * 3, -1).astype(np.float32)
  img[..., 1] += 0.25                                               # channels differ
  return img, m


def test_affine_pair_turns_image_and_mask_together():
  img, m = _asymmetric()
  fn = jax.jit(seg.affine_pair, static_argnames="cval")
  turned_img, turned_mask = fn(jnp.asarray(img), jnp.asarray(m), 90.0, 1.0, cval=(-1.0,) * 3)
  np.testing.assert_allclose(turned_img, np.rot90(img), atol=1e-5)
  np.testing.assert_array_equal(turned_mask, np.rot90(m))
  assert not np.array_equal(np.rot90(m), m)
  same_img, same_mask = fn(jnp.asarray(img), jnp.asarray(m), 0.0, 1.0, cval=(-1.0,) * 3)
  np.testing.assert_allclose(same_img, img, atol=1e-6)
  np.testing.assert_array_equal(same_mask, m)


def test_random_augmentation_keeps_image_and_mask_aligned():
  img, m = _asymmetric(24)
  m = np.maximum(m, np.kron(_asymmetric(6)[1][..., 0], np.ones((4, 4)))[..., None])   # a bigger L
  img = np.concatenate([np.where(m > 0, 1.0, -1.0)] * 3, -1).astype(np.float32)
  images, masks = jnp.asarray(np.stack([img] * 6)), jnp.asarray(np.stack([m] * 6))
  out_img, out_mask = jax.jit(lambda k, a, b: seg.shift_scale_rotate(
      k, a, b, p=1.0, rotate_limit=10.0, cval=(-1.0,) * 3))(jax.random.PRNGKey(3), images, masks)
  out_img, out_mask = np.asarray(out_img), np.asarray(out_mask)
  assert set(np.unique(out_mask)) <= {0.0, 1.0}
  moved = 0
  for i in range(6):
    moved += int(not np.array_equal(out_mask[i], m))
    bright, dark = out_img[i, ..., 0] > 0.5, out_img[i, ..., 0] < -0.5
    mk = out_mask[i, ..., 0] > 0
    # every clearly bright pixel is in the mask and every clearly dark one outside it
    assert np.mean(mk[bright]) > 0.97 and np.mean(~mk[dark]) > 0.97
  assert moved >= 5                    # the examples were really transformed, differently
  assert len({out_mask[i].tobytes() for i in range(6)}) == 6
