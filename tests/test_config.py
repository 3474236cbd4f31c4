"""Config schema: recipes load, unknown keys fail naming the key, ablations switch terms."""
import importlib.util
import pathlib
import subprocess
import sys

import pytest

from asg_jax import config as config_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPES = sorted(p.stem for p in (REPO / "configs").glob("*.py"))


def load(name, arg=None):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_loads_full_and_runlocal(name):
  full, small = load(name), load(name, "runlocal")
  assert full.name.startswith(name.split("_")[0])
  assert small.train.num_steps > 0 and small.model.text.pretrained == ""


def test_published_recipe_constants():
  c = load("asg_vit_b16")
  assert (c.train.lr, c.train.weight_decay, c.train.batch_size) == (4e-5, 0.05, 288)
  assert (c.loss.w_ira, c.loss.w_arsa, c.loss.w_irl, c.loss.w_erl) == (1.0, 1.0, 5.0, 1.0)
  assert c.model.text.use_layers == 6 and c.data.max_length == 112 and c.data.max_regions == 23
  assert c.loss.temperature == 0.07 and c.train.warmup_frac == 0.4


def test_unknown_key_in_recipe_fails_naming_it():
  c = config_lib.base_config()
  with pytest.raises(AttributeError, match="nmu_steps"):
    c.train.nmu_steps = 3


def test_unknown_key_on_command_line_fails_naming_it(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "asg_jax.main", "--config", str(REPO / "configs/demo.py"),
       "--workdir", str(tmp_path), "--config.train.nmu_steps=3"],
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode != 0
  assert "nmu_steps" in proc.stderr and "num_steps" in proc.stderr
  assert not (tmp_path / "summary.json").exists()


def test_bad_values_and_arguments_fail_clearly():
  with pytest.raises(ValueError, match="ablation"):
    load("asg_vit_b16", "ablation=nope")
  with pytest.raises(ValueError, match="unknown config argument 'colour'"):
    load("demo", "colour=red")
  c = config_lib.base_config()
  c.loss.name = "reclf"
  with pytest.raises(ValueError, match="local_head.mode"):
    config_lib.finalize(c)


@pytest.mark.parametrize("row,terms", [
    ("ira", (True, False, False, False)), ("ira_arsa", (True, True, False, False)),
    ("ira_irl", (True, False, True, False)), ("ira_irl_erl", (True, False, True, True)),
    ("full", (True, True, True, True))])
def test_asg_ablation_rows(row, terms):
  c = load("asg_vit_b16", f"ablation={row}")
  assert (c.loss.use_ira, c.loss.use_arsa, c.loss.use_irl, c.loss.use_erl) == terms
  assert c.model.tag_decoder.enabled == terms[2]


@pytest.mark.parametrize("rung,expect", [
    ("gloria", ("gloria", False, False, 0.0)), ("irm", ("reclf", True, False, 0.0)),
    ("irm_srm", ("reclf", True, True, 0.0)), ("full", ("reclf", True, True, 0.2))])
def test_reclf_ladder(rung, expect):
  c = load("reclf_resnet50", f"rung={rung}")
  lh = c.model.local_head
  assert (lh.mode, lh.use_irm, lh.use_srm, c.loss.beta) == expect
  assert c.loss.name == lh.mode


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "configs" / "transfer").glob("*.py")))
def test_every_transfer_recipe_loads_full_and_runlocal(name):
  from asg_jax.transfer import config as transfer_config
  from asg_jax import registry
  from asg_jax.evaluators import plugins
  for arg in ("", ":runlocal"):
    c = transfer_config.load(str(REPO / "configs" / "transfer" / f"{name}.py") + arg)
    assert len(c.evals) > 0
    for entry in c.evals:
      plugins.check_entry(entry, c.evals[entry], registry.TRANSFER_EVALUATORS)   # every key is one its evaluator takes
  full = transfer_config.load(str(REPO / "configs" / "transfer" / f"{name}.py"))
  if "seg" in full.evals:      # segmentation recipes (siim, rsna_seg, demo_seg): no probe
    seg = full.evals.seg
    assert seg.type == "segmentation" and tuple(seg.fractions) == (0.01, 0.1, 1.0)
    return
  if name == "mimic_5x200":   # a test split only (retrieval, zero-shot): nothing to probe
    assert "probe" not in full.evals
    return
  probe = full.evals.probe
  assert (tuple(probe.fractions), tuple(probe.seeds)) == ((0.01, 0.1, 1.0), (0, 1, 2)) or \
      name == "demo"
