"""Model FLOPs of one pre-training step, counted from the architecture (MFU's numerator).

`train_flops_per_pair(config, batch_size)` counts the matrix multiplications of the forward
pass of ONE image–report pair (2·m·n·k each) and multiplies by 3 (the backward pass costs
twice the forward: gradients of activations and of weights), the usual MFU convention
(PaLM appendix B). Elementwise work (softmax, norms, GELU, AdamW) is not counted; at the
project's sizes it is a few percent, and tests/test_flops.py checks the count against XLA's
`cost_analysis()` of the real compiled step within 10%. Counted per pair:

- ViT (`T = (S/p)² + 1` tokens of width D, L layers, MLP F): patch embedding
  `2·(S/p)²·3p²·D`; per layer QKV `6·T·D²`, output `2·T·D²`, MLP `4·T·D·F`, scores and
  context `4·T²·D`. ResNet-50: its convolutions at the config's input size.
- BERT (first `use_layers` layers, `L_t = max_length` tokens): the same per-layer terms.
- projection heads (Linear D→H, H→E): global image and text; local over the M patches and
  the `L_t - 1` word slots when the objective reads them (`objectives.needs_local_outputs`).
- IRL tag decoder (T_q = 40 queries, width d, memory M patches): per layer self-attention,
  cross-attention (keys/values over the M patches), FFN; the memory projection when Dv ≠ d.
- losses: IRA (and ERL) `[B, B]` similarities `2·B·E` each; ARSA `2·R·(R + N)·E`.
- RECLF / GLoRIA local matching: word–patch attention of every (image, report) pair of the
  global batch, `4·B·N·M·E` per pair (2 einsums), plus SRM / IRM where on.
"""
from __future__ import annotations

import ml_collections

from asg_jax import objectives

NUM_TAGS = 40


def _transformer_layer(tokens: int, width: int, mlp: int) -> float:
  return 8 * tokens * width ** 2 + 4 * tokens * width * mlp + 4 * tokens ** 2 * width


def image_tower_forward(config: ml_collections.ConfigDict) -> float:
  """Forward FLOPs of the image tower for one image."""
  ic, s = config.model.image, config.model.image.input_resize or config.data.image_size
  if ic.name == "vit":
    patches = (s // ic.patch_size) ** 2
    embed = 2 * patches * 3 * ic.patch_size ** 2 * ic.hidden_size
    return embed + ic.num_layers * _transformer_layer(patches + 1, ic.hidden_size, ic.mlp_dim)
  if ic.name == "resnet50":
    return _resnet_forward(s, tuple(ic.resnet_stage_sizes), ic.resnet_width)
  raise ValueError(f"no FLOP count for image tower {ic.name!r}")


def _resnet_forward(size: int, stages: tuple[int, ...], width: int) -> float:
  def conv(hw, k, cin, cout):
    return 2 * hw * hw * k * k * cin * cout
  hw = size // 2
  total = conv(hw, 7, 3, width)
  hw //= 2                                          # max-pool
  cin = width
  for s, depth in enumerate(stages):
    mid, cout = width * 2 ** s, 4 * width * 2 ** s
    for j in range(depth):
      stride = 2 if (s > 0 and j == 0) else 1
      out_hw = hw // stride
      total += conv(hw, 1, cin, mid)
      total += conv(out_hw, 3, mid, mid) + conv(out_hw, 1, mid, cout)
      if j == 0:
        total += conv(out_hw, 1, cin, cout)         # projection shortcut
      hw, cin = out_hw, cout
  return total


def image_feature_dims(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(global feature width Dv, number of local tokens M) of the image tower."""
  ic, s = config.model.image, config.model.image.input_resize or config.data.image_size
  if ic.name == "vit":
    return ic.hidden_size, (s // ic.patch_size) ** 2
  # ResNet-50: pooled layer4 (8·width·... = 32·width) globally, layer3 tokens locally
  return 32 * ic.resnet_width, (s // 16) ** 2


def train_flops_per_pair(config: ml_collections.ConfigDict, batch_size: int) -> float:
  """3 × the forward matmul FLOPs of one pair in a global batch of `batch_size`."""
  mc, dc = config.model, config.data
  tc = mc.text
  dv, m = image_feature_dims(config)
  local_dv = dv if mc.image.name == "vit" else 16 * mc.image.resnet_width
  lt = dc.max_length
  n = lt - 1
  h, e = mc.head_hidden, mc.embed_dim
  forward = image_tower_forward(config)
  forward += tc.use_layers * _transformer_layer(lt, tc.hidden_size, tc.intermediate_size)
  head = lambda d_in: 2 * d_in * h + 2 * h * e   # noqa: E731
  forward += head(dv) + head(tc.hidden_size)
  if objectives.needs_local_outputs(config):
    forward += m * head(local_dv) + n * head(tc.hidden_size)
  if mc.tag_decoder.enabled:
    td, t = mc.tag_decoder, NUM_TAGS
    d = td.d_model
    layer = (8 * t * d * d + 4 * t * t * d          # self-attention
             + 4 * t * d * d + 4 * m * d * d + 4 * t * m * d   # cross-attention
             + 4 * t * d * td.mlp_dim)              # FFN
    forward += td.num_layers * layer + 2 * t * d
    if local_dv != d:
      forward += 2 * m * local_dv * d
  loss = config.loss
  if loss.name == "asg":
    forward += 2 * batch_size * e * (int(loss.use_ira) + int(loss.use_erl))
    if loss.use_arsa:
      r = dc.max_regions
      forward += 2 * r * (r + n) * e
  elif loss.name in ("reclf", "gloria"):
    forward += 2 * batch_size * e                   # global branch
    forward += 4 * batch_size * n * m * e           # word–patch attention, every pair
  return 3.0 * forward
