"""Evaluator plug-ins: unknown keys / types fail naming them. (A toy evaluator declared
through config alone, on its own schedule with one model pass per split and round, runs in
tests/test_train.py::test_preempt_and_resume_equals_uninterrupted_with_patience_and_a_toy_evaluator,
sharing that test's compiled steps.)"""
import pytest

from asg_jax import config as config_lib
from tests.fakes import FakeData
from tests.test_train import demo_config


class CountingData(FakeData):
  passes = 0

  def eval_batches(self, split="", dataset=""):
    CountingData.passes += 1
    return super().eval_batches(split, dataset)


def test_unknown_evaluator_key_or_type_names_it():
  config = demo_config()
  config_lib.add_eval(config, "toy", type="tests.evaluators.toy", scael=2.0)
  with pytest.raises(config_lib.ConfigError, match=r"config\.evals\.toy\.scael: unknown key "
                     r"for evaluator type 'tests\.evaluators\.toy'; it accepts \['scale'\]"):
    config_lib.check_overrides_applied(config)
  config = demo_config()
  config_lib.add_eval(config, "bogus", type="retreival")
  with pytest.raises(config_lib.ConfigError, match=r"evaluator type 'retreival'.*built-in "
                     r"types: .*grounding, .*retrieval"):
    config_lib.check_overrides_applied(config)
