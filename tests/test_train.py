"""The train loop: resume == uninterrupted (preemption, early stopping), NaN guard, honest
evaluation (1 device == 8 devices: test_train_devices.py)."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from asg_jax import checkpoints, config as config_lib, objectives, parallel, predict, preemption, train
from asg_jax.evaluators import plugins
from asg_jax.models import vlp
from tests.helpers import CountingData, FakeData, build, demo_config, fake_batch


def _latest_params(workdir, config):
  mesh = parallel.make_mesh(config.train.num_devices or None)
  data, state, _, _ = build(config, mesh)
  with jax.set_mesh(mesh):
    restored, step = checkpoints.Manager(str(workdir), 2).restore_latest(state)
  return step, jax.device_get(restored.params)


@pytest.mark.slow
def test_nan_guard_names_step_and_terms_and_keeps_last_good_checkpoint(tmp_path):
  # one device: the train-step programs of tests/test_inference.py's, test_visualize's and
  # the notebooks' fixtures (the shared compile cache); 1 == 8 devices: test_train_devices.py
  config = demo_config(**{"train.num_devices": 1, "train.num_steps": 6, "train.checkpoint_every": 2,
                          "train.log_every": 1, "eval.every_steps": 100})
  data = FakeData(config, nan_at_step=3)       # the 4th step (index 3) sees a NaN box
  with pytest.raises(train.NonFiniteLossError, match=r"step 3: .*loss"):
    train.train_and_evaluate(config, str(tmp_path), data=data)
  step, params = _latest_params(tmp_path, config)
  assert step == 2
  assert all(np.all(np.isfinite(p)) for p in jax.tree.leaves(params))


def test_fake_batch_follows_interface():
  config = demo_config()
  b = fake_batch(config, 4, 0)
  assert b["image"].shape == (4, 112, 112, 1) and b["image"].dtype == np.uint8
  assert b["region_word_index"].shape == (4, 23, 63)
  assert (b["word_ids"][:, 0] == -1).all()


# ------------------------------------------------------------------ honest evaluation
def run_evals(config, mesh, data):
  """Every configured evaluator once, on a fresh state: {metric: value} incl. chance/."""
  _, state, constants, _ = build(config, mesh)
  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  fns = predict.make_predict_fns(model, data.tokenizer, config,
                                 objective=objectives.make_objective(config))
  with jax.set_mesh(mesh):
    evaluators = plugins.from_config(
        config, fns, mesh=mesh, constants=constants,
        batches=lambda dataset, split: data.eval_batches)
    values = {}
    for e in evaluators:
      values.update(e.run(state))
  return values, state, model, evaluators, constants


@pytest.mark.slow
def test_partial_batch_val_loss_is_the_per_example_mean():
  # the full ASG objective (the programs test_grounding_... also compiles): its IRA term is
  # the symmetric in-batch cross-entropy computed here in NumPy
  config = demo_config("runlocal,image=vit", evals=("loss",))
  mesh = parallel.make_mesh(8)
  data = FakeData(config, num_eval=27)            # batches of 16: 16 + 11 real rows
  values, state, model, evaluators, constants = run_evals(config, mesh, data)
  variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  # the embeddings of every row of the padded batch (eval mode: each row's own), then the
  # real rows' symmetric cross-entropy among themselves
  embed = jax.jit(lambda b: model.apply(variables, b, train=False,
                                        tag_queries=constants["tag_queries"]))
  per_example = []
  for batch in data.eval_batches():
    valid = batch.pop("valid")
    out = jax.device_get(embed(batch))
    v = np.asarray(out["image_emb"], np.float64)[valid]
    t = np.asarray(out["text_emb"], np.float64)[valid]
    logits = v @ t.T / config.loss.temperature
    lse_rows = np.log(np.exp(logits).sum(1))
    lse_cols = np.log(np.exp(logits).sum(0))
    per_example.append(lse_rows + lse_cols - 2 * np.diag(logits))   # CE(i2t) + CE(t2i)
  expected = np.concatenate(per_example)
  assert expected.shape == (27,) and evaluators[0].data.num_examples == 27
  np.testing.assert_allclose(values["val_ira"], expected.mean(), rtol=1e-4)
  assert np.isfinite(values["val_loss"]) and values["val_loss"] > values["val_ira"]


@pytest.mark.slow
def test_grounding_is_absent_without_annotated_boxes():
  config = demo_config("runlocal,image=vit", evals=("loss", "grounding"))
  mesh = parallel.make_mesh(8)

  class AtlasOnly(FakeData):
    def eval_batches(self):
      for batch in super().eval_batches():
        batch["boxes_annotated"] = np.zeros_like(batch["boxes_annotated"])
        yield batch

  real, *_ = run_evals(config, mesh, FakeData(config, num_eval=32))
  atlas, *_ = run_evals(config, mesh, AtlasOnly(config, num_eval=32))
  assert "grounding_acc" in real and "chance/grounding_acc" in real
  assert "grounding_acc" not in atlas and "chance/grounding_acc" not in atlas
  assert atlas["val_loss"] == pytest.approx(real["val_loss"])


class SignalledData(FakeData):
  """Sends this process a real SIGTERM when the train batch of index `at` is read."""

  def __init__(self, config, at: int):
    super().__init__(config)
    self._at = at

  def train_batches(self, start_step=0):
    for i, batch in enumerate(super().train_batches(start_step), start=start_step):
      if i == self._at:
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch


@pytest.mark.slow
def test_preempt_and_resume_equals_uninterrupted_with_patience_and_a_toy_evaluator(tmp_path, capsys):
  """One scenario (each train_and_evaluate costs seconds of tracing): a toy evaluator
  declared through config alone runs on its own schedule, one model pass per split and
  round; early stopping (patience) and a preemption (SIGTERM) + resume stop where the
  uninterrupted run did, with the same parameters and summary; a rerun of the finished job
  is a no-op."""
  from tests.evaluators import toy
  # zs_num_tags is constant, so after the first evaluation nothing "improves": with
  # patience 3 and an evaluation every step, training stops at step 4.
  config = demo_config(evals=("zeroshot", "loss", "retrieval"), **{
      "train.num_devices": 1, "train.num_steps": 8, "train.checkpoint_every": 2, "train.log_every": 1,
      "eval.every_steps": 1, "train.early_stop_patience": 3, "eval.best_metric": "zs_num_tags",
      "evals.zeroshot.prompts": False})
  # an evaluator living outside the package, declared through config alone
  config_lib.add_eval(config, "toy", type="tests.evaluators.toy", every_steps=2, scale=3.0)
  config_lib.check_overrides_applied(config)
  toy.CALLS.clear()
  CountingData.passes = 0
  full = train.train_and_evaluate(config, str(tmp_path / "full"), data=CountingData(config))
  assert full["steps"] == 4 and full["stopped"].startswith("early stopping")
  assert [step for step, _ in toy.CALLS] == [2, 4] and toy.CALLS[0][1] == 3.0
  assert full["metrics"]["toy_mean_norm"] == pytest.approx(3.0, rel=1e-4)
  assert full["chance"]["toy_mean_norm"] == 0.0
  # four rounds (steps 1-4) of three or four evaluators: ONE pass over the split per round
  assert CountingData.passes == 4
  assert {"i2t_top1", "t2i_top1", "i2t_top5", "t2i_top5", "val_loss", "zs_num_tags"} \
      <= set(full["metrics"])
  # preempted: a real SIGTERM arrives while batch 3 is read, which the 2-deep device
  # prefetch (config.train.device_prefetch) does as step 2 starts; step 2 finishes, is
  # checkpointed, and Preempted is raised (main.py exits with status 75)
  assert config.train.device_prefetch == 2
  with pytest.raises(preemption.Preempted, match="SIGTERM received: stopped after step 2") as e:
    train.train_and_evaluate(config, str(tmp_path / "killed"), data=SignalledData(config, 3))
  assert e.value.step == 2
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL     # the handler was removed
  resumed = train.train_and_evaluate(config, str(tmp_path / "killed"), data=FakeData(config))
  for key in ("steps", "stopped", "best", "metrics", "chance"):
    assert resumed[key] == full[key], key
  step_a, params_a = _latest_params(tmp_path / "full", config)
  step_b, params_b = _latest_params(tmp_path / "killed", config)
  assert step_a == step_b == 4
  for a, b in zip(jax.tree.leaves(params_a), jax.tree.leaves(params_b)):
    np.testing.assert_array_equal(a, b)
  assert (tmp_path / "killed" / "config.json").exists()
  # rerunning the finished job: a no-op that keeps summary.json byte for byte
  path = tmp_path / "full" / "summary.json"
  before = path.read_bytes()
  assert set(json.loads(before)) >= {"metrics", "chance"}
  capsys.readouterr()
  again = train.train_and_evaluate(config, str(tmp_path / "full"), data=FakeData(config))
  assert "Already finished" in capsys.readouterr().out
  assert again == json.loads(before) and path.read_bytes() == before
  # ... unless asked to evaluate again; a changed config is not "finished"
  redo = train.train_and_evaluate(config, str(tmp_path / "full"), data=FakeData(config),
                                  reevaluate=True)
  assert redo["steps"] == 4 and redo["metrics"] == full["metrics"]
  config.unlock()
  config.train.num_steps = 9
  assert train.finished_summary(config, str(tmp_path / "full")) is None


def test_resuming_under_a_changed_config_names_the_changes_and_keeps_the_old_config(
    tmp_path, capsys):
  """A workdir with checkpoints, rerun with another config: the changed keys are printed and
  the config that trained the earlier steps is kept as config.until_step{N}.json."""
  from asg_jax import workdir as workdir_lib
  old = demo_config(**{"train.num_steps": 6})
  new = demo_config(**{"train.num_steps": 9, "train.lr": 1e-3})
  train.write_config(old, str(tmp_path))
  before = (tmp_path / "config.json").read_text()
  assert workdir_lib.config_changes(old, str(tmp_path)) == []
  assert workdir_lib.config_changes(new, str(tmp_path)) == [
      f"train.lr: {old.train.lr} -> 0.001", "train.num_steps: 6 -> 9"]
  train._note_config_changes(new, str(tmp_path))          # no checkpoint yet: nothing to say
  assert capsys.readouterr().out == "" and not list(tmp_path.glob("config.until_*"))
  for step in ("3", "6", "6.orbax-checkpoint-tmp-1"):      # orbax step folders (+ a partial)
    (tmp_path / "checkpoints" / step).mkdir(parents=True)
  train._note_config_changes(new, str(tmp_path))
  out = capsys.readouterr().out
  assert "up to step 6" in out and "train.num_steps: 6 -> 9" in out and "train.lr" in out
  assert "config.until_step6.json" in out
  assert (tmp_path / "config.until_step6.json").read_text() == before
  assert not (tmp_path / "config.json").exists()           # train_and_evaluate writes the new one
