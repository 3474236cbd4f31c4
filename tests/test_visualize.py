"""asg_jax.visualize and asg_jax.figures: heat maps land on the right original pixels (the
pipeline's own TF crop is the oracle); the CLI writes the four figures of a trained workdir as
PNGs with content."""
import json

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from asg_jax import train, visualize
from asg_jax.data import geometry
from asg_jax.figures import curves, drawing, examples as examples_lib, grounding
from tests.helpers import demo_config

RESIZE, SIZE, GRID = 128, 112, (7, 7)


def push_through_crop(mask: np.ndarray) -> np.ndarray:
  """A {0, 1} mask on the original image, through the pipeline's eval crop: `[S, S]` 0..255."""
  image = tf.constant((np.asarray(mask) * 255).astype(np.uint8)[..., None])
  crop, _, _ = geometry.crop(image, tf.zeros((0, 4)), resize=RESIZE, image_size=SIZE,
                             train=False)
  return crop.numpy()[..., 0].astype(np.float64)


def cell_mask(i: int, j: int, margin: float) -> np.ndarray:
  """`[S, S]` crop pixels whose centre is inside cell (i, j) shrunk (margin > 0) or grown."""
  c = (np.arange(SIZE) + 0.5) * GRID[0] / SIZE
  rows = (c >= i + margin) & (c <= i + 1 - margin)
  cols = (c >= j + margin) & (c <= j + 1 - margin)
  return rows[:, None] & cols[None, :]


@pytest.mark.parametrize("shape", [(300, 200), (90, 160), (128, 100), (64, 64)])
def test_a_hot_patch_lands_on_the_original_pixels_the_pipeline_crops_into_it(shape):
  h, w = shape
  geo = geometry.crop_geometry(h, w, RESIZE, SIZE)
  image_area = push_through_crop(np.ones(shape)) > 127          # the image inside the crop
  for i, j in [(0, 0), (3, 5), (6, 2), (5, 6)]:
    heat = np.zeros(GRID)
    heat[i, j] = 1.0
    on_original = grounding.heatmap_to_original(heat, geo)
    assert on_original.shape == shape
    hot = push_through_crop(on_original == 1.0) > 127
    inner = cell_mask(i, j, 0.15) & image_area                  # 0.15 cell = 2.4 crop px
    assert hot[inner].all(), (shape, i, j)
    assert not hot[~cell_mask(i, j, -0.15)].any(), (shape, i, j)
  # pixels outside the crop are NaN, and only those: cropped away by the pipeline
  nan = np.isnan(grounding.heatmap_to_original(np.ones(GRID), geo))
  assert push_through_crop(nan)[2:-2, 2:-2].max() < 128
  assert (push_through_crop(~nan) > 127)[image_area].mean() > 0.97


def test_cell_centres_and_the_crop_square_map_like_the_pipelines_boxes():
  h, w = 300, 200
  geo = geometry.crop_geometry(h, w, RESIZE, SIZE)
  for index in (0, 17, 48):
    x, y = grounding.cell_center_in_original(index, GRID, geo)
    box = tf.constant([[x - 1, y - 1, x + 1, y + 1]], tf.float32)
    _, moved, keep = geometry.crop(tf.zeros((h, w, 1), tf.uint8), box, resize=RESIZE,
                                   image_size=SIZE, train=False)
    r, c = divmod(index, GRID[1])
    centre = moved.numpy()[0].reshape(2, 2).mean(0)
    assert keep.numpy()[0]
    np.testing.assert_allclose(centre, [(c + 0.5) * 16, (r + 0.5) * 16], atol=1e-3)
  # the crop square, moved by the pipeline's box arithmetic, is the whole crop [0, S]
  _, moved, _ = geometry.crop(tf.zeros((h, w, 1), tf.uint8),
                              tf.constant([geo.crop_box()], tf.float32), resize=RESIZE,
                              image_size=SIZE, train=False)
  np.testing.assert_allclose(moved.numpy()[0], [0, 0, SIZE, SIZE], atol=1e-3)


def test_smooth_maps_interpolate_between_cell_centres():
  geo = geometry.crop_geometry(150, 150, RESIZE, SIZE)
  ramp = np.tile(np.arange(GRID[1], dtype=float), (GRID[0], 1))   # value = column index
  smooth = grounding.heatmap_to_original(ramp, geo, smooth=True)
  u, _ = geo.to_crop(np.arange(150) + 0.5, np.zeros(150))
  expected = np.clip(u * GRID[1] / SIZE - 0.5, 0, GRID[1] - 1)
  row = smooth[75]
  ok = ~np.isnan(row)
  np.testing.assert_allclose(row[ok], expected[ok], atol=1e-9)


def test_classes_of_chexpert_rows():
  from asg_jax.data.reports import CHEXPERT
  row = lambda *names: np.array([1.0 if n in names else np.nan for n in CHEXPERT])  # noqa: E731
  assert examples_lib.class_of(row()) == "No Finding"
  assert examples_lib.class_of(row("Edema", "Support Devices")) == "Edema"
  assert examples_lib.class_of(row("Edema", "Pleural Effusion")) == "Multiple"
  assert examples_lib.same_findings(row("Edema", "Support Devices"), row("Edema"))
  assert not examples_lib.same_findings(row("Edema"), row("Edema", "Pleural Effusion"))


# ----------------------------------------------------------------------------- a trained workdir
@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """2 steps on a 40-study generated demo, built by the real builder (the same train-step
  program as tests/test_inference.py's fixture, so a suite run compiles it once)."""
  config = demo_config(evals=["loss"], **{
      "train.num_steps": 2, "train.checkpoint_every": 2, "eval.every_steps": 2,
      "train.num_devices": 1, "data.demo_num_studies": 40})
  path = tmp_path_factory.mktemp("visualize")
  train.train_and_evaluate(config, str(path))
  return path


