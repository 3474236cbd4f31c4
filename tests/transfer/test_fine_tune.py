"""Full fine-tuning classification (`linear_probe` with `fine_tune=True`,
asg_jax/evaluators/fine_tune.py) on a hand-made COVIDx-layout fixture whose three classes
are separable by construction: fine-tuning reaches test AUROC = accuracy = 1; encoder lr 0
keeps the tower's parameters bit-identical while the head moves; 1 device == 8 devices on
the first step; the entry runs end to end through `run.run_transfer`."""
import os
import types

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import asg_jax.data.builders  # noqa: F401  (registers the builders)
from asg_jax import predict
from asg_jax.data.builders import downstream
from asg_jax.data.builders.cxr_covidx import THREE, CxrCovidx

SIZE = 24          # the tiny tower's input size (stored fixture: 32)
DATASET = "cxr_covidx/fixture"


def _film(rng, label):
  """32x32: dark noise, a bright (200) square whose SIDE says the class (8, 16, 24 px),
  at a random place (the builder's min-max stretch keeps the area)."""
  img = rng.integers(20, 40, (32, 32)).astype(np.uint8)
  side = (8, 16, 24)[label]
  r, c = rng.integers(0, 33 - side, 2)
  img[r:r + side, c:c + side] = 200
  return img


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  """cxr_covidx/fixture: 36 train-list images (one per patient; 20 % of the patients held
  out as validation) and 15 test images, the classes balanced."""
  manual = tmp_path_factory.mktemp("covidx_manual")
  rng = np.random.default_rng(0)
  for folder, n in (("train", 36), ("test", 15)):
    lines = []
    os.makedirs(manual / folder)
    for i in range(n):
      label = i % 3
      name = f"{folder}_{i}.png"
      Image.fromarray(_film(rng, label)).save(manual / folder / name)
      lines.append(f"{folder}p{i} {name} {THREE[label]} fixture")
    (manual / f"{folder}_COVIDx9A.txt").write_text("\n".join(lines) + "\n")
  data_dir = str(tmp_path_factory.mktemp("covidx_tfds"))
  b = CxrCovidx(config=downstream.DownstreamConfig(name="fixture", image_size=32,
                                                   validation_fraction=0.2, classes=THREE),
                data_dir=data_dir)
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return data_dir


def _tiny_config():
  """The demo's runlocal architecture with its ViT tower (1 layer, 24 px: 3x3 patches)."""
  from tests.helpers import demo_config
  return demo_config("runlocal", **{"model.tag_decoder.enabled": False, "data.image_size": SIZE,
                                    "model.image.name": "vit",
                                    "data.resize": SIZE})


def _evaluator(data_dir, **kw):
  from asg_jax.transfer.linear_probe import Evaluator
  args = dict(downstream=DATASET, data_dir=data_dir, fractions=(1.0,), seeds=(0,),
              fine_tune=True, lr=1e-2, encoder_lr=1e-3, batch_size=8, extract_batch_size=8,
              max_epochs=8, patience=8)
  args.update(kw)
  fns = types.SimpleNamespace(info=predict.ModelInfo.from_config(_tiny_config()))  # what it reads
  return Evaluator(fns, **args)


@pytest.fixture(scope="module")
def encoder_state(fixture):
  """The tiny tower's (jitted Flax) init, as a TransferState."""
  from asg_jax.transfer import config as transfer_config, inits, run, table
  trainer = _evaluator(fixture).fine_tune.trainer()
  v = jax.jit(lambda k, b: trainer.model.init({"params": k, "dropout": k}, b, train=False))(
      jax.random.PRNGKey(0), {k: np.zeros(s.shape, s.dtype) for k, s in trainer.dummy_batch.items()})
  return inits.TransferState({"image_encoder": v["params"]["image_encoder"]}, {})


@pytest.fixture(scope="module")
def tuned(fixture, encoder_state):
  """The fine-tune entry (8 devices) on the fixture: (evaluator, {metric: row})."""
  lp = _evaluator(fixture)
  return lp, {r["metric"]: r for r in lp.rows(encoder_state, "pretrained")}


