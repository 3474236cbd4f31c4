"""Transfer evaluators: metrics and thresholds against hand values / scikit-learn, prompt sets,
zero-shot and retrieval known answers on planted embeddings, and `asg_jax.evaluate` end to
end on the demo stand-in fixture (random-init tiny model)."""
import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from asg_jax import predict
from asg_jax.inference import caption_of
from asg_jax.transfer import classification, features, retrieval, table, zeroshot

CLASSES = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"]


# ------------------------------------------------------------------------------ metrics

def test_auroc_hand_computed_and_macro():
  scores = np.array([0.1, 0.4, 0.35, 0.8])
  labels = np.array([0, 0, 1, 1])
  # positive pairs above negatives: (0.35>0.1), (0.8>0.1), (0.8>0.4) = 3 of 4
  macro, per = classification.macro_auroc(np.stack([scores, -scores], 1), np.stack([labels, labels], 1))
  assert per == [0.75, 0.25] and macro == 0.5
  _, per = classification.macro_auroc(np.zeros((3, 1)), np.ones((3, 1)))
  assert np.isnan(per[0])


def test_f1_accuracy_and_validation_threshold():
  rng = np.random.default_rng(0)
  y = rng.random(200) < 0.3
  s = rng.normal(size=200) + 1.2 * y
  t = classification.best_threshold(s, y, "f1")
  best = max(classification.f1_accuracy(s, y, c)[0] for c in np.unique(s))
  assert classification.f1_accuracy(s, y, t)[0] == pytest.approx(best)
  skm = pytest.importorskip("sklearn.metrics")
  f1, acc = classification.f1_accuracy(s, y, t)
  assert f1 == pytest.approx(skm.f1_score(y, s >= t))
  assert acc == pytest.approx(skm.accuracy_score(y, s >= t))
  assert classification.macro_auroc(s[:, None], y[:, None])[0] == pytest.approx(skm.roc_auc_score(y, s))
  assert classification.chance_f1(y) == pytest.approx(skm.f1_score(y, np.ones_like(y)))
  # the threshold is the validation one: applied to test data it is not re-fitted
  rows = zeroshot.classification_rows("d", "zero_shot_prompt", s[:, None] + 10,
                                      y[:, None], "pretrained", s[:, None], y[:, None])
  by = {r["metric"]: r for r in rows}
  assert by["accuracy"]["value"] == pytest.approx(np.mean(y))   # all predicted positive
  assert by["accuracy"]["chance"] == pytest.approx(max(np.mean(y), 1 - np.mean(y)))


# ------------------------------------------------------------------------------ prompts

def test_prompt_sets_are_the_products_of_their_phrase_lists():
  pos, neg = features.load_prompts("chexpert")
  assert list(pos) == CLASSES and neg == {}
  assert len(pos["Atelectasis"]) == 3 * 7 * 10
  assert "mild linear atelectasis at the lung bases" in pos["Atelectasis"]
  assert "pulmonary edema" in pos["Edema"] and all(p == p.strip() for p in pos["Edema"])
  assert all(len(set(v)) == len(v) for v in pos.values())
  a, _ = features.load_prompts("chexpert", max_per_class=4, seed=1)
  b, _ = features.load_prompts("chexpert", max_per_class=4, seed=1)
  assert a == b and all(len(v) == 4 for v in a.values())
  pos, neg = features.load_prompts("rsna", ["Pneumonia"])
  assert "focal bacterial pneumonia at the left lower lobe" in pos["Pneumonia"]
  assert neg["Pneumonia"]
  with pytest.raises(KeyError, match="Nodule"):
    features.load_prompts("chexpert", ["Nodule"])


# --------------------------------------------------------------- planted embeddings

def _toy_fns(prompts):
  """Texts embed to the one-hot of their class; state unused."""
  text_class = {caption_of(t): c for c, name in enumerate(CLASSES) for t in prompts.get(name, [])}
  neg = {caption_of(t) for ts in prompts.get("_neg", []) for t in ts}

  def embed_texts(state, texts):
    out = np.zeros((len(texts), 8), np.float32)
    for i, t in enumerate(texts):
      out[i, 7 if t in neg else text_class[t]] = 1.0
    return out
  return predict.PredictFns(info=None, outputs=None, objective=None, encode_images=None,
                            encode_texts=None, embed_texts=embed_texts, heatmap=None)


def _planted(monkeypatch, feats_by_split):
  monkeypatch.setattr(features, "extract", lambda fns, state, dataset, split, **kw: feats_by_split[split])
  monkeypatch.setattr(features, "class_names", lambda dataset, data_dir: CLASSES)


