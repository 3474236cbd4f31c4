"""A PyTorch reference of the ASG pre-training step, to compare speed with the JAX one.

    from benchmarks import torch_reference, train_step
    config = train_step.make_config(size="tiny", ablation="full", batch=8)
    step, num_params = torch_reference.make_torch_step(config, 8, compile=False)
    loss = step()          # one full training step (forward, loss, backward, AdamW), waited for

The same architecture as `asg_jax.models.vlp.VisionLanguageModel` with an ASG objective
(`config.loss.name` "asg" or "ira"), built from the SAME ml_collections config
(`benchmarks/train_step.make_config`; sizes from `config.model` / `config.data`), random init:

- image tower: `transformers.ViTModel(add_pooling_layer=False)` (pre-norm, qkv bias, exact
  GELU, LayerNorm eps 1e-6, no attention-probability dropout, hidden dropout
  `model.image.dropout`) → CLS feature + patch tokens (after the final LayerNorm);
- text tower: `transformers.BertModel(add_pooling_layer=False)` with `num_hidden_layers =
  model.text.use_layers` (only the layers that run exist, as in JAX), hidden/attention
  dropout from the config, token type 0;
- four projection heads Linear → BatchNorm → ReLU → Linear → BatchNorm(no affine) → L2
  normalise (`asg_jax/models/heads.py`): global heads on the two CLS features, local heads on
  the patch tokens and on the word-aggregated BERT hidden states (`aggregation.aggregate_words`;
  the text local head's BatchNorm statistics over the valid word slots only, as Flax's
  `mask=`); in train mode the heads' Linear biases get no gradient (`frozen_bias`);
- IRL tag decoder (when `model.tag_decoder.enabled`): `nn.TransformerDecoderLayer(norm_first=
  True, activation="relu", batch_first=True)` × num_layers, final LayerNorm + dropout, a
  group-wise linear head (one weight vector and bias per tag); the 40 constant queries
  `[40, Dq]` (random normal, as `train_step.Runner`) are a buffer, projected by a Linear when
  Dq != d_model (patch tokens likewise when their width != d_model); N(0, 0.02) init;
- losses (`asg_jax/losses`): IRA symmetric InfoNCE at τ, ERL soft-label contrastive with
  Q = row-normalise(0.8 I + 0.2 Ŷ Ŷᵀ + 1e-6), ARSA per-image region–sentence InfoNCE on
  RoIAlign 1×1 of the patch-embedding map (torchvision's `roi_align` when installed, else
  `roi_align_1x1` below, the same factorised computation as `asg_jax/losses/roi_align.py`),
  IRL BCE; weights `loss.w_*`, switches `loss.use_*`; plus the in-batch retrieval top-1/top-5
  measurements (no gradient), as the JAX step reports them;
- the local heads run only when the objective reads them (`needs_local_outputs`: ARSA), so
  under ablation=ira neither local head nor the tag decoder runs (the local heads' parameters
  exist either way, as in JAX);
- `torch.optim.AdamW` (b1, b2, eps 1e-8, decoupled weight decay on every parameter) with the
  recipe's warmup + cosine learning rate; the global gradient norm is computed each step.
  Parameters the forward pass does not reach (the unused local heads, the frozen biases) get a
  zero gradient, so AdamW updates (decays) them as optax does.

The parameter count equals `train_step.Runner(config, ...).num_params` exactly (checked by
tests/test_torch_reference.py; base ablation=ira: 158,356,224): neither tower has its pooler
(the JAX towers have none), ViT has no mask token, BERT has exactly `use_layers` layers, and
the tag decoder's `nn.MultiheadAttention` (packed in_proj 3d² + 3d, out_proj d² + d) has the
parameter count of Flax's `MultiHeadDotProductAttention` (4 × (d² + d)).

Differences from the JAX step that remain (none changes the amount of model work much):
- attention: HF's "sdpa" (`scaled_dot_product_attention`) in both towers, whereas JAX's
  default "einsum" materialises the probabilities; the text tower's attention probabilities
  (JAX `word_importance`) are not computed (no ASG loss reads them: XLA drops them too);
- the key-projection biases of both towers get their (mathematically zero, numerically noisy)
  gradient, JAX stops it (`KeyDense`); the head biases are detached as in JAX;
- BatchNorm running variance: unbiased (PyTorch) for the unmasked heads, biased (as Flax) for
  the masked text local head; no effect on the training-mode outputs;
- the JAX step also checks every measurement for finiteness and keeps the old state on a
  non-finite step (a select over params + optimizer state); this step does not;
- dtype "bfloat16": `torch.autocast` (parameters float32), whereas JAX casts matmul inputs
  only and keeps norms, softmax, heads' statistics and the losses in float32;
- random numbers (init, dropout) differ, so values agree in distribution only.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asg_jax.data import normalization
from asg_jax.data.pipeline import random_batch

_NEG = -1e30        # masked logit (asg_jax/losses/asg.py)
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.1  # PyTorch convention (flax 0.9)


# ------------------------------------------------------------------------------ helpers


def needs_local_outputs(config) -> bool:
  """`asg_jax.objectives.needs_local_outputs` (without importing JAX): ARSA reads them."""
  lc = config.loss
  if lc.name in ("reclf", "gloria") or config.model.local_head.mode:
    return True
  return lc.name == "asg" and bool(lc.use_arsa)


def loss_switches(config) -> dict[str, bool]:
  """`use_ira/use_arsa/use_irl/use_erl` as `objectives.make_asg_objective` sets them."""
  lc = config.loss
  if lc.name == "ira":
    return dict(use_ira=True, use_arsa=False, use_irl=False, use_erl=False)
  if lc.name != "asg":
    raise NotImplementedError(f"torch_reference implements the ASG objectives ('asg', 'ira'), "
                              f"not loss.name = {lc.name!r}")
  return dict(use_ira=bool(lc.use_ira), use_arsa=bool(lc.use_arsa), use_irl=bool(lc.use_irl),
              use_erl=bool(lc.use_erl))


def lr_at(train_cfg, num_steps: int, step: int) -> float:
  """`asg_jax.state.lr_schedule` in Python: linear warmup init_lr → lr, cosine to end_lr."""
  warmup = int(round(train_cfg.warmup_frac * num_steps))
  lr, init_lr, end_lr = float(train_cfg.lr), float(train_cfg.init_lr), float(train_cfg.end_lr)
  if warmup and step < warmup:
    return init_lr + (lr - init_lr) * min(max(step / warmup, 0.0), 1.0)
  decay = max(num_steps - warmup, 1)
  t = min(step - warmup, decay) / decay
  alpha = end_lr / lr
  return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * t)) + alpha)


def count_params(module: nn.Module) -> int:
  return int(sum(p.numel() for p in module.parameters()))


# ---------------------------------------------------------------------------- modules


class BatchNorm(nn.Module):
  """BatchNorm over the rows of `[N, C]`, optionally over the rows where `mask` only (Flax
  `BatchNorm(mask=)`); eps 1e-5, momentum 0.1, `affine=False`: no scale/shift."""

  def __init__(self, features: int, affine: bool = True):
    super().__init__()
    self.weight = nn.Parameter(torch.ones(features)) if affine else None
    self.bias = nn.Parameter(torch.zeros(features)) if affine else None
    self.register_buffer("running_mean", torch.zeros(features))
    self.register_buffer("running_var", torch.ones(features))

  def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    x = x.float()   # statistics in float32 (as JAX), also under bfloat16 autocast
    if mask is None or not self.training:
      return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                          training=self.training, momentum=_BN_MOMENTUM, eps=_BN_EPS)
    m = mask.to(x.dtype)[:, None]
    n = m.sum().clamp(min=1.0)
    mean = (x * m).sum(0) / n
    var = ((x - mean).square() * m).sum(0) / n          # biased, two-pass (as Flax)
    with torch.no_grad():
      self.running_mean.lerp_(mean.detach(), _BN_MOMENTUM)
      self.running_var.lerp_(var.detach(), _BN_MOMENTUM)
    y = (x - mean) * torch.rsqrt(var + _BN_EPS)
    if self.weight is not None:
      y = y * self.weight + self.bias
    return y


class ProjectionHead(nn.Module):
  """asg_jax/models/heads.py `ProjectionHead`: Linear → BN → ReLU → Linear → BN(no affine) →
  L2 normalise, on `[B, D]` or per token on `[B, N, D]` (statistics over all B·N rows, or the
  `mask`ed ones). PyTorch `nn.Linear` init (= the JAX `Linear`)."""

  def __init__(self, in_features: int, hidden: int, out: int):
    super().__init__()
    self.dense_0 = nn.Linear(in_features, hidden)
    self.bn_0 = BatchNorm(hidden, affine=True)
    self.dense_1 = nn.Linear(hidden, out)
    self.bn_1 = BatchNorm(out, affine=False)

  def _linear(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    # train mode: the bias is cancelled by the next BatchNorm; no gradient (JAX frozen_bias)
    return F.linear(x, layer.weight, layer.bias.detach() if self.training else layer.bias)

  def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    lead = x.shape[:-1]
    h = x.float().reshape(-1, x.shape[-1])
    m = None if mask is None else mask.reshape(-1)
    h = F.relu(self.bn_0(self._linear(self.dense_0, h), m))
    h = self.bn_1(self._linear(self.dense_1, h), m)
    return F.normalize(h.float(), dim=-1, eps=1e-12).reshape(*lead, -1)


class TagDecoder(nn.Module):
  """asg_jax/models/tag_decoder.py `TagDecoder`: constant queries × patch tokens → `[B, T]`."""

  def __init__(self, *, num_tags: int, query_dim: int, memory_dim: int, d_model: int,
               num_heads: int, mlp_dim: int, num_layers: int, dropout: float):
    super().__init__()
    self.memory_proj = nn.Linear(memory_dim, d_model) if memory_dim != d_model else None
    self.query_proj = nn.Linear(query_dim, d_model) if query_dim != d_model else None
    self.layers = nn.ModuleList([
        nn.TransformerDecoderLayer(d_model, num_heads, mlp_dim, dropout=dropout,
                                   activation="relu", batch_first=True, norm_first=True)
        for _ in range(num_layers)])
    self.final_norm = nn.LayerNorm(d_model, eps=1e-5)
    self.dropout = nn.Dropout(dropout)
    self.head_kernel = nn.Parameter(torch.empty(num_tags, d_model))
    self.head_bias = nn.Parameter(torch.zeros(num_tags))
    for module in self.modules():      # N(0, 0.02) kernels, zero biases (as the JAX module)
      if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)
      elif isinstance(module, nn.MultiheadAttention):
        nn.init.normal_(module.in_proj_weight, std=0.02)
        nn.init.zeros_(module.in_proj_bias)
    nn.init.normal_(self.head_kernel, std=0.02)

  def forward(self, patch_tokens: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    memory = patch_tokens
    if self.memory_proj is not None:
      memory = self.memory_proj(memory)
    queries = queries.detach()
    if self.query_proj is not None:
      queries = self.query_proj(queries)
    x = queries[None].expand(patch_tokens.shape[0], -1, -1)
    for layer in self.layers:
      x = layer(x, memory)
    x = self.dropout(self.final_norm(x))
    return torch.einsum("btd,td->bt", x.float(), self.head_kernel) + self.head_bias


class VisionLanguageModel(nn.Module):
  """The ASG dual encoder of `asg_jax.models.vlp` (ViT + BERT + heads + tag decoder)."""

  def __init__(self, config, tag_queries: np.ndarray | None = None):
    super().__init__()
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel  # pylint: disable=import-outside-toplevel
    mc, dc = config.model, config.data
    if mc.image.name != "vit" or mc.text.name != "bert":
      raise NotImplementedError(f"torch_reference mirrors ViT + BERT, not "
                                f"{mc.image.name} + {mc.text.name}")
    if mc.image.input_resize:
      raise NotImplementedError("model.image.input_resize is not mirrored (ViT uses 0)")
    if mc.local_head.mode:
      raise NotImplementedError("the RECLF / GLoRIA local-matching head is not mirrored")
    im, tx = mc.image, mc.text
    self.register_buffer("lut", torch.from_numpy(normalization.lookup_table(dc.normalization)),
                         persistent=False)
    vit_cfg = ViTConfig(hidden_size=im.hidden_size, num_hidden_layers=im.num_layers,
                        num_attention_heads=im.num_heads, intermediate_size=im.mlp_dim,
                        hidden_act="gelu", hidden_dropout_prob=im.dropout,
                        attention_probs_dropout_prob=0.0, layer_norm_eps=1e-6,
                        image_size=dc.image_size, patch_size=im.patch_size, num_channels=3,
                        qkv_bias=True, initializer_range=0.02, attn_implementation="sdpa")
    bert_cfg = BertConfig(vocab_size=tx.vocab_size, hidden_size=tx.hidden_size,
                          num_hidden_layers=tx.use_layers or tx.num_hidden_layers,
                          num_attention_heads=tx.num_attention_heads,
                          intermediate_size=tx.intermediate_size, hidden_act="gelu",
                          hidden_dropout_prob=tx.hidden_dropout,
                          attention_probs_dropout_prob=tx.attention_dropout,
                          max_position_embeddings=tx.max_position_embeddings, type_vocab_size=2,
                          layer_norm_eps=1e-12, initializer_range=0.02,
                          attn_implementation="sdpa")
    self.image_encoder = ViTModel(vit_cfg, add_pooling_layer=False)
    self.text_encoder = BertModel(bert_cfg, add_pooling_layer=False)
    head = lambda d: ProjectionHead(d, mc.head_hidden, mc.embed_dim)  # noqa: E731
    self.image_global_head, self.image_local_head = head(im.hidden_size), head(im.hidden_size)
    self.text_global_head, self.text_local_head = head(tx.hidden_size), head(tx.hidden_size)
    self.tag_decoder = None
    if mc.tag_decoder.enabled:
      td = mc.tag_decoder
      if tag_queries is None:
        tag_queries = np.zeros((random_batch.NUM_TAGS, tx.hidden_size), np.float32)
      self.register_buffer("tag_queries", torch.as_tensor(np.asarray(tag_queries, np.float32)),
                           persistent=False)
      self.tag_decoder = TagDecoder(num_tags=tag_queries.shape[0],
                                    query_dim=tag_queries.shape[1], memory_dim=im.hidden_size,
                                    d_model=td.d_model, num_heads=td.num_heads,
                                    mlp_dim=td.mlp_dim, num_layers=td.num_layers,
                                    dropout=td.dropout)

  def normalize(self, image: torch.Tensor) -> torch.Tensor:
    """uint8 `[B, S, S, 1|3]` → float `[B, 3, S, S]` (data/normalization.py's table)."""
    if image.dtype != torch.uint8:
      return image
    idx = image.long()
    x = self.lut[idx[..., 0]] if image.shape[-1] == 1 else self.lut[idx, torch.arange(3)]
    return x.permute(0, 3, 1, 2).contiguous()

  def forward(self, batch: dict[str, torch.Tensor], local: bool = True
              ) -> dict[str, torch.Tensor]:
    out = {}
    hidden = self.image_encoder(pixel_values=self.normalize(batch["image"])).last_hidden_state
    out["image_feature"], out["patch_tokens"] = hidden[:, 0].float(), hidden[:, 1:].float()
    out["image_emb"] = self.image_global_head(out["image_feature"])
    if local:
      out["patch_emb"] = self.image_local_head(out["patch_tokens"])
    txt = self.text_encoder(input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"]).last_hidden_state.float()
    out["text_feature"] = txt[:, 0]
    out["text_emb"] = self.text_global_head(out["text_feature"])
    if local:   # aggregation.aggregate_words: one-hot segment sums into L-1 word slots
      n = txt.shape[1] - 1
      one_hot = (batch["word_ids"][..., None] == torch.arange(n, device=txt.device)).to(txt.dtype)
      word_hidden = torch.einsum("bln,bld->bnd", one_hot, txt)
      word_mask = one_hot.amax(1) > 0
      word_emb = self.text_local_head(word_hidden, mask=word_mask)
      out["word_emb"] = word_emb * word_mask[..., None]
      out["word_mask"] = word_mask
    if self.tag_decoder is not None:
      out["tag_logits"] = self.tag_decoder(out["patch_tokens"], self.tag_queries).float()
    return out


# ----------------------------------------------------------------------------- losses


def _axis_weights(start, size, grid, max_grid: int, length: int) -> torch.Tensor:
  """asg_jax/losses/roi_align.py `_axis_weights`: `[B, R]` → `[B, R, length]`."""
  i = torch.arange(max_grid, dtype=torch.float32, device=start.device)
  g = grid.clamp(min=1.0)[..., None]
  pos = start[..., None] + (i + 0.5) * size[..., None] / g
  active = (i < grid[..., None]) & (pos >= -1.0) & (pos <= length)
  pos = pos.clamp(min=0.0)
  low = torch.floor(pos)
  clamp = low >= length - 1
  low = torch.where(clamp, torch.full_like(low, length - 1.0), low)
  high = torch.where(clamp, low, low + 1.0)
  pos = torch.where(clamp, low, pos)
  frac = pos - low
  cells = torch.arange(length, dtype=torch.float32, device=start.device)
  w = ((1.0 - frac)[..., None] * (cells == low[..., None])
       + frac[..., None] * (cells == high[..., None]))
  return torch.where(active[..., None], w, torch.zeros_like(w)).sum(-2)


def roi_align_1x1(fmap: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
  """torchvision `roi_align(output_size=1, spatial_scale=1, sampling_ratio=-1, aligned=False)`
  of `fmap [B, H, W, D]` (channels last) at `boxes [B, R, 4]` (grid units) → `[B, R, D]`;
  exact for boxes no larger than the grid (asg_jax/losses/roi_align.py)."""
  _, height, width, _ = fmap.shape
  boxes = boxes.float()
  x1, y1, x2, y2 = boxes.unbind(-1)
  roi_w, roi_h = (x2 - x1).clamp(min=1.0), (y2 - y1).clamp(min=1.0)
  grid_h = torch.ceil(roi_h).clamp(0, height)
  grid_w = torch.ceil(roi_w).clamp(0, width)
  count = (grid_h * grid_w).clamp(min=1.0)
  wy = _axis_weights(y1, roi_h, grid_h, height, height)
  wx = _axis_weights(x1, roi_w, grid_w, width, width)
  weights = wy[..., :, None] * wx[..., None, :] / count[..., None, None]
  return torch.einsum("brhw,bhwd->brd", weights, fmap.float())


def region_features(patch_emb: torch.Tensor, region_boxes: torch.Tensor, grid, input_size: int
                    ) -> torch.Tensor:
  """ARSA region features `[B, R, E]`: RoIAlign 1×1 of the patch-embedding map."""
  gh, gw = grid
  b, _, e = patch_emb.shape
  fmap = patch_emb.reshape(b, gh, gw, e)
  scale = torch.tensor([gw / input_size, gh / input_size] * 2, device=patch_emb.device)
  boxes = region_boxes.float() * scale
  try:
    from torchvision.ops import roi_align  # pylint: disable=import-outside-toplevel
  except ImportError:
    return roi_align_1x1(fmap, boxes)
  r = boxes.shape[1]
  out = roi_align(fmap.permute(0, 3, 1, 2).contiguous(), list(boxes.unbind(0)), output_size=1,
                  spatial_scale=1.0, sampling_ratio=-1, aligned=False)     # [B*R, E, 1, 1]
  return out.reshape(b, r, e)


def sentence_features(word_emb: torch.Tensor, region_word_index: torch.Tensor) -> torch.Tensor:
  n = word_emb.shape[1]
  counts = (region_word_index[..., None] == torch.arange(n, device=word_emb.device)
            ).float().sum(-2)                                           # [B, R, N]
  total = counts.sum(-1, keepdim=True)
  return torch.einsum("brn,bnd->brd", counts, word_emb.float()) / total.clamp(min=1.0)


def arsa_loss(regions, sentences, region_mask, temperature: float) -> torch.Tensor:
  m = region_mask.bool()
  scores = torch.einsum("brd,bsd->brs", regions.float(), sentences.float()) / temperature
  scores = scores.masked_fill(~(m[:, :, None] & m[:, None, :]), _NEG)
  diag = torch.diagonal(scores, dim1=1, dim2=2)
  row = torch.logsumexp(scores, 2) - diag
  col = torch.logsumexp(scores, 1) - diag
  total = torch.where(m, row + col, torch.zeros_like(row)).sum()
  return total / m.float().sum().clamp(min=1.0)


def contrastive_terms(image_emb, text_emb, tags, *, temperature: float, mix: float, ira: bool,
                      soft: bool) -> dict[str, torch.Tensor]:
  """IRA (CE rows + CE columns) and ERL (symmetric KL to Q, both directions), dense `[B, B]`,
  plus in-batch retrieval top-1/top-5 (no gradient), as asg_jax/losses/contrastive.py."""
  b = image_emb.shape[0]
  sim = image_emb.float() @ text_emb.float().T
  logits = sim / temperature
  out = {}
  row_lse, col_lse = torch.logsumexp(logits, 1), torch.logsumexp(logits, 0)
  diag = torch.diagonal(logits)
  if ira:
    out["ira"] = (row_lse - diag).mean() + (col_lse - diag).mean()
  if soft:
    y = F.normalize((tags == 1).float(), dim=-1, eps=1e-12)
    eye = torch.eye(b, device=logits.device)
    raw = (1.0 - mix) * eye + mix * (y @ y.T) + 1e-6
    q = raw / raw.sum(1, keepdim=True)
    qt = raw / raw.sum(0, keepdim=True)
    log_q, log_qt = q.log(), qt.log()
    log_p = logits - row_lse[:, None]
    log_pt = logits - col_lse[None, :]
    kl = (q * (log_q - log_p) + log_p.exp() * (log_p - log_q)
          + qt * (log_qt - log_pt) + log_pt.exp() * (log_pt - log_qt))
    out["soft"] = 0.25 * kl.sum() / b
  with torch.no_grad():
    s = sim.detach()
    d = torch.diagonal(s)
    rank_i2t = (s > d[:, None]).sum(1)
    rank_t2i = (s > d[None, :]).sum(0)
    for k in (1, 5):
      if k <= b:
        out[f"i2t_top{k}"] = (rank_i2t < k).float().mean()
        out[f"t2i_top{k}"] = (rank_t2i < k).float().mean()
        out[f"top{k}"] = 0.5 * (out[f"i2t_top{k}"] + out[f"t2i_top{k}"])
  return out


def asg_objective(outputs, batch, config) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
  """`asg_jax.losses.asg_objective` with the config's weights and switches."""
  lc, use = config.loss, loss_switches(config)
  tau = float(lc.temperature)
  terms = contrastive_terms(outputs["image_emb"], outputs["text_emb"], batch["tags"],
                            temperature=tau, mix=float(lc.soft_mix), ira=use["use_ira"],
                            soft=use["use_erl"])
  measurements = {k: v for k, v in terms.items() if k not in ("ira", "soft")}
  loss = torch.zeros((), device=outputs["image_emb"].device)
  if use["use_ira"]:
    measurements["ira"] = terms["ira"]
    loss = loss + lc.w_ira * terms["ira"]
  if use["use_erl"]:
    measurements["erl"] = terms["soft"]
    loss = loss + lc.w_erl * terms["soft"]
  if use["use_arsa"]:
    grid = (config.data.image_size // config.model.image.patch_size,) * 2
    regions = region_features(outputs["patch_emb"], batch["region_boxes"], grid,
                              config.data.image_size)
    sentences = sentence_features(outputs["word_emb"], batch["region_word_index"])
    arsa = arsa_loss(regions, sentences, batch["region_mask"], tau)
    measurements["arsa"] = arsa
    loss = loss + lc.w_arsa * arsa
  if use["use_irl"]:
    irl = F.binary_cross_entropy_with_logits(outputs["tag_logits"].float(),
                                             (batch["tags"] == 1).float())
    measurements["irl"] = irl
    loss = loss + lc.w_irl * irl
  measurements["loss"] = loss
  return loss, measurements


class ModelAndLoss(nn.Module):
  """model + objective: `batch -> (loss, measurements)` (what `compile=True` compiles)."""

  def __init__(self, config, tag_queries: np.ndarray | None = None):
    super().__init__()
    self.config = config
    self.model = VisionLanguageModel(config, tag_queries)
    self.local = needs_local_outputs(config)
    loss_switches(config)   # fails early on an objective this module does not mirror

  def forward(self, batch):
    outputs = self.model(batch, local=self.local)
    return asg_objective(outputs, batch, self.config)


# ------------------------------------------------------------------------------- step


def torch_batch(host_batch: dict[str, np.ndarray], device) -> dict[str, torch.Tensor]:
  """The random host batch as torch tensors (uint8 image kept uint8, ints as int64)."""
  out = {}
  for k, v in host_batch.items():
    v = np.asarray(v)
    if v.dtype.kind in "iu" and v.dtype != np.uint8:
      v = v.astype(np.int64)
    out[k] = torch.from_numpy(np.ascontiguousarray(v)).to(device)
  return out


def default_device() -> str:
  return "cuda" if torch.cuda.is_available() else "cpu"


class TorchTrainStep:
  """One full PyTorch training step of `config` on a fixed random batch.

  Attributes: `module` (ModelAndLoss), `fn` (the module, or its `torch.compile`), `optimizer`,
  `batch`, `num_params`, `optimizer_impl`, `device`, `last_measurements`.
  """

  def __init__(self, config, batch_size: int, *, compile: bool = False, seed: int = 0,  # pylint: disable=redefined-builtin
               device: str | None = None, num_steps: int | None = None,
               optimizer_impl: str = "auto", compile_kwargs: dict | None = None):
    self.config, self.batch_size = config, batch_size
    self.device = torch.device(device or default_device())
    torch.manual_seed(seed)
    tag_queries = None
    if config.model.tag_decoder.enabled:   # as train_step.Runner: random frozen features
      tag_queries = np.random.default_rng(seed).normal(
          size=(random_batch.NUM_TAGS, config.model.text.hidden_size)).astype(np.float32)
    self.module = ModelAndLoss(config, tag_queries).to(self.device).train()
    self.num_params = count_params(self.module)
    self.batch = torch_batch(random_batch.random_batch(config, batch_size, seed), self.device)
    self.fn: Callable = self.module
    if compile:
      self.fn = torch.compile(self.module, **dict(compile_kwargs or {}))
    self.num_steps = int(num_steps or config.train.num_steps or 1000)
    tc = config.train
    opt_kwargs = dict(lr=lr_at(tc, self.num_steps, 0), betas=(tc.b1, tc.b2), eps=1e-8,
                      weight_decay=tc.weight_decay)
    params = list(self.module.parameters())
    self.optimizer, self.optimizer_impl = None, optimizer_impl
    choices = ("fused", "foreach", "for-loop") if optimizer_impl == "auto" else (optimizer_impl,)
    for impl in choices:
      extra = {"fused": {"fused": True}, "foreach": {"foreach": True},
               "for-loop": {"foreach": False}}[impl]
      try:
        self.optimizer = torch.optim.AdamW(params, **opt_kwargs, **extra)
        self.optimizer_impl = impl
        break
      except (RuntimeError, ValueError, TypeError):
        continue
    if self.optimizer is None:
      raise RuntimeError(f"torch.optim.AdamW: no implementation among {choices} works here")
    self.dtype = config.model.dtype
    self._params = params
    self._unused: list[tuple[nn.Parameter, torch.Tensor]] | None = None
    self.step_count = 0
    self.last_measurements: dict[str, torch.Tensor] = {}
    self.grad_norm = float("nan")

  def _autocast(self):
    return torch.autocast(self.device.type, dtype=torch.bfloat16,
                          enabled=self.dtype == "bfloat16")

  def step(self) -> float:
    """forward + loss + backward + AdamW; returns the loss (a host float: waited for)."""
    for group in self.optimizer.param_groups:
      group["lr"] = lr_at(self.config.train, self.num_steps, self.step_count)
    self.optimizer.zero_grad(set_to_none=True)
    with self._autocast():
      loss, measurements = self.fn(self.batch)
    loss.backward()
    if self._unused is None:   # parameters the forward does not reach: zero grads (as optax)
      self._unused = [(p, torch.zeros_like(p)) for p in self._params if p.grad is None]
    for p, zero in self._unused:
      p.grad = zero
    grads = [p.grad for p in self._params]
    if self.config.train.grad_clip > 0:
      grad_norm = torch.nn.utils.clip_grad_norm_(self._params, self.config.train.grad_clip)
    else:
      grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))  # pylint: disable=protected-access
    self.optimizer.step()
    self.step_count += 1
    self.last_measurements = {k: v.detach() for k, v in measurements.items()}
    value = float(loss.detach())
    self.grad_norm = float(grad_norm)
    if self.device.type == "cuda":
      torch.cuda.synchronize(self.device)
    return value


def make_torch_step(config, batch_size: int, compile: bool = False, **kwargs: Any  # pylint: disable=redefined-builtin
                    ) -> tuple[Callable[[], float], int]:
  """`(step_fn, num_params)`: `step_fn()` runs one full training step (forward, loss,
  backward, AdamW) on a fixed random batch of `batch_size` in the layout of
  `asg_jax.data.pipeline.random_batch` and returns the loss. `compile=True`: model + loss under
  `torch.compile` (compiled lazily, on the first call). The `TorchTrainStep` is
  `step_fn.runner`. Keyword arguments go to `TorchTrainStep`."""
  runner = TorchTrainStep(config, batch_size, compile=compile, **kwargs)

  def step_fn() -> float:
    return runner.step()
  step_fn.runner = runner
  return step_fn, runner.num_params


def set_threads(num: int | None = None) -> int:
  """torch intra-op threads = the usable core count (or `num`)."""
  if not num:
    num = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
           else os.cpu_count() or 1)
  torch.set_num_threads(int(num))
  return int(num)
