"""`python -m asg_jax.evaluate --config configs/transfer/own_labels.py:runlocal
--config.own.path=PATH` end to end on real X-rays (../shared/realdata, skipped with a message
where absent): the NIH sample as a CSV (`labels` column, multi-label) and as class folders
(No Finding / Pneumonia, one-hot), on a tiny pre-trained workdir with a tag decoder; plus
the recipe's config (unknown keys stay errors, prompts from class names)."""
import csv
import json
import os
import shutil

import jax
import numpy as np
import pytest

from asg_jax.transfer import config as transfer_config, lbfgs_probe, own, table

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
RECIPE = os.path.join(REPO, "configs", "transfer", "own_labels.py")
SIZE = 32


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tiny pre-trained workdir as training writes it (config, tokenizer, constants with the
  tag queries, best checkpoint), its variables drawn with NumPy."""
  from asg_jax.models import tag_queries
  from tests.helpers import demo_config, numpy_workdir
  config = demo_config("runlocal", **{"data.image_size": SIZE, "data.resize": SIZE})
  path = tmp_path_factory.mktemp("own_workdir")
  numpy_workdir(path, config, ["no acute cardiopulmonary process", "there is pneumonia",
                               "pleural effusion", "findings consistent with infiltration"], 60,
                constants=lambda tok: tag_queries.make_constants(config, tok,
                                                                 jax.random.PRNGKey(1)))
  return str(path)


@pytest.fixture(scope="module")
def nih_rows(realdata_dir):
  root = realdata_dir / "nih-sample"
  with open(root / "Data_Entry_2017_v2020.sample.csv", newline="") as f:
    return root / "images", list(csv.DictReader(f))


def _evaluate(monkeypatch, workdir, path, out, *extra):
  from asg_jax import evaluate
  argv = ["evaluate", f"--workdir={workdir}", f"--config={RECIPE}:runlocal",
          f"--config.own.path={path}", f"--out={out}", *extra]
  monkeypatch.setattr("sys.argv", argv)
  assert evaluate.main(argv) == 0
  with open(os.path.join(out, table.RESULTS_JSON)) as f:
    return json.load(f)


def _kinds(results):
  return {(r["protocol"], r["metric"], r["fraction"], r["init"]) for r in results["rows"]}


@pytest.mark.slow
def test_own_labels_end_to_end_on_a_csv_and_on_class_folders(nih_rows, workdir, tmp_path,
                                                             monkeypatch, capsys):
  folder, rows = nih_rows
  mine = tmp_path / "nih sample"
  os.makedirs(mine)
  with open(mine / "labels.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image_path", "labels", "patient_id", "view"])
    for r in rows[:48]:
      w.writerow([str(folder / r["Image Index"]), r["Finding Labels"], r["Patient ID"],
                  r["View Position"]])
  fitted_masks, fit_runs = [], lbfgs_probe.fit_runs

  def recording(x, y, masks, *args, **kwargs):
    fitted_masks.append(np.asarray(masks))
    return fit_runs(x, y, masks, *args, **kwargs)

  monkeypatch.setattr(lbfgs_probe, "fit_runs", recording)
  results = _evaluate(monkeypatch, workdir, mine / "labels.csv", tmp_path / "out_csv")
  err = capsys.readouterr().err
  assert "building labelled_images/nih_sample" in err and "features labelled_images" in err
  kinds = _kinds(results)
  for init in ("pretrained", "random"):
    for frac in (0.01, 0.1, 1.0):
      assert ("linear_probe_lbfgs", "auroc", frac, init) in kinds
    for proto in ("zero_shot_prompt", "zero_shot_tags"):
      assert (proto, "auroc", None, init) in kinds and (proto, "f1", None, init) in kinds
  assert {r["dataset"] for r in results["rows"]} == {"labelled_images/nih_sample"}
  assert any("[Pneumonia]" in r["metric"] for r in results["rows"])
  # L-BFGS: seed s draws the fraction's rows (fraction_seed + s): at 10 % the two seeds fit
  # different rows of the same count, at 100 % the same; the timing names each run's C and
  # that fit's iterations
  probe = transfer_config.load(f"{RECIPE}:runlocal").evals.probe
  fractions, seeds = tuple(probe.fractions), tuple(probe.seeds)
  assert len(seeds) >= 2, "two probe seeds are needed to compare their draws"
  masks = fitted_masks[0].reshape(len(fractions), len(seeds), -1)  # pretrained: [F*S, N]
  ten, hundred = masks[fractions.index(0.1)], masks[fractions.index(1.0)]
  assert ten[0].sum() == ten[1].sum() > 0 and (ten[0] != ten[1]).any()
  assert hundred.all()
  lbfgs = results["timing"]["pretrained/probe"]
  assert len(lbfgs["c"]) == len(lbfgs["iterations_chosen"]) == len(fractions) * len(seeds)
  assert all(1 <= i <= lbfgs["iterations_max"] for i in lbfgs["iterations_chosen"])
  md = (tmp_path / "out_csv" / table.RESULTS_MD).read_text()
  assert "| labelled_images/nih_sample | linear_probe_lbfgs | auroc | 1 % |" in md
  # class folders: one-hot, accuracy rows, top-1 zero-shot
  root = tmp_path / "by class"
  for cls, keep in (("No Finding", lambda r: r["Finding Labels"] == "No Finding"),
                    ("Pneumonia", lambda r: "Pneumonia" in r["Finding Labels"])):
    os.makedirs(root / cls)
    for r in [r for r in rows if keep(r)][:12]:
      shutil.copy(folder / r["Image Index"], root / cls / r["Image Index"])
  results = _evaluate(monkeypatch, workdir, root, tmp_path / "out_dirs")
  kinds = _kinds(results)
  assert ("linear_probe_lbfgs", "accuracy", 1.0, "pretrained") in kinds
  assert ("zero_shot_prompt", "top1", None, "random") in kinds
  prompts = json.loads((tmp_path / "out_dirs" / own.PROMPTS_FILE).read_text())
  assert prompts["classes"]["Pneumonia"]["text"][1] == "there is pneumonia"
  assert prompts["classes"]["No Finding"]["text"] == list(own.NORMAL_PROMPTS)


def test_recipe_keys_and_errors(tmp_path):
  c = transfer_config.load(f"{RECIPE}:runlocal")
  assert c.evals.probe.solver == "lbfgs" and c.evals.probe.downstream == transfer_config.OWN
  assert "fine_tune" in transfer_config.load(f"{RECIPE}:runlocal,fine_tune").evals
  with pytest.raises(ValueError, match="unknown argument"):
    transfer_config.load(f"{RECIPE}:nope")
  c.lock()
  with pytest.raises(AttributeError):
    c.own.pathh = "x"          # unknown keys stay errors (the command line's too)
  import ml_collections
  c = ml_collections.ConfigDict(c.to_dict())
  from asg_jax.errors import ConfigError
  with pytest.raises(ConfigError, match="--config.own.path"):
    own.prepare(c, str(tmp_path))
  c.own.path = str(tmp_path / "absent.csv")
  with pytest.raises(ConfigError, match="does not exist"):
    own.prepare(c, str(tmp_path))


def test_results_md_gives_test_n_positives_and_bootstrap_intervals():
  from asg_jax.evaluators import metrics
  from asg_jax.transfer import classification
  rng = np.random.default_rng(0)
  y = np.stack([rng.random(300) < 0.3, rng.random(300) < 0.02], 1).astype(np.float32)
  s = np.round(rng.normal(size=(300, 2)) + y, 1)              # ties
  # the resample-weighted AUROC against scikit-learn's with the same sample weights
  roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
  counts = rng.multinomial(300, np.full(300, 1 / 300), size=3).astype(np.float64)
  np.testing.assert_allclose(
      metrics.weighted_auroc(s[:, 0], y[:, 0] > 0.5, counts),
      [roc_auc_score(y[:, 0], s[:, 0], sample_weight=c) for c in counts], rtol=1e-12)
  rows = classification.classification_rows("d", "linear_probe", (1.0,), [[s, s + 0.01]], y,
                                            ["Effusion", "Hernia"], False, "pretrained")
  by = {r["metric"]: r for r in rows}
  assert by["auroc"]["n"] == 300 and by["auroc[Hernia]"]["positives"] == int(y[:, 1].sum())
  lo, hi = by["auroc[Effusion]"]["ci95"]
  assert lo < by["auroc[Effusion]"]["value"] < hi and hi - lo < 0.2
  md = table.format_table(rows, per_class=True)
  assert "test n | positives |" in md and f"| {int(y[:, 1].sum())} ⚠ < 10 |" in md
  assert f"[{100 * lo:.1f}, {100 * hi:.1f}]" in md


def test_manual_dir_builds_a_recipes_downstream_dataset(nih_rows, tmp_path):
  """--config.manual_dir=PATH builds the recipe's downstream builder (here cxr_nih14 from a
  partial release: 12 PNGs, the .csv.gz as released, no split lists) into config.data_dir."""
  import gzip
  import shutil
  import ml_collections
  from asg_jax.data.pipeline import downstream_input
  folder, rows = nih_rows
  manual = tmp_path / "nih"
  os.makedirs(manual / "images_001" / "images")
  with gzip.open(manual / "Data_Entry_2017_v2020.csv.gz", "wb") as f:
    f.write((folder.parent / "Data_Entry_2017_v2020.sample.csv").read_bytes())
  for r in rows[:12]:
    shutil.copy(folder / r["Image Index"], manual / "images_001" / "images" / r["Image Index"])
  c = ml_collections.ConfigDict(transfer_config.load(
      os.path.join(REPO, "configs", "transfer", "nih14.py")).to_dict())
  c.manual_dir, c.data_dir = str(manual), str(tmp_path / "tfds")
  assert own.prepare(c, str(tmp_path / "out")) is None
  b = downstream_input.builder("cxr_nih14", c.data_dir)
  assert sum(int(s.num_examples) for s in b.info.splits.values()) == 12
