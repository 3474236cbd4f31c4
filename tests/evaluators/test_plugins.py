"""Evaluator plug-ins: unknown keys / types fail naming them. (A toy evaluator declared
through config alone, on its own schedule with one model pass per split and round, runs in
tests/test_train.py::test_preempt_and_resume_equals_uninterrupted_with_patience_and_a_toy_evaluator,
sharing that test's compiled steps.)"""
import pytest

from asg_jax import config as config_lib
from asg_jax.errors import ConfigError
from tests.helpers import demo_config


def test_unknown_evaluator_key_or_type_names_it():
  config = demo_config()
  config_lib.add_eval(config, "toy", type="tests.evaluators.toy", scael=2.0)
  with pytest.raises(ConfigError, match=r"config\.evals\.toy\.scael: unknown key "
                     r"for evaluator type 'tests\.evaluators\.toy'; it accepts \['scale'\]"):
    config_lib.check_overrides_applied(config)
  config = demo_config()
  config_lib.add_eval(config, "bogus", type="retreival")
  with pytest.raises(ConfigError, match=r"config\.evals\.bogus\.type = 'retreival' is "
                     r"not a registered evaluator; expected one of \['grounding', 'loss', "
                     r"'retrieval', 'zeroshot'\]"):
    config_lib.check_overrides_applied(config)
