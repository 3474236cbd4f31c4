"""Transfer evaluation of a pre-trained workdir (docs/transfer.md):

    python -m asg_jax.evaluate --workdir workdir/demo --config configs/transfer/demo.py
    python -m asg_jax.evaluate --config configs/transfer/chexpert.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

runs the evaluators declared in the transfer config (`config.evals`: linear_probe,
transfer_zeroshot, transfer_retrieval, segmentation) on the workdir's best checkpoint
(`init` = "pretrained") and on the baselines named in `config.inits` ("random": the same
architecture, freshly initialised; "imagenet": the same with the image tower loaded from
the local checkpoint `config.imagenet`, added whenever that is set), and writes
`<out>/results.json`

    {"rows": [{"dataset", "protocol", "metric", "fraction", "init", "value", "std",
               "chance", "published"}, ...], "timing": {...}, "workdir": ..., "step": ...}

and `<out>/results.md` (our numbers beside results.md's published ones and the chance
level). `<out>` = `config.out`, default `<workdir>/transfer`; cached features in
`<out>/features/`. From Python (the demo's main job):

    from asg_jax import evaluate
    results = evaluate.run_transfer("workdir/demo", evaluate.load_config("configs/transfer/demo.py"))
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from asg_jax.evaluators import transfer_common as tc  # noqa: E402

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"
INITS = ("pretrained", "random")


@dataclasses.dataclass
class TransferState:
  """What evaluators read of a state: `.params`, `.batch_stats`, `.step`, and `.init`."""
  params: Any
  batch_stats: Any
  step: int = 0
  init: str = "pretrained"


def base_transfer_config() -> ml_collections.ConfigDict:
  """Every key of a transfer config (configs/transfer/*.py start from this)."""
  c = ml_collections.ConfigDict()
  c.name = "transfer"
  c.init = ""                 # workdir of the pre-trained model ("" = --workdir)
  c.checkpoint = "best"       # best | latest
  c.inits = INITS             # which encoders to evaluate: pretrained | random | imagenet
  c.imagenet = ""             # local HF checkpoint (dir / model.safetensors) of the tower's
                              # ImageNet weights; set -> the `imagenet` rows are added too
  c.random_seed = 0           # init=random
  c.data_dir = ""             # tfds folder of the downstream datasets ("" = tfds default)
  c.out = ""                  # "" = <workdir>/transfer
  c.demo = ml_collections.ConfigDict({"prepare": False, "num_images": 2400, "num_siim": 400,
                                      "seed": 0, "dir": ""})
  c.evals = ml_collections.ConfigDict()
  return c


# the papers' probe protocol: 1 / 10 / 100 % of the training labels, 3 seeds
PROBE_PROTOCOL = dict(fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2))


def demo_config() -> ml_collections.ConfigDict:
  """`configs/transfer/demo.py:runlocal`: what every transfer recipe's `runlocal` runs."""
  return load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "configs", "transfer", "demo.py:runlocal"))


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A recipe's `runlocal`: the same evaluators on the same datasets on a small budget
  (2 probe seeds, <= 5 epochs, small extraction batches) — what the tests run on each
  builder's fixture (`--config.data_dir=<the fixture's tfds folder>`). Returns `c`."""
  c.name += "_runlocal"
  for name in c.evals:
    e = c.evals[name]
    if e.type == "linear_probe":
      e.seeds = (0, 1)
      e.max_epochs = 5
    if "extract_batch_size" in e:
      e.extract_batch_size = 16
  return c


def add(c: ml_collections.ConfigDict, name: str, *, type: str, **kwargs) -> None:  # pylint: disable=redefined-builtin
  """Declare one transfer evaluator (as config.add_eval; kwargs = the Evaluator's)."""
  from asg_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  config_lib.add_eval(c, name, type=type, every_steps=0, **kwargs)


def load_config(path: str) -> ml_collections.ConfigDict:
  """`configs/transfer/x.py[:arg]` -> its get_config(arg)."""
  from asg_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  return config_lib.load_recipe(path)


# ------------------------------------------------------------------------- the model

def make_fns(pretrained) -> dict:
  """predict_fns (asg_jax.predict) of a `Pretrained`, plus, when it has a tag decoder and its
  tag queries:
    `tag_logits(state, images) -> [N, 40]`                the 40 training tags;
    `class_tag_logits(names) -> fn(state, images) -> [N, K]`  any class names (KAD protocol:
      `Pretrained.tag_logits_fn`, the nearest-tag slot of asg_jax/inference.py); raises
      `inference.NoQueryEncoder` when a new name cannot be embedded (an older workdir).
  """
  from asg_jax import predict  # pylint: disable=import-outside-toplevel
  model, config = pretrained.model, pretrained.config
  fns = predict.make_predict_fns(model, None, pretrained.tokenizer, config)
  if config.model.tag_decoder.enabled and "tag_queries" in pretrained.constants:
    queries = jnp.asarray(pretrained.constants["tag_queries"])

    @jax.jit
    def tag_logits(variables, images):
      out = model.apply(variables, images, train=False, method="encode_image")
      return model.apply(variables, out["patch_tokens"], queries, train=False,
                         method=lambda m, p, q, train: m.tag_decoder(p, q, train=train))

    def variables_of(state):
      return {"params": state.params, "batch_stats": state.batch_stats}

    def class_tag_logits(names):
      fn = pretrained.tag_logits_fn(list(names))
      return lambda state, images: fn(variables_of(state), images)
    fns["tag_logits"] = lambda state, images: tag_logits(variables_of(state),
                                                         jnp.asarray(images))
    fns["class_tag_logits"] = class_tag_logits
  return fns


def random_variables(pretrained, seed: int = 0) -> dict:
  """Freshly initialised variables of the same architecture (the random-init baseline).

  Kept on `pretrained` per seed: several transfer recipes run on one loaded model (the
  demo's main job, a notebook, the tests) initialise it once."""
  cache = pretrained.__dict__.setdefault("_random_variables", {})
  if seed in cache:
    return cache[seed]
  from asg_jax.inference import dummy_batch  # pylint: disable=import-outside-toplevel
  batch = {k: jnp.asarray(v) for k, v in dummy_batch(pretrained.config).items()}
  rng = jax.random.PRNGKey(seed)
  queries = pretrained.constants.get("tag_queries")
  from asg_jax import state as state_lib  # pylint: disable=import-outside-toplevel
  v = state_lib.run_once(lambda r, b, q: pretrained.model.init(
      {"params": r, "dropout": r}, b, train=False, tag_queries=q), rng, batch, queries)
  cache[seed] = {"params": v["params"], "batch_stats": v.get("batch_stats", {})}
  return cache[seed]


def imagenet_variables(pretrained, path: str, seed: int = 0, random: dict | None = None) -> dict:
  """The random-init variables (`random`, else `random_variables(pretrained, seed)`) with
  the image tower replaced by the ImageNet weights of a local Hugging Face checkpoint
  (`path`: a folder with model.safetensors / pytorch_model.bin or the file; ViT: `ViTModel`
  layout, ResNet: `ResNetModel`, via the tower's `load_pretrained`); the heads and the text
  tower stay random."""
  from asg_jax import registry  # pylint: disable=import-outside-toplevel
  if not path:
    raise ValueError("config.inits has 'imagenet' but config.imagenet is empty: pass "
                     "--config.imagenet=<local checkpoint of the ImageNet weights> (nothing "
                     "is downloaded; docs/transfer.md)")
  v = random if random is not None else random_variables(pretrained, seed)
  params, stats = dict(v["params"]), dict(v["batch_stats"])
  tower = registry.image_tower(pretrained.config.model.image.name)
  params["image_encoder"], enc_stats = tower.load_pretrained(
      path, params["image_encoder"], stats.get("image_encoder", {}))
  if enc_stats:
    stats["image_encoder"] = enc_stats
  return {"params": params, "batch_stats": stats}


def states(pretrained, config: ml_collections.ConfigDict, step: int) -> list[TransferState]:
  """The encoders `config.inits` names (+ `imagenet` when `config.imagenet` is set)."""
  out = []
  inits = list(config.inits)
  if config.get("imagenet") and "imagenet" not in inits:
    inits.append("imagenet")
  rand = None                   # one random init, shared by `random` and `imagenet`
  for init in inits:
    if init == "pretrained":
      v = pretrained.variables
      out.append(TransferState(v["params"], v.get("batch_stats", {}), step, "pretrained"))
    elif init in ("random", "imagenet"):
      rand = rand or random_variables(pretrained, config.random_seed)
      v = rand if init == "random" else imagenet_variables(
          pretrained, config.get("imagenet", ""), config.random_seed, random=rand)
      out.append(TransferState(v["params"], v["batch_stats"], 0, init))
    else:
      raise ValueError(f"config.inits: {init!r} is not supported (pretrained, random, "
                       f"imagenet)")
  return out


def build(config: ml_collections.ConfigDict, fns: dict, out_dir: str) -> list[tuple[str, Any]]:
  """(name, Evaluator) of every `config.evals` entry (data_dir / cache_dir filled in)."""
  import inspect  # pylint: disable=import-outside-toplevel
  from asg_jax.evaluators import common  # pylint: disable=import-outside-toplevel
  out = []
  for name in sorted(config.evals):
    entry = config.evals[name]
    common.check_entry(name, entry)
    module = common.evaluator_module(entry.type)
    params = inspect.signature(module.Evaluator).parameters
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in entry.items()
              if k not in common.COMMON_KEYS}
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
  from asg_jax.data.demo import downstream as downstream_demo  # pylint: disable=import-outside-toplevel
  d = config.demo
  return d.dir or os.path.join(workdir, "downstream_demo",
                               downstream_demo.folder_name(d.num_images, d.num_siim, d.seed))


def prepare_demo(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Generate the demo stand-ins; build those an evaluator uses (the CheXpert-layout
  cxr_chexpert/demo and demo_5x200, the SIIM-layout cxr_siim/demo)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  import asg_jax.data.builders  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
  from asg_jax.data.demo import downstream as downstream_demo  # pylint: disable=import-outside-toplevel
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
      from asg_jax import console  # pylint: disable=import-outside-toplevel
      tc.progress(f"Building {name} (the demo stand-in) ...")
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
    from asg_jax import distributed  # pylint: disable=import-outside-toplevel
    with distributed.first_process_only("prepare the demo stand-ins") as mine:
      if mine:
        prepare_demo(config, workdir)
  start = time.time()
  step = _step_of(workdir, config.checkpoint)
  fns = make_fns(pretrained)
  evaluators = build(config, fns, out_dir)
  rows, timing = [], {}
  tower = tc.tower_of(pretrained.config)
  for state in states(pretrained, config, step):
    for name, ev in evaluators:
      tc.progress(f"[{state.init}] {name} ({type(ev).__module__.rsplit('.', 1)[-1]})")
      t = time.time()
      for r in ev.rows(state, state.init):
        r["published"] = tc.published(r, tower)
        rows.append(r)
      timing[f"{state.init}/{name}"] = dict(getattr(ev, "timing", {}) or {},
                                            seconds=time.time() - t)
  results = {"workdir": os.path.abspath(workdir) if workdir else "", "step": step,
             "config": config.name, "tower": tower, "rows": rows, "timing": timing,
             "seconds": time.time() - start}
  if jax.process_index() == 0:   # several processes compute the same table; one writes it
    write_results(out_dir, results)
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


# ------------------------------------------------------------------------- results

def _fmt(v, std=None) -> str:
  if v is None:
    return "–"
  s = f"{100 * v:.1f}"
  return s + (f" ± {100 * std:.1f}" if std is not None else "")


def format_table(rows: list[dict], per_class: bool = False) -> str:
  """Markdown: one line per (dataset, protocol, metric, fraction), a column per init, the
  chance level and the published numbers (pretrained / random), all in %."""
  inits = [i for i in ("pretrained", "random", "imagenet") if any(r["init"] == i for r in rows)]
  keys, cell, chance, pub = [], {}, {}, {}
  for r in rows:
    if ("[" in r["metric"]) != per_class:
      continue
    key = (r["dataset"], r["protocol"], r["metric"], r["fraction"])
    if key not in chance:
      keys.append(key)
    cell[key + (r["init"],)] = _fmt(r["value"], r["std"])
    chance[key] = r["chance"] if chance.get(key) is None else chance[key]
    if r["published"] is not None:
      pub[key + (r["init"],)] = _fmt(r["published"])
  head = ["dataset", "protocol", "metric", "labels"] + inits + ["chance"] + [
      f"published ({i})" for i in inits]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 4 + "---:|" * (2 * len(inits) + 1)]
  for key in keys:
    dataset, protocol, metric, fraction = key
    frac = "" if fraction is None else f"{100 * fraction:g} %"
    vals = [cell.get(key + (i,), "–") for i in inits]
    pubs = [pub.get(key + (i,), "–") for i in inits]
    lines.append("| " + " | ".join([dataset, protocol, metric, frac] + vals +
                                   [_fmt(chance[key])] + pubs) + " |")
  return "\n".join(lines)


def write_results(out_dir: str, results: dict) -> None:
  with open(os.path.join(out_dir, RESULTS_JSON), "w") as f:
    json.dump(results, f, indent=1)
  md = [f"# Transfer results: {results.get('config', '')}", "",
        f"Workdir `{results.get('workdir', '')}` (step {results.get('step')}, "
        f"{results.get('tower')} tower). Values in %, mean ± sample std over the probe seeds "
        f"where several; `published` = ../shared/reference/results.md (ASG's row for "
        f"pretrained) where the paper has this dataset and protocol.", "",
        format_table(results["rows"]), ""]
  if any("[" in r["metric"] for r in results["rows"]):
    md += ["## Per class", "", format_table(results["rows"], per_class=True), ""]
  with open(os.path.join(out_dir, RESULTS_MD), "w") as f:
    f.write("\n".join(md))


def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file("config", None, "configs/transfer/<x>.py[:arg]",
                                                flag_values=fv, lock_config=True)
  workdir_flag = flags.DEFINE_string("workdir", "", "pre-trained workdir (or --config.init)",
                                     flag_values=fv)
  out_flag = flags.DEFINE_string("out", "", "output folder (default <workdir>/transfer)",
                                 flag_values=fv)
  verbose_flag = flags.DEFINE_bool("verbose", False, "show every library log line (absl, TF, "
                                   "orbax, tfds); default: the project's lines only",
                                   flag_values=fv)
  fv(argv)
  if config_flag.value is None:
    print("ERROR: --config configs/transfer/<x>.py is required", file=sys.stderr)
    return 2
  from asg_jax import console, locking  # pylint: disable=import-outside-toplevel
  console.configure(verbose=verbose_flag.value)
  workdir = config_flag.value.init or workdir_flag.value
  out = out_flag.value or config_flag.value.out or os.path.join(workdir, "transfer")
  # writing into the workdir (the default out) takes its lock, as training does; reading
  # it with --out elsewhere takes none (a live training run may be evaluated that way)
  inside = bool(workdir) and os.path.commonpath(
      [os.path.abspath(out), os.path.abspath(workdir)]) == os.path.abspath(workdir)
  try:
    with locking.hold_workdir(workdir) if inside else contextlib.nullcontext():
      results = run_transfer(workdir_flag.value, config_flag.value, out_dir=out_flag.value)
  except locking.WorkdirBusyError as e:
    print(f"ERROR: {e} (or write the results elsewhere with --out)", file=sys.stderr)
    return 2
  print(format_table(results["rows"]))
  print(f"wrote {os.path.join(out, RESULTS_JSON)} and {RESULTS_MD}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
