"""The segmentation evaluator: SIIM and RSNA fixtures (hand-made, in the exact real layouts)
run end to end through `python -m asg_jax.evaluate` (runlocal) on a tiny workdir, with
random-init and ImageNet-init rows; masks stay aligned with the images through loading;
frozen encoders do not move; 1 device == 8 devices."""
import json
import os
import types

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import asg_jax.data.builders  # noqa: F401  (registers the builders)
from asg_jax.data.builders import downstream
from asg_jax.data.builders.cxr_rsna import CxrRsna
from asg_jax.data.builders.cxr_siim import CxrSiim
from asg_jax import predict
from asg_jax.transfer import inits, table
from asg_jax.transfer import segmentation as seg_eval
from tests.helpers import write_dicom

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
SIZE = 24          # the tiny tower's input size (stored fixtures: 32)


def _film(rng, mask):
  """A 32x32 8-bit film: dark noise, bright (200) exactly on the mask."""
  return np.where(mask > 0, 200, rng.integers(20, 40, mask.shape)).astype(np.uint8)


def _l_mask(i, h=32, w=32):
  """An asymmetric L whose place depends on i."""
  m = np.zeros((h, w), np.uint8)
  r, c = 4 + i % 5, 3 + (i * 3) % 7
  m[r:r + 14, c:c + 4] = 1
  m[r + 10:r + 14, c:c + 12] = 1
  return m


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
  """cxr_siim/fixture (16 images, one with two rows) and cxr_rsna/fixture (14 patients)."""
  root = tmp_path_factory.mktemp("seg_fixtures")
  rng = np.random.default_rng(0)
  siim = root / "siim"
  lines = ["ImageId, EncodedPixels"]                  # the real header, leading space
  truth = {}
  for i in range(16):
    image_id = f"1.2.276.0.7230010.3.1.4.8323329.{500 + i}.1517875163.{100000 + i}"
    mask = _l_mask(i) if i % 2 == 0 else np.zeros((32, 32), np.uint8)
    if i == 4:                                        # two pneumothoraces: two rows
      second = np.zeros_like(mask)
      second[24:29, 22:30] = 1
      lines += [f"{image_id},{downstream.rle_encode(mask)}",
                f"{image_id},{downstream.rle_encode(second)}"]
      mask = mask | second
    else:
      lines.append(f"{image_id},{downstream.rle_encode(mask)}")
    truth[image_id] = mask
    write_dicom(str(siim / "dicom-images-train" / f"s{i}" / f"r{i}" / f"{image_id}.dcm"),
                _film(rng, mask), f"siim-patient-{i}")
  (siim / "train-rle.csv").write_text("\n".join(lines) + "\n")
  rsna = root / "rsna"
  rows = ["patientId,x,y,width,height,Target"]
  for i in range(14):
    pid = f"{i:08x}-1c29-4943-afc9-b6754be640eb"
    mask = np.zeros((32, 32), np.uint8)
    if i % 2 == 0:
      boxes = [(3 + i % 4, 5, 8, 12)] + ([(20, 14, 7, 9)] if i % 4 == 0 else [])
      for x, y, w, h in boxes:
        rows.append(f"{pid},{x}.0,{y}.0,{w}.0,{h}.0,1")
        mask[y:y + h, x:x + w] = 1
    else:
      rows.append(f"{pid},,,,,0")
    write_dicom(str(rsna / "stage_2_train_images" / f"{pid}.dcm"), _film(rng, mask), pid)
  (rsna / "stage_2_train_labels.csv").write_text("\n".join(rows) + "\n")
  data_dir = str(root / "tfds")
  for cls, manual in ((CxrSiim, siim), (CxrRsna, rsna)):
    b = cls(config=downstream.DownstreamConfig(name="fixture", image_size=32), data_dir=data_dir)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  return data_dir, truth


