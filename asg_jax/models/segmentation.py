"""Segmentation transfer models (data.md "Evaluation protocols"): a pre-trained image tower
plus a decoder, and the protocol's train-time augmentation.

* ViT -> `SetrDecoder` (SETR "naive/PUP"-style, as MGCA): patch tokens `[B, gh*gw, D]` ->
  Dense(768) -> `[B, gh, gw, 768]` map -> 4 x [conv3x3 (no bias), BatchNorm, ReLU, x2
  bilinear] with 512 / 256 / 128 / 64 channels -> conv3x3 -> 1 channel (ViT-B/16 at 224:
  14x14 -> 224x224).
* ResNet-50 -> `UNetDecoder` (segmentation_models_pytorch's `Unet("resnet50")`, which
  GLoRIA / MGCA use): the stem (stride 2) and the four stages (strides 4..32) of the tower;
  from the deepest, 5 blocks of [x2 nearest up (to the skip's size), concat the skip,
  2 x (conv3x3 no bias, BN, ReLU)] with 256 / 128 / 64 / 32 / 16 channels, the last block
  without skip, then conv3x3 -> 1 channel at the input size.

`Segmenter` is the whole model. Its parameters are `{"image_encoder": <the tower's tree,
exactly as in the pre-trained VisionLanguageModel>, "decoder": ...}`, so a pre-trained
workdir's `params["image_encoder"]` drops in unchanged. It is called like the
pre-training model (`model.apply(variables, batch, train=..., rngs={"dropout": r})`), so
the project's one train step (`asg_jax.train.make_train_step`) trains it: in training
it first applies `shift_scale_rotate` to image and mask together (the same transform,
the mask resampled nearest), and returns the target it was scored against.

Decoder widths are configurable (`channels`; tests use tiny ones); `()` = the paper's.
BatchNorm as PyTorch defaults (momentum 0.1 -> flax 0.9, eps 1e-5).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from asg_jax.models import resnet

SETR_CHANNELS = (512, 256, 128, 64)
SETR_HIDDEN = 768
UNET_CHANNELS = (256, 128, 64, 32, 16)
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ----------------------------------------------------------------------- augmentation

def affine_pair(image: jax.Array, mask: jax.Array, angle_deg: jax.Array, scale: jax.Array,
                cval: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[jax.Array, jax.Array]:
  """Rotate (counter-clockwise as displayed, degrees) and scale about the image centre, ONE
  example: image `[H, W, C]` bilinear (outside -> `cval[c]`), mask `[H, W, 1]` nearest
  (outside -> 0). Output pixel q samples the input at `c + R(-angle) (q - c) / scale`,
  c = ((H-1)/2, (W-1)/2); angle 90, scale 1 is `np.rot90` exactly."""
  h, w = image.shape[:2]
  yy, xx = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                        indexing="ij")
  cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
  theta = jnp.deg2rad(angle_deg)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  dx, dy = (xx - cx) / scale, (yy - cy) / scale
  src = jnp.stack([cy + dx * sin + dy * cos, cx + dx * cos - dy * sin])     # [2, H, W]

  def sample(channel, order, fill):
    return jax.scipy.ndimage.map_coordinates(channel, list(src), order=order, mode="constant",
                                             cval=fill)
  img = jnp.stack([sample(image[..., c], 1, cval[c]) for c in range(image.shape[-1])], -1)
  msk = sample(mask[..., 0].astype(jnp.float32), 0, 0.0)[..., None].astype(mask.dtype)
  return img.astype(image.dtype), msk


def shift_scale_rotate(key: jax.Array, images: jax.Array, masks: jax.Array, *,
                       scale_limit: float = 0.1, rotate_limit: float = 10.0, p: float = 0.5,
                       cval: Sequence[float] = (0.0, 0.0, 0.0)) -> tuple[jax.Array, jax.Array]:
  """MGCA's segmentation augmentation (albumentations `ShiftScaleRotate(shift_limit=0,
  scale_limit=0.1, rotate_limit=10, p=0.5, border_mode=constant)`) on a batch: each
  example, with probability p, rotated by U(-10, 10) degrees and scaled by U(0.9, 1.1),
  image and mask by the same transform (`affine_pair`). images `[B, H, W, C]`, masks
  `[B, H, W, 1]`."""
  keys = jax.random.split(key, images.shape[0])

  def one(k, image, mask):
    k_apply, k_angle, k_scale = jax.random.split(k, 3)
    on = jax.random.uniform(k_apply) < p
    angle = jnp.where(on, jax.random.uniform(k_angle, (), minval=-rotate_limit,
                                             maxval=rotate_limit), 0.0)
    scale = jnp.where(on, jax.random.uniform(k_scale, (), minval=1.0 - scale_limit,
                                             maxval=1.0 + scale_limit), 1.0)
    return affine_pair(image, mask, angle, scale, cval)
  return jax.vmap(one)(keys, images, masks)


# ------------------------------------------------------------------------- decoders

class ConvBNReLU(nn.Module):
  """conv3x3 (no bias, 'SAME') -> BatchNorm -> ReLU."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                dtype=self.dtype, name="conv")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name="bn")(x)
    return nn.relu(x)


def _resize(x: jax.Array, hw: tuple[int, int], method: str) -> jax.Array:
  if tuple(x.shape[1:3]) == tuple(hw):
    return x
  return jax.image.resize(x, (x.shape[0], hw[0], hw[1], x.shape[-1]), method=method)


class SetrDecoder(nn.Module):
  """Patch tokens `[B, gh*gw, D]` -> logits `[B, gh*2^k, gw*2^k, 1]`, k = len(channels)."""
  grid: tuple[int, int]
  channels: Sequence[int] = SETR_CHANNELS
  hidden: int = SETR_HIDDEN
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, *, train: bool) -> jax.Array:
    b, m, _ = tokens.shape
    gh, gw = self.grid
    if m != gh * gw:
      raise ValueError(f"SetrDecoder: {m} tokens do not fill the {gh}x{gw} patch grid")
    x = nn.Dense(self.hidden, dtype=self.dtype, name="proj")(tokens).reshape(b, gh, gw, -1)
    for i, c in enumerate(self.channels):
      x = ConvBNReLU(c, self.dtype, name=f"block_{i}")(x, train=train)
      x = _resize(x, (2 * x.shape[1], 2 * x.shape[2]), "bilinear")
    return nn.Conv(1, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="head")(x)


class UNetDecoder(nn.Module):
  """Encoder features (shallow to deep, strides 2, 4, 8, 16, 32) -> logits `[B, H/2*2, ...]`
  at twice the shallowest feature's size (the input size for a ResNet)."""
  channels: Sequence[int] = UNET_CHANNELS
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], *, train: bool) -> jax.Array:
    if len(self.channels) != len(features):
      raise ValueError(f"UNetDecoder: {len(self.channels)} channel widths for "
                       f"{len(features)} encoder features")
    x = features[-1]
    skips = list(features[-2::-1]) + [None]
    for i, (c, skip) in enumerate(zip(self.channels, skips)):
      if skip is None:
        x = _resize(x, (2 * x.shape[1], 2 * x.shape[2]), "nearest")
      else:
        x = jnp.concatenate([_resize(x, skip.shape[1:3], "nearest"), skip.astype(x.dtype)], -1)
      x = ConvBNReLU(c, self.dtype, name=f"block_{i}_0")(x, train=train)
      x = ConvBNReLU(c, self.dtype, name=f"block_{i}_1")(x, train=train)
    return nn.Conv(1, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="head")(x)


# ------------------------------------------------------------------- ResNet features

class _Stem(nn.Module):
  """`resnet.Embedder` (same parameters), returning the stride-2 map too."""
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> tuple[jax.Array, jax.Array]:
    s2 = resnet.ConvLayer(self.width, 7, 2, dtype=self.dtype, name="embedder")(x, train=train)
    return s2, nn.max_pool(s2, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class ResNetStages(nn.Module):
  """`resnet.ResNet50` with the same parameter tree, returning every scale:
  [stem (stride 2), stage 1 (4), stage 2 (8), stage 3 (16), stage 4 (32)]."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> list[jax.Array]:
    s2, s4 = _Stem(self.width, self.dtype, name="embedder")(x.astype(self.dtype), train=train)
    outs = resnet.Encoder(tuple(self.stage_sizes), self.width, self.dtype, name="encoder")(
        s4, train=train)
    return [s2] + list(outs)


# ----------------------------------------------------------------------- the model

def decoder_kind(image_cfg) -> str:
  """"setr" for a ViT tower, "unet" for a ResNet one."""
  name = image_cfg.name
  if name == "vit":
    return "setr"
  if name.startswith("resnet"):
    return "unet"
  raise ValueError(f"segmentation: no decoder for the image tower {name!r} (vit, resnet50)")


class Segmenter(nn.Module):
  """Image tower + decoder (module docstring).

  Attributes:
    image: `config.model.image` of the pre-trained model (FrozenConfigDict).
    channels: decoder widths (`()` = SETR_CHANNELS / UNET_CHANNELS; one value = that width
      for every block of the tower's decoder).
    setr_hidden: width of the SETR token projection (768).
    freeze_encoder: the encoder runs in inference mode (BatchNorm running statistics, no
      dropout) and its features are `stop_gradient`-ed (the papers' protocol).
    augment: `shift_scale_rotate` on image + mask when `train` (needs a "dropout" rng).
    border: the normalised value of a black pixel per channel (fill of rotated-in areas).
    dtype: "float32" | "bfloat16" compute dtype.
  """
  image: Any
  channels: Sequence[int] = ()
  setr_hidden: int = SETR_HIDDEN
  freeze_encoder: bool = True
  augment: bool = True
  border: Sequence[float] = (0.0, 0.0, 0.0)
  dtype: str = "float32"

  def widths(self, default: Sequence[int]) -> tuple[int, ...]:
    if not self.channels:
      return tuple(default)
    if len(self.channels) == 1:
      return tuple(self.channels) * len(default)
    return tuple(self.channels)

  @nn.compact
  def __call__(self, batch, *, train: bool, tag_queries=None) -> dict[str, jax.Array]:
    """Args:
      batch: `image [B, S, S, 3]` normalised, `mask [B, S, S, 1]` in {0, 1}.
    Returns:
      `logits [B, S, S, 1]` float32 and `mask [B, S, S, 1]` float32: the target the
      logits are scored against (augmented with the image in training).
    """
    del tag_queries
    from asg_jax import registry  # pylint: disable=import-outside-toplevel
    images = batch["image"]
    masks = batch["mask"].astype(jnp.float32)
    if train and self.augment:
      images, masks = shift_scale_rotate(self.make_rng("dropout"), images, masks,
                                         cval=tuple(self.border))
    dtype = _DTYPES[self.dtype]
    enc_train = train and not self.freeze_encoder
    freeze = (lambda t: jax.lax.stop_gradient(t)) if self.freeze_encoder else (lambda t: t)
    kind = decoder_kind(self.image)
    size = images.shape[1:3]
    if kind == "setr":
      tower = registry.image_tower(self.image.name).build(self.image, dtype, name="image_encoder")
      tokens = freeze(tower(images, train=enc_train)["patch_tokens"])
      grid = (size[0] // self.image.patch_size, size[1] // self.image.patch_size)
      logits = SetrDecoder(grid, self.widths(SETR_CHANNELS), self.setr_hidden, dtype,
                           name="decoder")(tokens, train=train)
    else:
      feats = ResNetStages(tuple(self.image.resnet_stage_sizes), self.image.resnet_width, dtype,
                           name="image_encoder")(images, train=enc_train)
      feats = [freeze(f) for f in feats]
      logits = UNetDecoder(self.widths(UNET_CHANNELS), dtype,
                           name="decoder")(feats, train=train)
    logits = _resize(logits.astype(jnp.float32), size, "bilinear")
    return {"logits": logits, "mask": masks}


def head_prior_bias(head_prior: float) -> float:
  """The head bias of an initial foreground probability: log(p / (1 - p)); 0 -> 0 (smp).
  Anything outside [0, 1) is a ValueError naming `head_prior`."""
  if not 0.0 <= head_prior < 1.0:
    raise ValueError(f"segmentation head_prior = {head_prior}; expected 0 (off) or in (0, 1)")
  return math.log(head_prior / (1.0 - head_prior)) if head_prior > 0 else 0.0


def init_decoder(shapes: dict, seed: int, head_prior: float = 0.0) -> dict:
  """Decoder variables `{"params", "batch_stats"}` of the shapes `shapes` (e.g. the
  "decoder" parts of `jax.eval_shape(model.init, ...)`), drawn with NumPy as
  segmentation_models_pytorch's `initialize_decoder` / `initialize_head`: conv and dense
  kernels He-uniform (fan in, ReLU gain: U(+-sqrt(6 / fan_in))), the 1-channel head
  Glorot-uniform, biases 0, BatchNorm scale 1 / bias 0, running mean 0 / var 1. (No jitted
  RNG: compiling one threefry initializer per leaf costs seconds each on a CPU.)

  `head_prior` in (0, 1): the head's bias is `log(p / (1 - p))` instead of 0, so every pixel
  starts at foreground probability ≈ p (the focal-loss paper's prior initialisation, Lin
  et al. 2017, section 4.1): the decoder starts from the empty prediction, which the
  empty-mask Dice rule scores 1 on every empty image, instead of marking half the pixels.
  0 = smp's bias 0 (the papers' recipe)."""
  bias = head_prior_bias(head_prior)
  from flax import traverse_util  # pylint: disable=import-outside-toplevel
  rng = np.random.RandomState(seed)
  flat = traverse_util.flatten_dict(dict(shapes["params"]))
  params = {}
  for path in sorted(flat):
    shape, name = tuple(flat[path].shape), path[-1]
    if name == "kernel":
      receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
      fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
      bound = (math.sqrt(6.0 / (fan_in + fan_out)) if path[0] == "head"
               else math.sqrt(6.0 / fan_in))
      value = rng.uniform(-bound, bound, shape)
    elif name == "scale":
      value = np.ones(shape)
    elif path[0] == "head":
      value = np.full(shape, bias)
    else:                                   # bias
      value = np.zeros(shape)
    params[path] = np.asarray(value, np.float32)
  stats = {path: (np.ones if path[-1] == "var" else np.zeros)(tuple(leaf.shape), np.float32)
           for path, leaf in traverse_util.flatten_dict(dict(shapes.get("batch_stats", {}))).items()}
  return {"params": traverse_util.unflatten_dict(params),
          "batch_stats": traverse_util.unflatten_dict(stats) if stats else {}}


def num_params(tree) -> int:
  """Number of scalars in a (possibly abstract) parameter tree."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))
