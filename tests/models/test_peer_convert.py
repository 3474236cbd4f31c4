"""The peers' released checkpoints (ASG, MGCA, GLoRIA), re-created in PyTorch with random
weights and their modules' names and shapes (tests/models/torch_zoo.py), saved as their
Lightning ModelCheckpoint writes them, converted (asg_jax/models/peer_checkpoints.py), and
compared with the PyTorch forward on the same inputs: global / local features, projection
heads' embeddings, ASG's tag-decoder logits."""
import sys
import types

import jax
import numpy as np
import pytest

from asg_jax.models import peer_checkpoints, tag_queries, torch_checkpoint, vlp
from tests.helpers import demo_config

torch = pytest.importorskip("torch", reason="torch (the test extra) is the parity oracle")
transformers = pytest.importorskip("transformers")
from tests.models import torch_zoo  # noqa: E402  pylint: disable=wrong-import-position

torchvision = torch_zoo.import_torchvision()
from timm.models import vision_transformer  # noqa: E402  pylint: disable=wrong-import-position

TOL = dict(atol=1e-4, rtol=1e-4)
VOCAB, LENGTH, EMB, HIDDEN = 60, 12, 16, 64


def _fake_class(monkeypatch, module: str, name: str, base=object):
  """A class importable as `module.name` (what the peers' pickles name) while the test runs,
  for torch.save; the reader must never import it."""
  parts = module.split(".")
  for i in range(1, len(parts) + 1):
    monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
  cls = type(name, (base,), {"__module__": module})
  setattr(sys.modules[module], name, cls)
  return cls


def _config(image: str, tag_decoder: bool = False):
  kw = {"model.image.name": image, "model.image.input_resize": 0,
        "model.image.patch_size": 8, "model.image.hidden_size": 32,
        "model.image.num_layers": 2, "model.image.num_heads": 2, "model.image.mlp_dim": 128,
        "model.image.resnet_stage_sizes": (1, 1, 1, 1), "model.image.resnet_width": 64,
        "model.text.vocab_size": VOCAB, "model.text.hidden_size": 32,
        "model.text.num_hidden_layers": 2, "model.text.use_layers": 2,
        "model.text.num_attention_heads": 2, "model.text.intermediate_size": 64,
        "model.text.max_position_embeddings": 32, "model.head_hidden": HIDDEN,
        "model.embed_dim": EMB, "model.tag_decoder.enabled": tag_decoder,
        "model.tag_decoder.d_model": 32, "model.tag_decoder.num_heads": 2,
        "model.tag_decoder.mlp_dim": 48, "model.tag_decoder.num_layers": 1,
        "data.image_size": 32, "data.max_length": LENGTH}
  return demo_config("runlocal,image=vit", **kw)


def _bert(pooler=False):
  cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64,
                                max_position_embeddings=32, attn_implementation="eager")
  return transformers.BertModel(cfg, add_pooling_layer=pooler)


def _image_model(image: str):
  if image == "vit":
    return vision_transformer.VisionTransformer(img_size=32, patch_size=8, embed_dim=32,
                                                depth=2, num_heads=2, num_classes=0)
  m = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1])
  m.fc = torch.nn.Identity()
  return m


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
  ids = np.zeros((3, LENGTH), np.int32)
  word_ids = -np.ones((3, LENGTH), np.int32)
  for i, n in enumerate((9, 6, 4)):          # tokens incl. [CLS] and [SEP]
    ids[i, :n] = rng.integers(5, VOCAB, size=n)
    slots = np.cumsum(rng.random(n - 2) < 0.7)  # some pieces continue the previous word
    word_ids[i, 1:n - 1] = slots - slots[0]
    word_ids[i, n - 1] = word_ids[i, n - 2] + 1  # [SEP]: the slot after the last word
  return images, ids, (ids > 0).astype(np.int32), word_ids


def _convert(source, peer, config, tmp_path, hparams):
  torch_zoo.lightning_save(peer, tmp_path / f"{source}.ckpt", hparams)
  ckpt = torch_checkpoint.load(str(tmp_path / f"{source}.ckpt"))
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  images, ids, mask, word_ids = _inputs()
  batch = {"image": images, "input_ids": ids, "attention_mask": mask, "word_ids": word_ids}
  queries = np.zeros((40, 32), np.float32) if config.model.tag_decoder.enabled else None
  # shapes only (compiling init takes seconds): every leaf compared here is carried
  init = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), batch, train=False, tag_queries=queries)))
  variables, report = peer_checkpoints.convert(source, ckpt.tensors, init, config,
                                               f"{source}.ckpt")
  img, txt = jax.jit(lambda v: (  # one program (eager op-by-op dispatch compiles each op)
      model.apply(v, images, train=False, method=model.encode_image),
      model.apply(v, ids, mask, word_ids, train=False, method=model.encode_text)))(variables)
  return ckpt, variables, report, model, img, txt


def _torch_outputs(peer, heads=True):
  images, ids, mask, word_ids = _inputs()
  normalize = lambda x: torch.nn.functional.normalize(x, dim=-1)  # noqa: E731
  with torch.no_grad():
    feat, patches = peer.img_encoder_q(torch_zoo.nchw(images))
    report, words = peer.text_encoder_q(torch.from_numpy(ids).long(),
                                        torch.from_numpy(mask).long(),
                                        torch.from_numpy(word_ids).long())
    out = {"image_feature": feat, "patch_tokens": patches, "text_feature": report,
           "word_hidden": words}
    if heads:
      out.update(image_emb=normalize(peer.img_encoder_q.global_embed(feat)),
                 patch_emb=normalize(peer.img_encoder_q.local_embed(patches)),
                 text_emb=normalize(peer.text_encoder_q.global_embed(report)),
                 word_emb=normalize(peer.text_encoder_q.local_embed(words)))
  return {k: v.numpy() for k, v in out.items()}


