"""`python -m asg_jax.convert` end to end: an ASG checkpoint (the demo runlocal ViT
architecture, PyTorch re-creation with random weights, Lightning file) becomes a workdir that
`Pretrained.from_workdir` loads with the peer's embeddings, `python -m asg_jax.evaluate
--config.init=<workdir>` evaluates (configs/transfer/demo.py:runlocal), and training
continues from (10 steps of pre-training on the demo data)."""
import json
import os

import numpy as np
import pytest

from asg_jax import convert, evaluate, lineage, train
from asg_jax.inference import Pretrained
from tests.helpers import FakeData, demo_config

torch = pytest.importorskip("torch", reason="torch (the test extra) builds the checkpoint")
transformers = pytest.importorskip("transformers")
from tests.models import torch_zoo  # noqa: E402  pylint: disable=wrong-import-position

torch_zoo.import_torchvision()
from timm.models import vision_transformer  # noqa: E402  pylint: disable=wrong-import-position

RECIPE = "configs/demo.py:runlocal,image=vit"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _asg_checkpoint(folder):
  """An ASG Lightning checkpoint of the demo's runlocal ViT sizes + its BERT vocab.txt."""
  c = demo_config("runlocal,image=vit")
  im, tx = c.model.image, c.model.text
  torch.manual_seed(0)
  vit = vision_transformer.VisionTransformer(
      img_size=c.data.image_size, patch_size=im.patch_size, embed_dim=im.hidden_size,
      depth=im.num_layers, num_heads=im.num_heads, mlp_ratio=im.mlp_dim / im.hidden_size,
      num_classes=0)

  def bert():
    return transformers.BertModel(transformers.BertConfig(
        vocab_size=tx.vocab_size, hidden_size=tx.hidden_size,
        num_hidden_layers=tx.num_hidden_layers, num_attention_heads=tx.num_attention_heads,
        intermediate_size=tx.intermediate_size, max_position_embeddings=tx.max_position_embeddings,
        attn_implementation="eager"), add_pooling_layer=False)
  dims = (im.hidden_size, im.hidden_size, c.model.head_hidden, c.model.embed_dim)
  td = c.model.tag_decoder
  peer = torch_zoo.randomise(torch_zoo.Peer(
      torch_zoo.ImageEncoder(vit, True, dims),
      torch_zoo.TextEncoder(bert(), c.model.head_hidden, c.model.embed_dim),
      torch_zoo.IRL(td.d_model, td.num_heads, td.mlp_dim, td.num_layers), bert()))
  os.makedirs(folder / "bert")
  letters = [chr(ord("a") + i) for i in range(26)]
  words = SPECIAL + letters + ["##" + x for x in letters] + [
      "no", "pleural", "effusion", "opacity", "the", "lung", "left", "right", "is", "of"]
  words += [f"tok{i}" for i in range(tx.vocab_size - len(words))]
  (folder / "bert" / "vocab.txt").write_text("\n".join(words) + "\n")
  torch_zoo.lightning_save(peer, folder / "asg.ckpt", {"img_encoder": "vit_base", "emb_dim": 128})
  return peer


@pytest.mark.slow
def test_asg_checkpoint_to_workdir_evaluate_and_continue(tmp_path, capsys, monkeypatch):
  peer = _asg_checkpoint(tmp_path)
  out = tmp_path / "workdir"
  argv = ["convert", "--from", "asg", "--checkpoint", str(tmp_path / "asg.ckpt"), "--tokenizer",
          str(tmp_path / "bert"), "--config", RECIPE, "--out", str(out)]
  assert convert.main(argv) == 0
  printed = capsys.readouterr().out
  assert "carried      tag_decoder <- irl.*" in printed and "Continue:" in printed
  record = json.loads((out / "converted_from.json").read_text())
  assert record["metadata"]["hyper_parameters"]["img_encoder"] == "vit_base"
  assert convert.main(argv) == 2                        # never over an existing model

  # the workdir's model is the peer's: embeddings of the same preprocessed image
  model = Pretrained.from_workdir(str(out))
  image = np.random.default_rng(0).integers(0, 256, size=(150, 130), dtype=np.uint8)
  x = model.preprocess_images([image])
  ours = model.image_outputs([image])
  with torch.no_grad():
    feat, _ = peer.img_encoder_q(torch_zoo.nchw(x))
    emb = torch.nn.functional.normalize(peer.img_encoder_q.global_embed(feat), dim=-1).numpy()
  np.testing.assert_allclose(ours["image_emb"], emb, atol=1e-4, rtol=1e-4)
  # the frozen query tower came along: new class names embed (checked against the saved 40)
  assert model.tag_probabilities([image], ["pleural effusion", "left lung opacity"]).shape == (1, 2)

  # python -m asg_jax.evaluate --config.init=<workdir> (the demo runlocal transfer recipe;
  # ml_collections reads the --config.<key> overrides from sys.argv)
  argv = ["evaluate", "--config", "configs/transfer/demo.py:runlocal", f"--config.init={out}",
          "--config.demo.num_images=60", "--config.evals.probe.max_epochs=3",
          "--config.evals.probe.seeds=(0,)", "--config.inits=('pretrained',)"]
  monkeypatch.setattr("sys.argv", argv)
  assert evaluate.main(argv) == 0
  rows = json.loads((out / "transfer" / "results.json").read_text())["rows"]
  assert {r["protocol"] for r in rows} >= {"linear_probe", "zero_shot_prompt", "zero_shot_tags",
                                            "retrieval"}

  # continued pre-training: 10 steps from the converted step 0, as `asg_jax.main --config
  # <recipe> --workdir <workdir> --config.data.tokenizer=... --config.model.text.pretrained=...`
  # runs them (lineage: a step-0 workdir is new; the train loop on in-memory batches)
  config = demo_config("runlocal,image=vit", evals=(), **{
      "data.tokenizer": record["tokenizer"], "model.text.pretrained": record["query_tower"],
      "train.num_steps": 10, "train.checkpoint_every": 10, "eval.every_steps": 10,
      "train.num_devices": 1})
  assert lineage.check(config, str(out)).action == "new"
  summary = train.train_and_evaluate(config, str(out), data=FakeData(config))
  assert summary["steps"] == 10
  after = Pretrained.from_workdir(str(out), checkpoint="latest").variables["params"]
  cls = np.asarray(after["image_encoder"]["embeddings"]["cls_token"])[0, 0]
  start = peer.img_encoder_q.model.cls_token.detach().numpy()[0, 0]
  assert 0 < np.abs(cls - start).max() < 0.05           # moved a little, from the peer's