def _tiny_config():
  from tests.helpers import demo_config
  return demo_config("runlocal", **{"model.tag_decoder.enabled": False, "data.image_size": SIZE,
                                    "data.resize": SIZE})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny pre-trained workdir as training writes it (config, tokenizer, best checkpoint),
  its encoder drawn with NumPy (no compiled init)."""
  from tests.helpers import numpy_workdir
  config = _tiny_config()
  path = tmp_path_factory.mktemp("seg_workdir")
  variables = numpy_workdir(path, config, ["no acute cardiopulmonary process",
                                           "small left pneumothorax"], 40)
  return str(path), config, variables


def _imagenet_checkpoint(path, encoder_params, encoder_stats):
  """A stand-in ImageNet checkpoint: the given tower values as a Hugging Face ResNetModel
  model.safetensors (the layout `checkpoint_convert.load_resnet` reads)."""
  from flax import traverse_util
  from safetensors.numpy import save_file
  from asg_jax.models import checkpoint_convert
  tensors = {}
  for collection, tree in (("params", encoder_params), ("batch_stats", encoder_stats)):
    for p, leaf in traverse_util.flatten_dict(tree).items():
      key, _ = checkpoint_convert.hf_key(p, collection)
      a = np.asarray(leaf)
      a = np.transpose(a, (3, 2, 0, 1)) if a.ndim == 4 else a    # Flax HWIO -> torch OIHW
      tensors["resnet." + key] = np.ascontiguousarray(a, np.float32)
  os.makedirs(path, exist_ok=True)
  save_file(tensors, os.path.join(path, "model.safetensors"))
  return path


def _run_cli(monkeypatch, workdir, config, data_dir, dataset, out, *extra):
  """`python -m asg_jax.evaluate ...` in this process (config_flags reads sys.argv)."""
  from asg_jax import evaluate
  argv = ["evaluate", f"--workdir={workdir}", f"--config={os.path.join(REPO, 'configs', 'transfer', config)}:runlocal",
          f"--config.data_dir={data_dir}", f"--config.evals.seg.downstream={dataset}",
          f"--out={out}", "--config.evals.seg.num_devices=1", *extra]
  monkeypatch.setattr("sys.argv", argv)
  assert evaluate.main(argv) == 0
  with open(os.path.join(out, table.RESULTS_JSON)) as f:
    return json.load(f)


@pytest.mark.slow
def test_siim_fixture_end_to_end_through_the_cli(fixtures, workdir, tmp_path, monkeypatch):
  data_dir, _ = fixtures
  wd, _, variables = workdir
  rng = np.random.default_rng(9)
  enc = jax.tree.map(lambda a: (a + rng.normal(0, 0.05, a.shape)).astype(np.float32),
                     variables["params"]["image_encoder"])
  ckpt = _imagenet_checkpoint(str(tmp_path / "imagenet"), enc, variables["batch_stats"]["image_encoder"])
  out = str(tmp_path / "out")
  results = _run_cli(monkeypatch, wd, "siim.py", data_dir, "cxr_siim/fixture", out, f"--config.imagenet={ckpt}")
  rows = [r for r in results["rows"] if r["protocol"] == "segmentation"]
  b = tfds.builder("cxr_siim/fixture", data_dir=data_dir)
  index = downstream.read_index(b)
  test_labels = np.asarray(index["test"]["labels"])[:, 0]
  for init in ("pretrained", "random", "imagenet"):
    for frac in (0.01, 0.1, 1.0):
      (r,) = [r for r in rows if r["init"] == init and r["fraction"] == frac and r["metric"] == "dice"]
      assert 0.0 <= r["value"] <= 1.0 and r["published"] is None     # a fixture: no paper number
      assert r["chance"] == pytest.approx(float(np.mean(test_labels == 0)))
    assert os.path.isfile(os.path.join(out, f"segmentation_cxr_siim_fixture_{init}.png"))
  # the training sets: SIIM's balanced set (positives + as many negatives), then the fraction
  runs = results["timing"]["pretrained/seg"]["runs"]
  balanced = downstream.balanced_ids(b, "train")
  pos = [i for i, l in zip(index["train"]["image_id"], index["train"]["labels"]) if l[0] > 0.5]
  neg = len(index["train"]["image_id"]) - len(pos)
  assert set(pos) <= set(balanced) and len(balanced) == len(pos) + min(neg, len(pos))
  assert [r["train_examples"] for r in runs] == [
      len(downstream.select_fraction(balanced, f, 42)) for f in (0.01, 0.1, 1.0)]
  md = open(os.path.join(out, "results.md")).read()
  assert "| cxr_siim/fixture | segmentation | dice | 100 % |" in md and "imagenet" in md


@pytest.mark.slow
def test_rsna_fixture_end_to_end_through_the_cli(fixtures, workdir, tmp_path, monkeypatch):
  data_dir, _ = fixtures
  wd, _, _ = workdir
  out = str(tmp_path / "out")
  results = _run_cli(monkeypatch, wd, "rsna_seg.py", data_dir, "cxr_rsna/fixture", out)
  dice = {(r["init"], r["fraction"]) for r in results["rows"] if r["metric"] == "dice"}
  assert dice == {(i, f) for i in ("pretrained", "random") for f in (0.01, 0.1, 1.0)}
  b = tfds.builder("cxr_rsna/fixture", data_dir=data_dir)
  runs = results["timing"]["random/seg"]["runs"]
  assert [r["train_examples"] for r in runs] == [len(downstream.fraction_ids(b, "train", f))
                                                 for f in (0.01, 0.1, 1.0)]


def test_loaded_masks_stay_aligned_with_the_images(fixtures):
  data_dir, truth = fixtures
  b = tfds.builder("cxr_siim/fixture", data_dir=data_dir)
  # stored 32 -> no resampling: the mask is exactly where the film is bright, and is the truth
  same = seg_eval.load_split(b, "train", image_size=32)
  # (films with a lesion: the builder's min-max stretch keeps the noise dark; empty films
  # are pure stretched noise)
  positive = np.asarray([truth[i].any() for i in same["image_id"]])
  assert positive.sum() >= 3
  for image, mask, image_id in zip(same["image"], same["mask"], same["image_id"]):
    np.testing.assert_array_equal(mask[..., 0], truth[image_id])
    if truth[image_id].any():
      np.testing.assert_array_equal(image[..., 0] > 115, mask[..., 0] > 0)
  # resampled (32 -> 28) and centre-cropped (24): image and mask moved by the same geometry
  moved = seg_eval.load_split(b, "train", image_size=24, resize=28)
  assert moved["image"].shape[1:] == (24, 24, 1) and moved["mask"].shape[1:] == (24, 24, 1)
  img, msk = moved["image"][positive, ..., 0] > 115, moved["mask"][positive, ..., 0] > 0
  assert np.mean(img == msk) > 0.99 and msk.sum() > 0
  assert np.mean(img == msk[:, :, ::-1]) < 0.97   # the L is asymmetric: a mirrored mask disagrees
  assert moved["mask"][~positive].sum() == 0


def _evaluator(data_dir, num_devices, **kw):
  from asg_jax.transfer.segmentation import Evaluator, protocol
  config = _tiny_config()
  args = dict(protocol(8, runlocal=True), fractions=(1.0,), max_epochs=1, figures=0,
              num_devices=num_devices)
  args.update(kw)
  info = types.SimpleNamespace(info=predict.ModelInfo.from_config(config))   # what it reads
  return Evaluator(info, downstream="cxr_siim/fixture", data_dir=data_dir, **args)


@pytest.mark.slow
def test_one_device_equals_eight_and_the_frozen_encoder_does_not_move(fixtures, workdir):
  data_dir, _ = fixtures
  _, _, variables = workdir
  state = inits.TransferState(variables["params"], variables["batch_stats"])
  out, evs = {}, {}
  for n in (1, 8):
    evs[n] = ev = _evaluator(data_dir, n, val_split="none")   # no validation: a program less
    mesh = ev.mesh()
    with jax.set_mesh(mesh):
      v, info = ev.fit(state, np.arange(8), seed=0, mesh=mesh)
    out[n] = (jax.device_get(v), info)
  (v1, i1), (v8, i8) = out[1], out[8]
  # the step's measurements (forward over the sharded batch, BatchNorm over the global
  # batch, the gradient) agree to float precision
  for k in ("loss", "focal", "soft_dice", "dice", "grad_norm"):
    # float32 sums in another order (8 shards): ~1e-5 relative on the gradient norm
    assert i1["first_step"][k] == pytest.approx(i8["first_step"][k], rel=3e-5, abs=1e-7), k
  assert i1["history"][0]["train_loss"] == pytest.approx(i8["history"][0]["train_loss"], rel=1e-5)
  # after AdamW updates (a near-zero gradient's element moves by up to lr whatever its
  # sign: float noise is amplified), the states still agree closely
  for a, b in zip(jax.tree.leaves(v1), jax.tree.leaves(v8)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1.1e-3)
  for a, b in zip(jax.tree.leaves(v1["params"]["image_encoder"]),
                  jax.tree.leaves(variables["params"]["image_encoder"])):
    np.testing.assert_array_equal(a, b)       # frozen: no update, no weight decay
  for a, b in zip(jax.tree.leaves(v1["batch_stats"]["image_encoder"]),
                  jax.tree.leaves(variables["batch_stats"]["image_encoder"])):
    np.testing.assert_array_equal(a, b)       # frozen: BatchNorm statistics kept
  mesh = evs[1].mesh()
  with jax.set_mesh(mesh):
    dec0 = evs[1].init_state(state, 0, mesh)[0]     # the decoder did train
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(dec0.params["decoder"])),
                                                   jax.tree.leaves(v1["params"]["decoder"])))


def test_fine_tuning_switch_lets_the_optimizer_move_the_encoder(fixtures):
  data_dir, _ = fixtures
  params = {"image_encoder": {"w": np.ones(3, np.float32)}, "decoder": {"w": np.ones(2, np.float32)}}
  grads = jax.tree.map(np.ones_like, params)
  for freeze, encoder_moves in ((True, False), (False, True)):
    ev = _evaluator(data_dir, 1, freeze_encoder=freeze)
    assert ev.model.freeze_encoder == freeze
    tx = ev.optimizer()
    updates, _ = tx.update(grads, tx.init(params), params)
    assert bool(np.any(np.asarray(updates["image_encoder"]["w"]) != 0)) == encoder_moves
    assert np.all(np.asarray(updates["decoder"]["w"]) < 0)      # AdamW step + weight decay
