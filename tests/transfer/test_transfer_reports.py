"""Retrieval against REPORTS (`retrieval`, texts="reports") on `mimic_cxr/5x200`:
known answers on planted embeddings and, end to end on the MIMIC-layout fixture of
tests/data/test_mimic_5x200.py, an encoder whose image and text embeddings are identical by
construction; the recipe configs/transfer/mimic_5x200.py builds its evaluators."""
import os

import numpy as np
import pytest

from asg_jax import predict
from asg_jax.transfer import config as transfer_config, retrieval, run
from tests.data import mimic_5x200_fixture as fixture

RECIPE = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "transfer",
                      "mimic_5x200.py")


def _by(rows):
  return {r["metric"]: r for r in rows}


def test_exact_and_class_hits_known_answers():
  """5 classes x 12 items; image i and report i share one embedding (class one-hot + a small
  item part), so every class metric is 1 for K <= 12, the exact report is always first."""
  rng = np.random.default_rng(0)
  cls = np.repeat(np.arange(5), 12)
  emb = np.eye(8)[cls] + 0.1 * rng.normal(size=(60, 8)) * (np.arange(8) >= 5)
  rows = _by(retrieval.retrieval_rows("d", emb, emb, cls, cls, (1, 5, 10), "pretrained",
                                      exact=True))
  for d in ("i2t", "t2i"):
    for k in (1, 5, 10):
      assert rows[f"{d}_precision@{k}"]["value"] == 1.0
      assert rows[f"{d}_recall@{k}"]["value"] == 1.0
      assert rows[f"{d}_exact_recall@{k}"]["value"] == 1.0
      assert rows[f"{d}_exact_precision@{k}"]["value"] == pytest.approx(1.0 / k)
      # chance: a random ranking of M = 60 items with one counterpart: K / M and 1 / M
      assert rows[f"{d}_exact_recall@{k}"]["chance"] == pytest.approx(k / 60)
      assert rows[f"{d}_exact_precision@{k}"]["chance"] == pytest.approx(1 / 60)
      assert rows[f"{d}_precision@{k}"]["chance"] == pytest.approx(12 / 60)
  # reports shifted by one within each class: class hits stay perfect, exact hits vanish
  shifted = np.concatenate([np.roll(np.arange(12), 1) + 12 * c for c in range(5)])
  rows = _by(retrieval.retrieval_rows("d", emb, emb[shifted], cls, cls, (1,), "x",
                                      exact=True))
  assert rows["i2t_precision@1"]["value"] == 1.0
  assert rows["i2t_exact_recall@1"]["value"] == 0.0 and rows["t2i_exact_recall@1"]["value"] == 0.0


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  manual = fixture.write_fixture(str(tmp_path_factory.mktemp("mimic_manual")))
  data_dir = str(tmp_path_factory.mktemp("mimic_tfds"))
  fixture.build(manual, data_dir, "demo_5x200")          # 8 per task: every candidate
  return data_dir


def _identical_fns(data_dir):
  """Image and report of one example share one embedding: the one-hot of the example's class
  plus a small random item part (found from the image's pixels, the report's text)."""
  from asg_jax.data.pipeline import downstream_input
  split = downstream_input.load_split("mimic_cxr/demo_5x200", "test", data_dir=data_dir,
                                      resize=40, image_size=32, normalization="half")
  rng = np.random.default_rng(1)
  vec = {i: np.concatenate([np.eye(5)[int(np.argmax(l))], 0.1 * rng.normal(size=3)])
         for i, l in zip(split["image_id"], split["labels"])}
  key = lambda x: np.round(np.asarray(x, np.float32), 4).tobytes()
  by_pixels = {key(x): vec[i] for i, x in zip(split["image_id"], split["image"])}
  captions = retrieval.report_texts("mimic_cxr/demo_5x200", "test", data_dir)
  by_text = {captions[i]: vec[i] for i in split["image_id"]}

  def encode_images(state, x):   # zero rows (batch padding) embed to 0
    return {"image_emb": np.stack([by_pixels.get(key(r), np.zeros(8)) for r in x])}
  info = predict.ModelInfo(image=None, dtype="float32", image_size=32, resize=40,
                           normalization="half", patch_grid=(1, 1), tower="cnn")
  return predict.PredictFns(
      info=info, outputs=None, objective=None, encode_images=encode_images, encode_texts=None,
      embed_texts=lambda state, texts: np.stack([by_text[t] for t in texts]), heatmap=None), split


def test_identical_embeddings_give_perfect_report_retrieval(built):
  fns, split = _identical_fns(built)
  ev = retrieval.Evaluator(fns, downstream="mimic_cxr/demo_5x200", data_dir=built,
                           texts="reports", ks=(1, 5, 10), extract_batch_size=4)
  rows = _by(ev.rows(state=None))
  # demo_5x200 keeps every candidate: A1, A2, A3, C1, K1, K2, E1, P3 (test_mimic_5x200.py)
  assert len(split["image_id"]) == 8
  for d in ("i2t", "t2i"):
    for k in (1, 5):
      assert rows[f"{d}_exact_recall@{k}"]["value"] == 1.0
      assert rows[f"{d}_recall@{k}"]["value"] == 1.0
      assert rows[f"{d}_exact_precision@{k}"]["value"] == pytest.approx(1.0 / k)
    assert rows[f"{d}_precision@1"]["value"] == 1.0
    assert f"{d}_recall@10" not in rows   # K > M = 8 texts
    # by hand: class sizes 3, 1, 2, 1, 1 and a class's items rank first, so precision@5 =
    # (3 * 3/5 + 1/5 + 2 * 2/5 + 1/5 + 1/5) / 8 = 0.4
    assert rows[f"{d}_precision@5"]["value"] == pytest.approx(0.4)
  assert rows["i2t_exact_precision@5"]["chance"] == pytest.approx(1 / 8)
  assert rows["i2t_exact_recall@5"]["chance"] == pytest.approx(5 / 8)
  with pytest.raises(ValueError, match="texts="):
    retrieval.Evaluator(fns, downstream="x", texts="captions")


def test_reports_need_a_caption_feature(built, tmp_path, monkeypatch):
  from asg_jax.data.pipeline import downstream_input

  class NoCaption:
    class info:   # noqa: N801
      features = {"image": None, "labels": None}
  monkeypatch.setattr(downstream_input, "builder", lambda d, data_dir: NoCaption)
  with pytest.raises(ValueError, match="caption"):
    retrieval.report_texts("cxr_chexpert/5x200", "test", "")


def test_recipe_declares_report_retrieval_and_runs_on_the_fixture(built, tmp_path):
  full = transfer_config.load(RECIPE)
  assert full.evals.retrieval_reports.downstream == "mimic_cxr/5x200"
  assert full.evals.retrieval_reports.texts == "reports"
  assert tuple(full.evals.retrieval_reports.ks) == (1, 5, 10)
  config = transfer_config.load(RECIPE + ":runlocal")
  config.data_dir = built
  fns, _ = _identical_fns(built)
  evaluators = dict(run.build(config, fns, str(tmp_path)))
  assert set(evaluators) == {"retrieval_reports", "zeroshot"}
  rows = _by(evaluators["retrieval_reports"].rows(state=None))
  assert rows["t2i_exact_recall@1"]["value"] == 1.0
  assert all(r["dataset"] == "mimic_cxr/demo_5x200" for r in rows.values())
  with pytest.raises(ValueError, match="unknown argument"):
    transfer_config.load(RECIPE + ":nonsense")
  assert os.listdir(tmp_path / "features")     # features cached under <out>/features
