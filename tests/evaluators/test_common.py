"""Evaluator plug-ins: declared in config alone, on their own schedule, one model pass per
split and step, unknown keys / types fail naming them."""
import pytest

from asg_jax import config as config_lib, train
from tests.evaluators import toy
from tests.fakes import FakeData
from tests.test_train import demo_config


class CountingData(FakeData):
  passes = 0

  def eval_batches(self, split="", dataset=""):
    CountingData.passes += 1
    return super().eval_batches(split, dataset)


def test_toy_evaluator_through_config_alone_runs_on_its_schedule(tmp_path):
  config = demo_config(evals=("loss", "retrieval"), **{"train.num_steps": 6,
                                                        "eval.every_steps": 3})
  config_lib.add_eval(config, "toy", type="tests.evaluators.toy", every_steps=2, scale=3.0)
  config_lib.check_overrides_applied(config)
  toy.CALLS.clear()
  CountingData.passes = 0
  summary = train.train_and_evaluate(config, str(tmp_path), data=CountingData(config))
  assert [step for step, _ in toy.CALLS] == [2, 4, 6] and toy.CALLS[0][1] == 3.0
  assert summary["metrics"]["toy_mean_norm"] == pytest.approx(3.0, rel=1e-4)
  assert summary["chance"]["toy_mean_norm"] == 0.0
  assert {"val_loss", "i2t_top1", "top5"} <= set(summary["metrics"])
  # evaluation rounds at steps 2, 3, 4, 6: loss + retrieval + toy share ONE pass per round
  assert CountingData.passes == 4


def test_unknown_evaluator_key_or_type_names_it():
  config = demo_config()
  config_lib.add_eval(config, "toy", type="tests.evaluators.toy", scael=2.0)
  with pytest.raises(config_lib.ConfigError, match=r"config\.evals\.toy\.scael: unknown key "
                     r"for evaluator type 'tests\.evaluators\.toy'; it accepts \['scale'\]"):
    config_lib.check_overrides_applied(config)
  config = demo_config()
  config_lib.add_eval(config, "bogus", type="retreival")
  with pytest.raises(config_lib.ConfigError, match=r"evaluator type 'retreival'.*built-in "
                     r"types: grounding, .*retrieval"):
    config_lib.check_overrides_applied(config)
