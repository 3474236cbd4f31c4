"""PyTorch sources of the conversion tests (tests/models/test_torch_weights.py,
tests/models/test_peer_convert.py, tests/test_convert.py): the real timm / torchvision /
transformers modules, and the peers' wrappers re-created from their released code's module
names and shapes (HKU-MedAI/MGCA mgca/models/backbones/encoder.py + vits.py, ASGMVLP_CODE
models/encoder.py + irl_model.py, marshuang80/gloria gloria/models): the attribute names are
what fixes the checkpoint keys, so these wrappers write the keys the peers' files hold.

torchvision: PyPI's torchvision 0.28.0 (the release paired with torch 2.13) is a CUDA build;
its C++ ops library does not load against the CPU torch wheel, and its import then stops at
`register_fake("torchvision::nms")`. `import_torchvision` defines the schemas of the two ops
that import registers (only when the library did not load) so the pure-Python modules
(`torchvision.models.resnet`, and timm, which imports torchvision) are the real ones.
"""
from __future__ import annotations

import sys

import numpy as np

import torch
from torch import nn

_OPS = ("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_LIBS = []


def import_torchvision():
  """torchvision (see the module docstring), then timm can be imported."""
  try:
    import torchvision  # pylint: disable=import-outside-toplevel
    return torchvision
  except RuntimeError as e:
    if "torchvision::nms" not in str(e):
      raise
  for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
    del sys.modules[name]
  lib = torch.library.Library("torchvision", "DEF")   # kept alive: the schemas stay defined
  for schema in _OPS:
    lib.define(schema)
  _LIBS.append(lib)
  import torchvision  # pylint: disable=import-outside-toplevel,redefined-outer-name
  return torchvision


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
  """Non-trivial LayerNorm / BatchNorm affine parameters and running statistics, biases,
  class tokens and position embeddings (a fresh init has ones and zeros there)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if p.ndim <= 1 or "token" in name or "pos_embed" in name:
        p.add_(0.1 * torch.randn(p.shape, generator=g))
    for m in model.modules():
      if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:  # pylint: disable=protected-access
        m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
  return model.eval()


# ------------------------------------------------------------ the peers' wrappers (re-created)

class Embedding(nn.Module):
  """MGCA / ASG `GlobalEmbedding` (Linear) and `LocalEmbedding` (Conv1d k=1, per token):
  `head` = Linear|Conv1d, BatchNorm1d, ReLU, Linear|Conv1d, BatchNorm1d(affine=False)."""

  def __init__(self, d_in: int, hidden: int, out: int, local: bool):
    super().__init__()
    layer = (lambda a, b: nn.Conv1d(a, b, 1)) if local else nn.Linear
    self.local = local
    self.head = nn.Sequential(layer(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                              layer(hidden, out), nn.BatchNorm1d(out, affine=False))

  def forward(self, x):
    if self.local:                 # [B, N, D] -> [B, D, N] -> head -> [B, N, E]
      return self.head(x.permute(0, 2, 1)).permute(0, 2, 1)
    return self.head(x)


class ImageEncoder(nn.Module):
  """`img_encoder_q` / `gloria.img_encoder`: `model` (timm ViT without classifier, or a
  torchvision ResNet with `fc` = Identity) and, MGCA-style, `global_embed` / `local_embed`."""

  def __init__(self, model: nn.Module, vit: bool, dims=None, heads=True):
    super().__init__()
    self.model, self.vit = model, vit
    if heads:
      feat, local, hidden, out = dims
      self.global_embed = Embedding(feat, hidden, out, local=False)
      self.local_embed = Embedding(local, hidden, out, local=True)

  def forward(self, x):
    """-> (global feature [B, D], local features [B, M, D'])."""
    if self.vit:
      tokens = self.model.forward_features(x)
      return tokens[:, 0], tokens[:, 1:]
    m = self.model
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    local = m.layer3(m.layer2(m.layer1(x)))
    pooled = torch.flatten(m.avgpool(m.layer4(local)), 1)
    return pooled, local.flatten(2).transpose(1, 2)      # "b c w h -> b (w h) c"


class TextEncoder(nn.Module):
  """`text_encoder_q`: `model` (a transformers BertModel without pooler) and the two heads;
  word features are the sums of each word's pieces, [SEP] its own slot (MGCA's
  `aggregate_tokens`), given as `word_ids`."""

  def __init__(self, bert: nn.Module, hidden: int, out: int, heads=True):
    super().__init__()
    self.model = bert
    if heads:
      d = bert.config.hidden_size
      self.global_embed = Embedding(d, hidden, out, local=False)
      self.local_embed = Embedding(d, hidden, out, local=True)

  def forward(self, ids, mask, word_ids):
    h = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
    n = ids.shape[1] - 1
    one_hot = torch.nn.functional.one_hot(word_ids.clamp(min=0), n).float()
    one_hot = one_hot * (word_ids >= 0).float()[..., None]
    return h[:, 0], torch.einsum("bln,bld->bnd", one_hot, h)


class DecoderLayer(nn.Module):
  """ASG's pre-norm `TransformerDecoderLayer` (normalize_before=True, ReLU)."""

  def __init__(self, d: int, heads: int, mlp: int):
    super().__init__()
    self.self_attn = nn.MultiheadAttention(d, heads)
    self.multihead_attn = nn.MultiheadAttention(d, heads)
    self.linear1, self.linear2 = nn.Linear(d, mlp), nn.Linear(mlp, d)
    self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)

  def forward(self, tgt, memory):
    h = self.norm1(tgt)
    tgt = tgt + self.self_attn(h, h, h)[0]
    tgt = tgt + self.multihead_attn(self.norm2(tgt), memory, memory)[0]
    return tgt + self.linear2(torch.relu(self.linear1(self.norm3(tgt))))


class Decoder(nn.Module):
  def __init__(self, d, heads, mlp, layers, norm):
    super().__init__()
    self.layers = nn.ModuleList([DecoderLayer(d, heads, mlp) for _ in range(layers)])
    self.norm = norm


class IRL(nn.Module):
  """ASG's `IRLModel`: `decoder` (layers + the shared `decoder_norm`), one `mlp_head`
  Linear(d, 1) for every query."""

  def __init__(self, d: int, heads: int, mlp: int, layers: int):
    super().__init__()
    self.decoder_norm = nn.LayerNorm(d)
    self.decoder = Decoder(d, heads, mlp, layers, self.decoder_norm)
    self.mlp_head = nn.Sequential(nn.Linear(d, 1))

  def forward(self, patches, queries):
    """patches [B, M, d], queries [T, d] -> logits [B, T]."""
    b = patches.shape[0]
    x = queries[:, None].repeat(1, b, 1)                 # [T, B, d] (sequence first)
    memory = patches.transpose(0, 1)
    for layer in self.decoder.layers:
      x = layer(x, memory)
    return self.mlp_head(self.decoder.norm(x)).transpose(0, 1)[..., 0]


class Peer(nn.Module):
  """The Lightning module's attribute layout: `img_encoder_q`, `text_encoder_q` (+ ASG's
  `irl` and frozen `text_encoder`, MGCA's `prototype_layer`)."""

  def __init__(self, image: ImageEncoder, text: TextEncoder, irl=None, frozen=None,
               prototypes: int = 0, emb: int = 0):
    super().__init__()
    self.img_encoder_q, self.text_encoder_q = image, text
    if irl is not None:
      self.irl, self.text_encoder = irl, frozen
    if prototypes:
      self.prototype_layer = nn.Linear(emb, prototypes, bias=False)


class GLoRIA(nn.Module):
  """`gloria.img_encoder` (model, global_embedder, local_embedder) and `gloria.text_encoder`
  (model: a BertModel with its pooler)."""

  def __init__(self, resnet: nn.Module, bert: nn.Module, emb: int):
    super().__init__()
    inner = nn.Module()
    inner.img_encoder = ImageEncoder(resnet, vit=False, heads=False)
    inner.img_encoder.global_embedder = nn.Linear(resnet.layer4[-1].conv3.out_channels, emb)
    inner.img_encoder.local_embedder = nn.Conv2d(resnet.layer3[-1].conv3.out_channels, emb, 1,
                                                 bias=False)
    inner.text_encoder = nn.Module()
    inner.text_encoder.model = bert
    self.gloria = inner


def lightning_save(module: nn.Module, path, hyper_parameters: dict) -> None:
  """As PyTorch Lightning's ModelCheckpoint writes a file."""
  torch.save({"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.5.10",
              "state_dict": module.state_dict(), "hyper_parameters": hyper_parameters,
              "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(1.5)}},
              "optimizer_states": [], "lr_schedulers": []}, path)


def nchw(images: np.ndarray) -> torch.Tensor:
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
