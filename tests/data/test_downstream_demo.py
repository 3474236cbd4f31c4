"""The downstream demo stand-ins: real CheXpert / SIIM layouts, labels and masks that follow
what is drawn, built unchanged by cxr_chexpert/demo and cxr_siim/demo; folder policy."""
import csv
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from asg_jax.data.demo import downstream as downstream_demo
from asg_jax.data.builders import cxr_chexpert, downstream


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("ddemo") / "out")
  truth = downstream_demo.generate(out, num_images=60, num_siim=24, seed=3)
  builders = downstream_demo.prepare(str(tmp_path_factory.mktemp("ddata")), out, 60, 24, 3)
  ex = {name: {s: {e["image_id"].decode(): e for e in tfds.as_numpy(b.as_dataset(split=s, shuffle_files=False))}
               for s in b.info.splits} for name, b in builders.items()}
  return out, truth, builders, ex


def test_chexpert_standin_layout_and_labels(demo):
  out, truth, builders, ex = demo
  root = os.path.join(out, "chexpert", "CheXpert-v1.0-small")
  with open(os.path.join(root, "train.csv")) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == downstream_demo.HEADER
  cells = {r[c] for r in rows for c in downstream_demo.HEADER[5:]}
  assert cells == {"", "0.0", "1.0", "-1.0"}
  assert any(r["Frontal/Lateral"] == "Lateral" for r in rows)
  b = builders["cxr_chexpert/demo"]
  assert set(b.info.splits) == {"train", "validation", "test"}
  built = {**ex["cxr_chexpert/demo"]["train"], **ex["cxr_chexpert/demo"]["validation"],
           **ex["cxr_chexpert/demo"]["test"], **ex["cxr_chexpert/demo_5x200"]["test"]}
  frontal = [r for r in rows if r["Frontal/Lateral"] == "Frontal"]
  assert len(ex["cxr_chexpert/demo"]["train"]) + len(ex["cxr_chexpert/demo"]["validation"]) \
      + len(ex["cxr_chexpert/demo_5x200"]["test"]) == len(frontal)
  for path, obs in truth["chexpert"].items():
    e = ex["cxr_chexpert/demo"]["test"].get(path) or ex["cxr_chexpert/demo"]["train"].get(path) \
        or ex["cxr_chexpert/demo"]["validation"].get(path)
    if e is not None:
      np.testing.assert_array_equal(e["labels"], cxr_chexpert.competition_labels(obs))
  assert all(max(e["image"].shape[:2]) == 128 for e in built.values())


def test_chexpert_standin_follows_drawing():
  """With the same seed, a film drawn with one finding differs from the film without it
  exactly by that finding (demo/drawing.py draws findings last): present findings change it,
  uncertain U-ones ones change it less (half contrast), uncertain U-zeros ones not at all."""
  def draw(labels):
    return downstream_demo.draw_chexpert(np.random.default_rng(7), 160, 140, labels).astype(float)
  none = draw({})
  for task in downstream.CHEXPERT_5:
    present = np.abs(draw({task: 1.0}) - none)
    uncertain = np.abs(draw({task: -1.0}) - none)
    negative = np.abs(draw({task: 0.0}) - none)
    assert present.sum() > 0.4 * 255 * 50, task     # at least ~50 pixels' worth of contrast
    assert negative.sum() == 0, task
    if task in downstream_demo.U_ONES:
      assert 0 < uncertain.sum() < present.sum(), task
    else:
      assert uncertain.sum() == 0, task


def test_siim_standin_masks(demo):
  out, truth, builders, ex = demo
  with open(os.path.join(out, "siim", "train-rle.csv")) as f:
    lines = f.read().splitlines()
  assert lines[0] == "ImageId, EncodedPixels"
  ids = [l.split(",")[0] for l in lines[1:]]
  assert len(set(ids)) == len(truth["siim"])
  built = {k: v for s in ex["cxr_siim/demo"].values() for k, v in s.items()}
  assert set(built) == set(truth["siim"])
  for image_id, mask in truth["siim"].items():
    e = built[image_id]
    np.testing.assert_array_equal(e["mask"][..., 0], mask)
    assert e["labels"].tolist() == [float(mask.any())]
    if mask.any():   # the gas is dark (a clavicle drawn over it may cross it)
      img = e["image"][..., 0].astype(np.float64)
      assert np.median(img[mask > 0]) < 0.5 * np.median(img)
  assert any(m.any() for m in truth["siim"].values()) and not all(m.any() for m in truth["siim"].values())


def test_folder_policy(tmp_path):
  user = tmp_path / "mine"
  user.mkdir()
  (user / "notes.txt").write_text("keep")
  with pytest.raises(downstream_demo.FolderRefused, match="not empty"):
    downstream_demo.generate(str(user), 4, 2, 0)
  assert os.listdir(user) == ["notes.txt"]
  out = tmp_path / "demo"
  assert downstream_demo.generate(str(out), 4, 2, 0)["siim"]
  files = sorted(str(p) for p in out.rglob("*"))
  assert downstream_demo.generate(str(out), 4, 2, 0) == {"chexpert": {}, "siim": {}}   # already there
  with pytest.raises(downstream_demo.FolderRefused, match="another"):
    downstream_demo.generate(str(out), 4, 2, 1)
  assert sorted(str(p) for p in out.rglob("*")) == files   # nothing deleted or added


def test_siim_films_do_not_depend_on_the_chexpert_size(tmp_path):
  """The SIIM stand-in has its own random stream: a larger CheXpert stand-in (the demo's
  num_images) leaves the segmentation films and masks unchanged; folder names differ."""
  a = downstream_demo.generate(str(tmp_path / "a"), num_images=8, num_siim=6, seed=0)["siim"]
  b = downstream_demo.generate(str(tmp_path / "b"), num_images=30, num_siim=6, seed=0)["siim"]
  assert list(a) == list(b) and len(a) == 6
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])
  with open(tmp_path / "a" / "siim" / "train-rle.csv") as fa, \
       open(tmp_path / "b" / "siim" / "train-rle.csv") as fb:
    assert fa.read() == fb.read()
  names = {downstream_demo.folder_name(n, 6, 0) for n in (8, 30)}
  assert len(names) == 2 and all(f"_v{downstream_demo.DRAWING_VERSION}" in n for n in names)