def _compare(img, txt, ref, word_mask, heads=True):
  for k in ("image_feature", "patch_tokens") + (("image_emb", "patch_emb") if heads else ()):
    np.testing.assert_allclose(img[k], ref[k], **TOL, err_msg=k)
  np.testing.assert_allclose(txt["text_feature"], ref["text_feature"], **TOL)
  if heads:
    np.testing.assert_allclose(txt["text_emb"], ref["text_emb"], **TOL)
    valid = np.asarray(word_mask)
    assert valid.sum() > 3 and txt["word_emb"].shape == ref["word_emb"].shape
    np.testing.assert_allclose(np.asarray(txt["word_emb"])[valid], ref["word_emb"][valid], **TOL)


def _peer(image, irl=False, prototypes=0):
  torch.manual_seed(0)
  model = _image_model(image)
  dims = (32, 32, HIDDEN, EMB) if image == "vit" else (2048, 1024, HIDDEN, EMB)
  frozen = _bert() if irl else None
  peer = torch_zoo.Peer(torch_zoo.ImageEncoder(model, image == "vit", dims),
                        torch_zoo.TextEncoder(_bert(), HIDDEN, EMB),
                        torch_zoo.IRL(32, 2, 48, 1) if irl else None, frozen, prototypes, EMB)
  return torch_zoo.randomise(peer)


def test_mgca_resnet_checkpoint(tmp_path, monkeypatch):
  attribute_dict = _fake_class(monkeypatch, "pytorch_lightning.utilities.parsing",
                               "AttributeDict", dict)
  peer = _peer("resnet50", prototypes=10)
  hparams = attribute_dict(img_encoder="resnet_50", emb_dim=EMB, num_prototypes=10)
  config = _config("resnet50")
  ckpt, _, report, _, img, txt = _convert("mgca", peer, config, tmp_path, hparams)
  assert ckpt.metadata["hyper_parameters"] == dict(hparams) and not ckpt.skipped
  assert any("prototype_layer" in line for line in report.not_carried)
  _compare(img, txt, _torch_outputs(peer), txt["word_mask"])


def test_asg_vit_checkpoint_with_tag_decoder_and_query_tower(tmp_path):
  peer = _peer("vit", irl=True)
  config = _config("vit", tag_decoder=True)
  _, variables, report, model, img, txt = _convert("asg", peer, config, tmp_path,
                                                   {"img_encoder": "vit_base"})
  ref = _torch_outputs(peer)
  _compare(img, txt, ref, txt["word_mask"])
  # the frozen query tower is carried as it is; the decoder's logits match IRLModel's
  assert set(report.query_tower) == set(peer.text_encoder.state_dict())
  phrases = torch.from_numpy(np.random.default_rng(1).integers(5, VOCAB, size=(40, 6)))
  with torch.no_grad():
    queries = peer.text_encoder(input_ids=phrases).last_hidden_state[:, 0]
    logits = peer.irl(torch.from_numpy(np.array(img["patch_tokens"])), queries).numpy()
  ours = jax.jit(lambda v, p, q: tag_queries.decoder_logits(model, v, p, q))(
      variables, img["patch_tokens"], queries.numpy())
  np.testing.assert_allclose(ours, logits, **TOL)


def test_gloria_checkpoint_towers_and_what_is_not_carried(tmp_path, monkeypatch):
  dict_config = _fake_class(monkeypatch, "omegaconf.dictconfig", "DictConfig")
  torch.manual_seed(0)
  resnet = _image_model("resnet50")
  gloria = torch_zoo.randomise(torch_zoo.GLoRIA(resnet, _bert(pooler=True), 24))
  cfg = dict_config()
  cfg.model = {"text": {"last_n_layers": 4}}
  config = _config("resnet50")
  ckpt, _, report, _, img, txt = _convert("gloria", gloria, config, tmp_path, cfg)
  assert ckpt.skipped == [("['hyper_parameters']", "omegaconf.dictconfig.DictConfig")]
  assert sum("global_embedder" in line or "local_embedder" in line
             for line in report.not_carried) == 2
  assert sum(line.startswith(h) for h in peer_checkpoints.HEADS
             for line in report.not_carried) == 4
  peer = types.SimpleNamespace(img_encoder_q=gloria.gloria.img_encoder,
                               text_encoder_q=torch_zoo.TextEncoder(
                                   gloria.gloria.text_encoder.model, HIDDEN, EMB, heads=False))
  _compare(img, txt, _torch_outputs(peer, heads=False), None, heads=False)


def test_mismatched_recipe_is_one_line_naming_file_and_keys(tmp_path):
  peer = _peer("vit")
  torch_zoo.lightning_save(peer, tmp_path / "m.ckpt", {})
  tensors = torch_checkpoint.load(str(tmp_path / "m.ckpt")).tensors
  config = _config("vit")
  config.unlock()
  config.model.head_hidden = HIDDEN + 1
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  images, ids, mask, word_ids = _inputs()
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), {
      "image": images, "input_ids": ids, "attention_mask": mask, "word_ids": word_ids},
      train=False))
  with pytest.raises(ValueError) as e:
    peer_checkpoints.convert("mgca", tensors, shapes, config, "m.ckpt")
  msg = str(e.value)
  assert "\n" not in msg and "m.ckpt" in msg and "img_encoder_q.global_embed.head." in msg
  assert "shape mismatches" in msg and "dense_0/kernel (32, 65) <- dense_0.weight (64, 32)" in msg