def assert_png_with_content(path, min_size=(400, 300)):
  with Image.open(path) as im:
    assert im.format == "PNG"
    assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1], im.size
    rgb = np.asarray(im.convert("RGB"), np.float64)
  grey = rgb.mean(-1)
  assert grey.std() > 10                                 # not blank: a blank figure has 0
  assert (np.abs(grey - np.median(grey)) > 40).mean() > 0.005
  return rgb


def saturated_fraction(rgb, threshold=100):
  hsv = np.asarray(Image.fromarray(rgb.astype(np.uint8)).convert("HSV"), np.float64)
  return float((hsv[..., 1] > threshold).mean())


def colour_fraction(rgb, hex_colour, tol=30):
  target = np.array([int(hex_colour[k:k + 2], 16) for k in (1, 3, 5)], np.float64)
  return float((np.abs(rgb - target).max(-1) < tol).mean())


@pytest.mark.slow
def test_cli_writes_the_four_figures(workdir, tmp_path, capsys):
  out = tmp_path / "figures"
  written = visualize.main(["--workdir", str(workdir), "--out", str(out), "--split", "train",
                            "--max_examples", "24", "--verbosity", "0"])
  assert sorted(written) == sorted(visualize.FIGURE_NAMES)
  printed = capsys.readouterr().out
  for name in visualize.FIGURE_NAMES:
    assert str(out / f"{name}.png") in printed
  grounding = assert_png_with_content(out / "grounding.png")
  assert saturated_fraction(grounding, 128) > 0.05       # the coloured heat maps
  retrieval = assert_png_with_content(out / "retrieval.png")
  frames = sum(colour_fraction(retrieval, c) for c in
               (drawing.CORRECT, drawing.SAME_CLASS, drawing.WRONG))
  assert frames > 0.01                                   # correct / same class / wrong frames
  tsne = assert_png_with_content(out / "tsne.png", min_size=(600, 300))
  assert saturated_fraction(tsne) > 0.0005               # coloured points
  curves_png = assert_png_with_content(out / "curves.png")
  assert saturated_fraction(curves_png) > 0.0002             # coloured lines


@pytest.mark.slow
def test_curves_read_back_what_training_wrote(workdir):
  scalars = curves.read_scalars(str(workdir))
  steps, loss = scalars["train/loss"]
  assert steps[-1] == 2 and np.all(np.isfinite(loss))
  summary = json.loads((workdir / "summary.json").read_text())
  steps, val = scalars["val/val_loss"]
  assert list(steps) == [2]
  np.testing.assert_allclose(val[-1], summary["metrics"]["val_loss"], rtol=1e-6)


@pytest.mark.slow
def test_phrases_on_given_images(workdir, tmp_path):
  from asg_jax import inference
  from asg_jax.data.demo import drawing as demo_drawing
  model = inference.Pretrained.from_workdir(str(workdir))
  pixels, _ = demo_drawing._draw_frontal(np.random.default_rng(0), 180, 150, [])  # pylint: disable=protected-access
  Image.fromarray(pixels).save(tmp_path / "film.png")
  image = examples_lib.read_image(str(tmp_path / "film.png"))
  np.testing.assert_array_equal(image, pixels)
  fig = grounding.phrase_figure(model, [image, image[:, :100]], ["pleural effusion", "heart"])
  rgb = assert_png_with_content(drawing.save(fig, str(tmp_path / "g.png")))
  assert rgb.shape[0] > rgb.shape[1] * 0.6               # two rows of three panels
  with pytest.raises(FileNotFoundError, match="missing.png"):
    examples_lib.read_image(str(tmp_path / "missing.png"))


@pytest.mark.slow
def test_grounding_is_skipped_with_a_reason_without_boxes_of_their_own(workdir, tmp_path):
  """Atlas-only or region-less examples (own data without a boxes column): no numpy reshape
  error, the grounding figure is skipped with one line; the others are still drawn."""
  from asg_jax import inference
  model = inference.Pretrained.from_workdir(str(workdir))
  examples = examples_lib.load_examples(str(workdir), split="train", max_examples=12)
  assert {e["region_source"] for e in examples} == {"imagenome"}    # the demo's own boxes
  assert grounding.pick_grounding(examples)
  atlas = [dict(e, region_source="atlas") for e in examples]
  no_regions = [dict(e, region_ids=np.zeros((0,), np.int32),
                     region_boxes=np.zeros((0, 4), np.float32),
                     region_sentence_index=np.zeros((0, 1), np.int32),
                     region_source="none") for e in examples]
  reason = ("skipped: none of the 12 examples has region boxes of its own (region_source "
            "{}; the atlas is a prior, not the image's anatomy); give the data boxes (a boxes "
            "column in pairs.csv, Chest ImaGenome for MIMIC-CXR) or pass --images for phrase maps")
  notes = []
  written = visualize.write_figures(str(workdir), str(tmp_path), model=model, examples=atlas,
                                    log=notes.append)
  assert "grounding" not in written and {"retrieval", "tsne"} <= set(written)
  assert [n for n in notes if n.startswith("grounding")] == [
      "grounding: " + reason.format("atlas")]
  assert grounding.pick_grounding(atlas) == grounding.pick_grounding(no_regions) == []
  with pytest.raises(ValueError) as e:
    grounding.grounding_figure(model, no_regions, encoded={})
  assert str(e.value) == reason.format("none")
  # one example with boxes of its own among atlas ones is enough
  i, r = grounding.pick_grounding(examples)[0]
  mixed = atlas[:]
  mixed[i] = examples[i]
  assert grounding.pick_grounding(mixed) == [(i, r)]
