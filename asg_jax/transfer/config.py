"""The transfer config schema and the helpers recipes use (configs/transfer/*.py import this
module, never a command line):

    from asg_jax.transfer import config as transfer_config

    def get_config(arg=None):
      c = transfer_config.base()
      transfer_config.add(c, "probe", type="linear_probe", downstream="cxr_chexpert",
                          **transfer_config.PROBE_PROTOCOL)
      return transfer_config.runlocal(c) if arg == "runlocal" else c

`type` names a transfer evaluator (`registry.TRANSFER_EVALUATORS`: linear_probe, zeroshot,
retrieval, segmentation) or a dotted module path.
"""
from __future__ import annotations

import os

import ml_collections

from asg_jax import config as config_lib

INITS = ("pretrained", "random")
OWN = "own"   # the `downstream` of evaluators reading `config.own.path` (transfer/own.py)

# the papers' probe protocol: 1 / 10 / 100 % of the training labels, 3 seeds
PROBE_PROTOCOL = dict(fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2))


def base() -> ml_collections.ConfigDict:
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
  c.manual_dir = ""           # set: build every evaluator's downstream dataset that is not
                              # built in data_dir from this manual download (transfer/own.py)
  c.own = own_config()        # your own labelled images (configs/transfer/own_labels.py)
  c.evals = ml_collections.ConfigDict()
  return c


def own_config() -> ml_collections.ConfigDict:
  """`config.own`: the user's labelled images (asg_jax/transfer/own.py; the builder
  asg_jax/data/builders/labelled_images.py). Used when an evaluator's downstream is "own"."""
  return ml_collections.ConfigDict({
      "path": "",                  # a labels CSV or a folder with one sub-folder per class
      "name": "",                  # dataset name ("" = the folder's)
      "task": "auto",              # auto (the layout's) | multilabel | multiclass
      "image_size": 256,           # stored longest side
      "uncertain": "zeros",        # -1 cells: zeros | ones | ignore (the row is filtered)
      "all_views": False,          # keep non-frontal views (a view column's other values)
      "split_seed": 0,             # the seeded split by patient (no split column)
      "validation_fraction": 0.1,  # of the patients
      "test_fraction": 0.2,
      "label_columns": (),         # () = every column that is not a known optional one
      "rebuild": "auto",           # auto | never | always
      "data_dir": "",              # "" = <out>/tfds
  })


def add(c: ml_collections.ConfigDict, name: str, *, type: str, **kwargs) -> None:  # pylint: disable=redefined-builtin
  """Declare one transfer evaluator (as config.add_eval; kwargs = the Evaluator's)."""
  config_lib.add_eval(c, name, type=type, every_steps=0, **kwargs)


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


def load(path: str) -> ml_collections.ConfigDict:
  """`configs/transfer/x.py[:arg]` -> its get_config(arg)."""
  return config_lib.load_recipe(path)


def demo() -> ml_collections.ConfigDict:
  """`configs/transfer/demo.py:runlocal`: what every transfer recipe's `runlocal` runs."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  return load(os.path.join(root, "configs", "transfer", "demo.py:runlocal"))