def test_zero_shot_top1_and_auroc_known_answer(monkeypatch):
  pos, _ = features.load_prompts("chexpert")
  cls = np.repeat(np.arange(5), 4)
  emb = np.eye(8, dtype=np.float32)[cls] + 0.05
  tags = np.zeros((20, 40), np.float32)
  index = zeroshot.tag_index(CLASSES)
  assert set(index) == set(CLASSES)
  for i, c in enumerate(cls):
    tags[i, index[CLASSES[c]]] = 3.0
  _planted(monkeypatch, {"test": {"image_emb": emb, "tag_logits": tags,
                                  "labels": np.eye(5, dtype=np.float32)[cls]}})
  fns = dataclasses.replace(_toy_fns(pos), tag_logits=lambda state, images: None)  # planted
  ev = zeroshot.Evaluator(fns, downstream="x", max_prompts_per_class=3)
  by = {(r["protocol"], r["metric"]): r for r in ev.rows(state=None)}
  for proto in ("zero_shot_prompt", "zero_shot_tags"):
    assert by[(proto, "top1")]["value"] == 1.0 and by[(proto, "top1")]["chance"] == 0.2
    assert by[(proto, "auroc")]["value"] == 1.0
  # wrong embeddings (each image looks like the next class) -> top-1 0
  _planted(monkeypatch, {"test": {"image_emb": np.eye(8, dtype=np.float32)[(cls + 1) % 5],
                                  "labels": np.eye(5, dtype=np.float32)[cls]}})
  ev = zeroshot.Evaluator(_toy_fns(pos), downstream="x", protocols=("prompt",))
  names = dict(ev.run(type("S", (), {"step": 0})()))
  assert names["zero_shot_prompt/top1"] == 0.0 and names["chance/zero_shot_prompt/top1"] == 0.2


def test_binary_zero_shot_scores_positive_minus_negative_prompts():
  img = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], np.float32)
  pos = np.array([[1.0, 0.0]], np.float32)
  s = zeroshot.prompt_scores(img, pos, {0: np.array([0.0, 1.0], np.float32)})
  np.testing.assert_allclose(s[:, 0], [1.0, -1.0, -0.2], atol=1e-6)


def test_retrieval_is_perfect_when_image_and_text_embeddings_coincide(monkeypatch):
  pos, _ = features.load_prompts("chexpert", max_per_class=6)
  cls = np.repeat(np.arange(5), 6)
  _planted(monkeypatch, {"test": {"image_emb": np.eye(8, dtype=np.float32)[cls],
                                  "labels": np.eye(5, dtype=np.float32)[cls]}})
  ev = retrieval.Evaluator(_toy_fns(pos), downstream="x", max_prompts_per_class=6,
                           ks=(1, 5))
  rows = ev.rows(state=None)
  assert {r["metric"] for r in rows} == {f"{d}_{m}@{k}" for d in ("i2t", "t2i")
                                         for m in ("precision", "recall") for k in (1, 5)}
  assert all(r["value"] == 1.0 for r in rows)
  by = {r["metric"]: r["chance"] for r in rows}
  assert by["i2t_precision@1"] == pytest.approx(0.2)
  assert by["i2t_recall@5"] == pytest.approx(1 - np.prod([(24 - i) / (30 - i) for i in range(5)]))


def test_retrieval_chance_matches_random_rankings():
  rng = np.random.default_rng(0)
  qc, gc = rng.integers(0, 3, 20), rng.integers(0, 3, 12)
  _, chance = retrieval.precision_recall_at_k(np.zeros((20, 12)), qc, gc, (3,))
  vals = [retrieval.precision_recall_at_k(rng.random((20, 12)), qc, gc, (3,))[0]
          for _ in range(400)]
  for k in ("precision@3", "recall@3"):
    assert np.mean([v[k] for v in vals]) == pytest.approx(chance[k], abs=0.02)


# ------------------------------------------------------------ end to end on the fixture

# `tiny_pretrained`: tests/conftest.py

