"""Run a transfer config on a pre-trained workdir (docs/transfer.md): the evaluators the
config declares (`config.evals`), on the encoders it names (`config.inits`: transfer/inits.py),
into one results table (transfer/table.py).

    from asg_jax.transfer import config as transfer_config, run
    results = run.run_transfer("workdir/demo", transfer_config.load("configs/transfer/demo.py"))

writes `<out>/results.json` and `<out>/results.md` (`<out>` = `config.out`, default
`<workdir>/transfer`; cached features in `<out>/features/`) and returns the json's dict.
"""
from __future__ import annotations

import inspect
import json
import os
import time
from typing import Any

import jax
import ml_collections

from asg_jax import console, distributed, registry
from asg_jax.data.demo import downstream as downstream_demo
from asg_jax.evaluators import plugins
from asg_jax.transfer import features, inits, table


def build(config: ml_collections.ConfigDict, fns, out_dir: str) -> list[tuple[str, Any]]:
  """(name, Evaluator) of every `config.evals` entry (data_dir / cache_dir filled in)."""
  out = []
  for name in sorted(config.evals):
    entry = config.evals[name]
    module = plugins.check_entry(name, entry, registry.TRANSFER_EVALUATORS)
    params = inspect.signature(module.Evaluator).parameters
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items()
              if k not in plugins.COMMON_KEYS}
    if "data_dir" in params and not kwargs.get("data_dir"):
      kwargs["data_dir"] = config.data_dir
    if "cache_dir" in params and not kwargs.get("cache_dir"):
      kwargs["cache_dir"] = os.path.join(out_dir, "features")
    out.append((name, module.Evaluator(fns, data=None, **kwargs)))
  return out


def demo_dir(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Where the demo stand-ins are generated: `config.demo.dir`, else
  `<workdir>/downstream_demo/<downstream_demo.folder_name(...)>` (one folder per generation);
  their tfds builds go into its `tfds/` unless `config.data_dir` is set."""
  d = config.demo
  return d.dir or os.path.join(workdir, "downstream_demo",
                               downstream_demo.folder_name(d.num_images, d.num_siim, d.seed))


def prepare_demo(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Generate the demo stand-ins; build those an evaluator uses (the CheXpert-layout
  cxr_chexpert/demo and demo_5x200, the SIIM-layout cxr_siim/demo)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import asg_jax.data.builders  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  d = config.demo
  raw = demo_dir(config, workdir)
  downstream_demo.generate(raw, d.num_images, d.num_siim, d.seed)
  used = {str(e.get("downstream", "")) for e in config.evals.values()}
  for name, sub in (("cxr_chexpert/demo", "chexpert"), ("cxr_chexpert/demo_5x200", "chexpert"),
                    ("cxr_siim/demo", "siim")):
    if name not in used:
      continue
    b = tfds.builder(name, data_dir=config.data_dir)
    if not b.is_prepared():
      features.progress(f"Building {name} (the demo stand-in) ...")
      with console.quiet_tfds_prints():
        b.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.path.join(raw, sub)))


def run_transfer(workdir: str, config: ml_collections.ConfigDict, *, out_dir: str = "",
                 pretrained=None, tokenizer=None) -> dict:
  """Run the transfer config on a workdir; write and return results.json's dict.

  `pretrained`: an `asg_jax.inference.Pretrained` to use instead of loading the workdir
  (tests); `tokenizer` is passed to `Pretrained.from_workdir`.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")
  config = ml_collections.ConfigDict(config.to_dict())      # a private, unlocked copy
  workdir = config.init or workdir
  if not workdir and pretrained is None:
    raise ValueError("no pre-trained model: pass --workdir or --config.init")
  out_dir = out_dir or config.out or os.path.join(workdir, "transfer")
  if pretrained is None:   # first: a workdir without a model fails before anything is written
    from asg_jax.inference import Pretrained  # pylint: disable=import-outside-toplevel
    pretrained = Pretrained.from_workdir(workdir, checkpoint=config.checkpoint, tokenizer=tokenizer)
  os.makedirs(out_dir, exist_ok=True)
  if config.demo.prepare:
    if not config.data_dir:
      config.data_dir = os.path.join(demo_dir(config, workdir), "tfds")
    with distributed.first_process_only("prepare the demo stand-ins") as mine:
      if mine:
        prepare_demo(config, workdir)
  from asg_jax.transfer import own  # pylint: disable=import-outside-toplevel
  own.prepare(config, out_dir)   # own labelled images / downstream builds from manual_dir
  start = time.time()
  step = _step_of(workdir, config.checkpoint)
  evaluators = build(config, pretrained.fns, out_dir)
  rows, timing = [], {}
  tower = pretrained.fns.info.tower
  for state in inits.states(pretrained, config, step):
    for name, ev in evaluators:
      features.progress(f"[{state.init}] {name} ({type(ev).__module__.rsplit('.', 1)[-1]})")
      t = time.time()
      for r in ev.rows(state, state.init):
        r["published"] = table.published(r, tower)
        rows.append(r)
      timing[f"{state.init}/{name}"] = dict(getattr(ev, "timing", {}) or {},
                                            seconds=time.time() - t)
  results = {"workdir": os.path.abspath(workdir) if workdir else "", "step": step,
             "config": config.name, "tower": tower, "rows": rows, "timing": timing,
             "seconds": time.time() - start}
  if jax.process_index() == 0:   # several processes compute the same table; one writes it
    table.write_results(out_dir, results)
  return results


def _step_of(workdir: str, checkpoint: str) -> int:
  path = os.path.join(workdir or "", "best.json")
  if checkpoint == "best" and os.path.isfile(path):
    try:
      with open(path) as f:
        return int(json.load(f).get("step", 0))
    except (ValueError, OSError):
      return 0
  return 0
