"""Bottleneck ResNet (ResNet-50 by default) image encoder, torchvision / Hugging Face geometry.

    stem:   7x7 conv stride 2 (pad 3) -> BN -> ReLU -> 3x3 max-pool stride 2 (pad 1)
    stages: bottleneck blocks 1x1 -> 3x3 (carries the stride) -> 1x1 (x4 channels), with a
            1x1 conv + BN projection shortcut where the shape changes; the first stage has
            stride 1, the others stride 2.

A 224 input gives layer3 14x14, a 299 input 19x19 (150 -> 75 -> 75 -> 38 -> 19 -> 10).
BatchNorm as PyTorch defaults (momentum 0.1 -> flax 0.9, eps 1e-5), statistics in the
`batch_stats` collection. Parameter names follow Hugging Face `ResNetModel`
(microsoft/resnet-50): `embedder/embedder/{convolution,normalization}`,
`encoder/stages_{s}/layers_{j}/{shortcut,layer_0,layer_1,layer_2}/{convolution,normalization}`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch kaiming_normal_(mode="fan_out", nonlinearity="relu"), as HF ResNet initialises convs
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class ConvLayer(nn.Module):
  """HF `ResNetConvLayer` / `ResNetShortCut`: conv (no bias, symmetric k//2 padding) -> BN
  [-> ReLU]."""
  features: int
  kernel_size: int = 3
  stride: int = 1
  activation: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    k, pad = self.kernel_size, self.kernel_size // 2
    x = nn.Conv(self.features, (k, k), strides=(self.stride, self.stride),
                padding=((pad, pad), (pad, pad)), use_bias=False, dtype=self.dtype,
                kernel_init=_CONV_INIT, name="convolution")(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     use_fast_variance=False, dtype=self.dtype, name="normalization")(x)
    return nn.relu(x) if self.activation else x


class BottleneckLayer(nn.Module):
  """HF `ResNetBottleNeckLayer` (stride on the 3x3 conv, reduction 4)."""
  features: int          # output channels (4 x the bottleneck width)
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    residual = x
    if x.shape[-1] != self.features or self.stride != 1:
      residual = ConvLayer(self.features, 1, self.stride, activation=False, dtype=self.dtype,
                           name="shortcut")(x, train=train)
    width = self.features // 4
    h = ConvLayer(width, 1, 1, dtype=self.dtype, name="layer_0")(x, train=train)
    h = ConvLayer(width, 3, self.stride, dtype=self.dtype, name="layer_1")(h, train=train)
    h = ConvLayer(self.features, 1, 1, activation=False, dtype=self.dtype,
                  name="layer_2")(h, train=train)
    return nn.relu(h + residual)


class Stage(nn.Module):
  """HF `ResNetStage`: `depth` bottleneck layers `layers_{j}`, the first one strided."""
  features: int
  depth: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for j in range(self.depth):
      x = BottleneckLayer(self.features, self.stride if j == 0 else 1, self.dtype,
                          name=f"layers_{j}")(x, train=train)
    return x


class Embedder(nn.Module):
  """HF `ResNetEmbeddings`: 7x7/2 conv + BN + ReLU (`embedder`), then 3x3/2 max-pool."""
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    x = ConvLayer(self.width, 7, 2, dtype=self.dtype, name="embedder")(x, train=train)
    # torch MaxPool2d(3, 2, padding=1) pads with -inf, as flax max_pool does
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


class Encoder(nn.Module):
  """HF `ResNetEncoder`: the stages `stages_{s}`; returns every stage's output."""
  stage_sizes: Sequence[int]
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> list[jax.Array]:
    outs = []
    for s, depth in enumerate(self.stage_sizes):
      x = Stage(4 * self.width * 2 ** s, depth, 1 if s == 0 else 2, self.dtype,
                name=f"stages_{s}")(x, train=train)
      outs.append(x)
    return outs


class ResNet50(nn.Module):
  """Bottleneck ResNet image encoder (ResNet-50 with the defaults).

  Attributes:
    stage_sizes: bottleneck layers per stage (ResNet-50: (3, 4, 6, 3)); 4 stages expected.
    width: stem width (64); stage s outputs `4 * width * 2**s` channels.
    dtype: compute dtype (parameters and BatchNorm statistics stay float32).
  """
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  width: int = 64
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> dict[str, jax.Array]:
    """Args:
      x: `[B, H, W, 3]` normalised images.
      train: BatchNorm uses (and updates, with `mutable=["batch_stats"]`) batch statistics.
    Returns:
      `pooled [B, 32*width]` (global average of layer4) and `layer3 [B, h, w, 16*width]`
      (stride 16: h = ceil(H/16) for the usual sizes, 19x19 at 299).
    """
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"ResNet50 images: expected [B, H, W, 3], got shape {x.shape}")
    if len(self.stage_sizes) != 4:
      raise ValueError(f"ResNet50 stage_sizes: expected 4 stages, got {self.stage_sizes}")
    h = Embedder(self.width, self.dtype, name="embedder")(x.astype(self.dtype), train=train)
    outs = Encoder(tuple(self.stage_sizes), self.width, self.dtype, name="encoder")(
        h, train=train)
    return {"pooled": jnp.mean(outs[3], axis=(1, 2)), "layer3": outs[2]}


# ------------------------------------------------------------------ image-tower interface
# (asg_jax/registry.py: every image tower module exposes build / features / patch_grid /
# load_pretrained)

def build(cfg, dtype, name: str = "image_encoder") -> ResNet50:
  """The Linen module for `config.model.image`."""
  return ResNet50(stage_sizes=tuple(cfg.resnet_stage_sizes), width=cfg.resnet_width,
                  dtype=dtype, name=name)


def features(out: dict) -> tuple[jax.Array, jax.Array]:
  """(global feature `[B, D]` = pooled layer4, local tokens `[B, M, D']` = layer3 grid)."""
  layer3 = out["layer3"]
  return out["pooled"], layer3.reshape(layer3.shape[0], -1, layer3.shape[-1])


def patch_grid(cfg, image_size: int) -> tuple[int, int]:
  """layer3 grid (stride 16, 'SAME'-style padding) of the input, resized to
  `cfg.input_resize` when set."""
  side = -(-(cfg.input_resize or image_size) // 16)
  return side, side


def load_pretrained(path: str, params, batch_stats):
  """Hugging Face ResNet-50 weights and BatchNorm statistics into (params, batch_stats)."""
  from asg_jax.models import checkpoint_convert  # pylint: disable=import-outside-toplevel
  return checkpoint_convert.load_resnet(path, params, batch_stats)