@pytest.mark.slow
def test_evaluate_runs_on_the_demo_fixture_and_writes_results(tmp_path, tiny_pretrained):
  from asg_jax.transfer import config as transfer_config, run, table
  from asg_jax.data.pipeline import downstream_input
  from asg_jax.data.builders import fraction_ids
  config = transfer_config.load(os.path.join(os.path.dirname(__file__), "..", "..", "configs",
                                             "transfer", "demo.py:runlocal"))
  config.demo.num_images = 60
  config.evals.probe.max_epochs = 3
  results = run.run_transfer(str(tmp_path), config, pretrained=tiny_pretrained)
  with open(tmp_path / "transfer" / table.RESULTS_JSON) as f:
    saved = json.load(f)
  assert saved["rows"] == results["rows"]
  for r in saved["rows"]:
    assert set(r) == set(table.ROW_KEYS) and r["init"] in ("pretrained", "random")
    assert r["value"] is None or 0.0 <= r["value"] <= 1.0
    assert r["published"] is None                     # a demo set has no paper number
  kinds = {(r["protocol"], r["metric"], r["fraction"], r["init"]) for r in saved["rows"]}
  for init in ("pretrained", "random"):
    for frac in (0.01, 0.1, 1.0):
      assert ("linear_probe", "auroc", frac, init) in kinds
    assert ("zero_shot_prompt", "top1", None, init) in kinds
    assert ("zero_shot_tags", "auroc", None, init) in kinds
    assert ("retrieval", "i2t_precision@5", None, init) in kinds
  probe = [r for r in saved["rows"] if r["protocol"] == "linear_probe" and r["metric"] == "auroc"]
  assert all(r["std"] is not None and r["chance"] == 0.5 for r in probe)
  md = (tmp_path / "transfer" / table.RESULTS_MD).read_text()
  assert "| cxr_chexpert/demo | linear_probe | auroc | 1 % |" in md
  # fractions: deterministic, nested, and what the probe used
  b = downstream_input.builder("cxr_chexpert/demo", config.data_dir or os.path.join(
      run.demo_dir(config, str(tmp_path)), "tfds"))
  f1, f10 = fraction_ids(b, "train", 0.01), fraction_ids(b, "train", 0.1)
  assert f1 == fraction_ids(b, "train", 0.01) and set(f1) <= set(f10)
  assert results["timing"]["pretrained/probe"]["examples_per_fraction"][:2] == [len(f1), len(f10)]
  # features are cached: a rerun reads the npz files and gives the same rows
  cached = os.listdir(tmp_path / "transfer" / "features")
  assert any(n.startswith("cxr_chexpert_demo__train__pretrained") for n in cached)
  again = run.run_transfer(str(tmp_path), config, pretrained=tiny_pretrained)
  assert again["rows"] == results["rows"]


def test_published_numbers_are_results_md_values_for_the_real_datasets_only():
  def r(dataset, protocol, metric, fraction, init):
    return {"dataset": dataset, "protocol": protocol, "metric": metric, "fraction": fraction,
            "init": init}
  # ../shared/reference/results.md: ASG ViT SIIM Dice 71.9 / 74.7 / 75.6; random init 9.0 at 1 %
  assert table.published(r("cxr_siim", "segmentation", "dice", 0.01, "pretrained"), "vit") == pytest.approx(0.719)
  assert table.published(r("cxr_siim", "segmentation", "dice", 1.0, "pretrained"), "vit") == pytest.approx(0.756)
  assert table.published(r("cxr_siim", "segmentation", "dice", 0.01, "random"), "vit") == pytest.approx(0.090)
  assert table.published(r("cxr_rsna", "segmentation", "dice", 0.1, "imagenet"), "cnn") == pytest.approx(0.399)
  assert table.published(r("cxr_siim/demo", "segmentation", "dice", 1.0, "pretrained"), "vit") is None
  assert table.published(r("cxr_siim", "segmentation", "dice_positive", 1.0, "pretrained"), "vit") is None
  assert table.published(r("cxr_chexpert", "linear_probe", "auroc", 0.01, "random"), "cnn") == pytest.approx(0.561)


def test_feature_cache_is_reused_only_for_the_same_build(tmp_path):
  """A cached npz is read back for the build it came from (no model call), but a build with
  other images under the same name (a regenerated stand-in) is extracted afresh."""
  from asg_jax.data.demo import downstream as downstream_demo
  info = predict.ModelInfo(image=None, dtype="float32", image_size=32, resize=40,
                           normalization="half", patch_grid=(1, 1), tower="cnn")
  calls = []

  def encode_images(state, images):
    calls.append(len(images))
    return {"image_feature": np.asarray(images).reshape(len(images), -1)[:, :4]}

  fns = predict.PredictFns(info=info, outputs=None, objective=None, encode_images=encode_images,
                           encode_texts=None, embed_texts=None, heatmap=None)
  cache = str(tmp_path / "features")

  def extract(data_dir):
    return features.extract(fns, None, "cxr_chexpert/demo", "test", data_dir=data_dir,
                            batch_size=8, cache_dir=cache, tag="pretrained_step1")

  small, large = str(tmp_path / "a" / "tfds"), str(tmp_path / "b" / "tfds")
  downstream_demo.prepare(small, str(tmp_path / "a" / "raw"), num_images=24, num_siim=2)
  downstream_demo.prepare(large, str(tmp_path / "b" / "raw"), num_images=48, num_siim=2)
  from asg_jax.data.pipeline import downstream_input
  from asg_jax.data.builders import downstream as ds_lib
  ids = {d: ds_lib.read_index(downstream_input.builder("cxr_chexpert/demo", d))["test"]["image_id"]
         for d in (small, large)}
  assert len(ids[small]) < len(ids[large])
  first = extract(small)
  assert calls and sorted(first["image_id"]) == sorted(ids[small])
  n_calls = len(calls)
  again = extract(small)                           # the same build: read from the npz
  assert len(calls) == n_calls and again["image_id"] == first["image_id"]
  np.testing.assert_array_equal(again["image_feature"], first["image_feature"])
  other = extract(large)                           # same name, other images: extracted again
  assert len(calls) > n_calls and sorted(other["image_id"]) == sorted(ids[large])
