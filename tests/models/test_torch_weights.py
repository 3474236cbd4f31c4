"""timm / torchvision weights -> the Flax towers (numerical parity with the real PyTorch
modules, random weights), and safe reading of PyTorch pickles (asg_jax/models/
torch_checkpoint.py: tensors and plain containers only; no pickled code runs)."""
import logging
import os

import jax
import numpy as np
import pytest

from asg_jax.models import checkpoint_convert, resnet, torch_checkpoint, vit
from asg_jax.models.resnet import ResNet50
from asg_jax.models.vit import ViT

torch = pytest.importorskip("torch", reason="torch (the test extra) is the parity oracle")
from tests.models import torch_zoo  # noqa: E402  pylint: disable=wrong-import-position

torchvision = torch_zoo.import_torchvision()
timm = pytest.importorskip("timm")
from timm.models import deit, vision_transformer  # noqa: E402  pylint: disable=wrong-import-position

KEY = jax.random.key(0, impl="rbg")
IMAGES = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32)


def _abstract(model, *args):
  return jax.eval_shape(lambda: model.init(KEY, *args, train=False))


def _timm_vit(**kw):
  torch.manual_seed(0)
  return torch_zoo.randomise(vision_transformer.VisionTransformer(
      img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5, **kw))


def _vit_out(path, images=IMAGES):
  model = ViT(patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=128)
  params = checkpoint_convert.load_vit(str(path), _abstract(model, images)["params"])
  return jax.jit(lambda p: model.apply({"params": p}, images, train=False))(params)


@pytest.mark.parametrize("variant", ["class_slot", "no_embed_class", "no_qkv_bias"])
def test_timm_vit_parity(tmp_path, variant):
  kw = {"class_slot": {}, "no_embed_class": {"no_embed_class": True},
        "no_qkv_bias": {"qkv_bias": False}}[variant]
  m = _timm_vit(**kw)
  torch.save({"model": m.state_dict()}, tmp_path / "deit.pth")   # a DeiT release's layout
  out = _vit_out(tmp_path / "deit.pth")
  with torch.no_grad():
    ref = m.forward_features(torch_zoo.nchw(IMAGES)).numpy()
  np.testing.assert_allclose(out["cls"], ref[:, 0], atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(out["patch_tokens"], ref[:, 1:], atol=1e-4, rtol=1e-4)


def test_deit_distillation_token_is_dropped_with_a_message(tmp_path, caplog):
  torch.manual_seed(0)
  m = torch_zoo.randomise(deit.VisionTransformerDistilled(
      img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5))
  torch.save(m.state_dict(), tmp_path / "distilled.pth")
  with caplog.at_level(logging.WARNING):
    out = _vit_out(tmp_path / "distilled.pth")
  assert "distillation token" in caplog.text
  # the same network without the token: cls + patches, position slot 1 removed
  sd = m.state_dict()
  plain = _timm_vit()
  plain.load_state_dict({**{k: v for k, v in sd.items() if k not in ("dist_token", "pos_embed")
                            and not k.startswith("head")},
                         "pos_embed": torch.cat([sd["pos_embed"][:, :1], sd["pos_embed"][:, 2:]],
                                                1)}, strict=False)
  with torch.no_grad():
    ref = plain.forward_features(torch_zoo.nchw(IMAGES)).numpy()
  np.testing.assert_allclose(out["cls"], ref[:, 0], atol=1e-4, rtol=1e-4)


def test_timm_layer_scale_is_refused_naming_the_keys(tmp_path):
  torch.save(_timm_vit(init_values=0.1).state_dict(), tmp_path / "ls.pth")
  with pytest.raises(ValueError) as e:
    _vit_out(tmp_path / "ls.pth")
  msg = str(e.value)
  assert "\n" not in msg and str(tmp_path / "ls.pth") in msg
  assert "unexpected" in msg and "blocks.0.ls1.gamma" in msg


def _tv_resnet(layers=(1, 1, 1, 1)):
  torch.manual_seed(0)
  m = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, list(layers))
  return torch_zoo.randomise(m)