@pytest.mark.slow
def test_separable_classes_fine_tune_to_auroc_one(fixture, tuned):
  lp, rows = tuned
  assert {r["protocol"] for r in rows.values()} == {"fine_tune"}
  assert rows["auroc"]["value"] == 1.0 and rows["accuracy"]["value"] == 1.0
  assert rows["accuracy"]["chance"] == pytest.approx(5 / 15)      # 5 test images per class
  for name in THREE:
    assert rows[f"auroc[{name}]"]["value"] == 1.0
  assert rows["auroc"]["fraction"] == 1.0 and rows["auroc"]["std"] is None     # one seed
  (run,) = lp.timing["runs"]
  b = tfds.builder(DATASET, data_dir=fixture)
  assert run["train_examples"] == len(downstream.fraction_ids(b, "train", 1.0)) == 28
  # early stopping kept the epoch of the lowest validation loss
  losses = [h["val_loss"] for h in lp.fine_tune.history[0]["history"]]
  assert run["best_epoch"] == int(np.argmin(losses))


@pytest.mark.slow
def test_one_device_equals_eight_and_encoder_lr_zero_freezes_the_tower(fixture, tuned,
                                                                       encoder_state):
  eight = tuned[0].fine_tune.history[0]["first_step"]
  # (no validation split: no eval program to compile)
  ev = _evaluator(fixture, max_epochs=1, num_devices=1, val_split="none").fine_tune
  mesh = ev.mesh()
  with jax.set_mesh(mesh):
    _, info = ev.fit(encoder_state, ev.fraction_rows(1.0), 0, mesh)
  for k in ("loss", "grad_norm"):
    assert info["first_step"][k] == pytest.approx(eight[k], rel=1e-5), k
  ev = _evaluator(fixture, max_epochs=1, num_devices=1, encoder_lr=0.0,
                  val_split="none").fine_tune
  mesh = ev.mesh()
  with jax.set_mesh(mesh):
    ts0, _ = ev.trainer().init_state(encoder_state, 0, mesh)
    head0 = jax.device_get(ts0.params["head"])
    v, info = ev.fit(encoder_state, ev.fraction_rows(1.0), 0, mesh)
  v = jax.device_get(v)
  assert info["steps_per_epoch"] == 4
  for a, b in zip(jax.tree.leaves(v["params"]["image_encoder"]),
                  jax.tree.leaves(encoder_state.params["image_encoder"])):
    np.testing.assert_array_equal(a, b)          # no update, no weight decay
  assert not np.allclose(v["params"]["head"]["kernel"], head0["kernel"])


@pytest.mark.slow
def test_fine_tune_entry_runs_through_run_transfer(fixture, tiny_pretrained, tmp_path):
  from asg_jax.transfer import config as transfer_config, inits, run, table
  c = transfer_config.base()
  c.data_dir = fixture
  c.inits = ("pretrained",)     # (a random init compiles the whole model's init once more)
  transfer_config.add(c, "ft", type="linear_probe", fine_tune=True, encoder_lr=1e-5,
                      downstream=DATASET, fractions=(1.0,), seeds=(0,), max_epochs=2,
                      batch_size=8, extract_batch_size=8)
  results = run.run_transfer("", c, out_dir=str(tmp_path), pretrained=tiny_pretrained)
  got = {(r["protocol"], r["metric"], r["init"]) for r in results["rows"]}
  assert got == {("fine_tune", m, "pretrained") for m in ("auroc", "accuracy", *(f"auroc[{n}]" for n in THREE))}
  for r in results["rows"]:
    assert 0.0 <= r["value"] <= 1.0 and r["published"] is None and r["fraction"] == 1.0
  assert [run["epochs"] for run in results["timing"]["pretrained/ft"]["runs"]] == [2]
  md = (tmp_path / table.RESULTS_MD).read_text()
  assert f"| {DATASET} | fine_tune | auroc | 100 % |" in md