def test_torchvision_resnet_parity_with_batchnorm_statistics(tmp_path):
  m = _tv_resnet()
  torch.save(m.state_dict(), tmp_path / "resnet.pth")
  model = ResNet50(stage_sizes=(1, 1, 1, 1), width=64)
  abstract = _abstract(model, IMAGES)
  params, stats = resnet.load_pretrained(str(tmp_path / "resnet.pth"), abstract["params"],
                                         abstract["batch_stats"])
  out = jax.jit(lambda v: model.apply(v, IMAGES, train=False))(
      {"params": params, "batch_stats": stats})
  pooled, local = torch_zoo.ImageEncoder(m, vit=False, heads=False)(torch_zoo.nchw(IMAGES))
  np.testing.assert_allclose(out["pooled"], pooled.detach().numpy(), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(resnet.features(out)[1], local.detach().numpy(), atol=1e-4,
                             rtol=1e-4)


def test_full_torchvision_resnet50_maps_key_for_key_and_wrong_depth_is_refused(tmp_path):
  sd = torchvision.models.resnet50(weights=None).state_dict()
  tensors = {k: v.numpy() for k, v in sd.items()}
  abstract = _abstract(ResNet50(), np.zeros((1, 32, 32, 3), np.float32))
  params, stats = checkpoint_convert.load_resnet(tensors, abstract["params"],
                                                 abstract["batch_stats"])
  np.testing.assert_array_equal(
      params["encoder"]["stages_2"]["layers_5"]["layer_1"]["convolution"]["kernel"],
      tensors["layer3.5.conv2.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(stats["encoder"]["stages_0"]["layers_0"]["shortcut"][
      "normalization"]["var"], tensors["layer1.0.downsample.1.running_var"])
  small = _abstract(ResNet50(stage_sizes=(1, 1, 1, 1)), np.zeros((1, 32, 32, 3), np.float32))
  with pytest.raises(ValueError, match=r"unexpected .*encoder\.stages\.0\.layers\.1\."):
    checkpoint_convert.load_resnet(tensors, small["params"], small["batch_stats"])


def test_imagenet_init_accepts_timm_and_torchvision_files(tmp_path):
  """transfer/inits.py loads config.imagenet through the tower's load_pretrained."""
  m = _timm_vit()
  torch.save(m.state_dict(), tmp_path / "vit.pth")
  model = ViT(patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=128)
  params, stats = vit.load_pretrained(str(tmp_path / "vit.pth"),
                                      _abstract(model, IMAGES)["params"], {})
  assert stats == {}
  np.testing.assert_array_equal(params["embeddings"]["cls_token"], m.cls_token.detach().numpy())


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.mkdir, (self.marker,))


def test_pickled_objects_are_never_executed(tmp_path):
  marker = str(tmp_path / "pwned")
  sd = {"w": torch.ones(2, 3), "evil": _Evil(marker)}
  torch.save({"state_dict": sd, "hyper_parameters": {}}, tmp_path / "bad.ckpt")
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError,
                     match=r"refusing to execute pickled code.*(posix|os)\.mkdir at "
                           r"\['state_dict'\]\['evil'\]"):
    torch_checkpoint.load(str(tmp_path / "bad.ckpt"))
  with pytest.raises(ValueError, match="refusing"):
    checkpoint_convert.read_state_dict(str(tmp_path / "bad.ckpt"))
  torch.save(sd, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
  with pytest.raises(torch_checkpoint.UnsafeCheckpointError, match="refusing"):
    torch_checkpoint.load(str(tmp_path / "old.pt"))
  assert not os.path.exists(marker)


def test_lightning_metadata_is_plain_data_or_skipped(tmp_path):
  import argparse  # pylint: disable=import-outside-toplevel
  marker = str(tmp_path / "pwned")
  sd = {"a.weight": torch.randn(2, 3), "b": torch.arange(4), "h": torch.ones(2).half(),
        "bf": torch.tensor([1.5, -2.25]).bfloat16(), "t": torch.arange(6.).reshape(2, 3).t()}
  torch.save({"state_dict": sd, "epoch": 2,
              "hyper_parameters": {"args": argparse.Namespace(lr=2e-5, img_encoder="vit_base"),
                                   "path": b"x", "hook": _Evil(marker)}}, tmp_path / "ok.ckpt")
  ckpt = torch_checkpoint.load(str(tmp_path / "ok.ckpt"))
  for k, v in sd.items():
    np.testing.assert_array_equal(ckpt.tensors[k], v.float().numpy() if k == "bf" else v.numpy())
  assert ckpt.metadata["hyper_parameters"]["args"] == {"lr": 2e-5, "img_encoder": "vit_base"}
  assert ckpt.metadata["epoch"] == 2
  assert ckpt.metadata["hyper_parameters"]["hook"].startswith("<not loaded: ")
  assert [w for w, _ in ckpt.skipped] == ["['hyper_parameters']['hook']"]
  assert not os.path.exists(marker)
