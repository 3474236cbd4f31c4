"""Transfer-evaluation speed (issue "Transfer evaluation"; results in benchmarks/RESULTS.md):

    .venv/bin/python benchmarks/transfer_speed.py [--config demo|asg_vit_b16] [--images 256]
        [--batch 64] [--train 540,20000] [--dim 0]

1. Feature extraction: the jitted image encoder of a random-init model built from
   `configs/<config>.py` (the linear probe's `image_feature`, the same
   `predict.make_predict_fns(...).encode_images` the evaluators call) on `--images`
   random grey films at the tower's input size, batch `--batch`, after one warm-up batch:
   images/s.
2. The probe fit: `linear_probe.fit_probes` for the papers' 3 fractions x 3 seeds (9 runs
   in one jitted problem) on random features [N, D] with 5 labels, N in `--train`, D = the
   tower's feature width (or `--dim`), a 10 % validation split; the full 50 epochs are run
   (patience larger than the epochs) so the figure is the worst case: seconds incl. and
   excl. compilation.
Prints one JSON line per measurement.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402


def load_recipe(name: str, arg: str | None = None):
  spec = importlib.util.spec_from_file_location(name, REPO / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def extraction(config, num_images: int, batch: int) -> dict:
  from asg_jax import predict  # pylint: disable=import-outside-toplevel
  from asg_jax.models import vlp  # pylint: disable=import-outside-toplevel

  class State:   # what predict_fns read of a state
    def __init__(self, v):
      self.params, self.batch_stats = v["params"], v.get("batch_stats", {})

  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  s = config.data.image_size
  images = np.random.default_rng(0).uniform(0, 1, (batch, s, s, 3)).astype(np.float32)
  t = time.time()   # the image path's variables only (what extraction reads)
  variables = jax.jit(lambda r, x: model.init({"params": r, "dropout": r}, x, train=False,
                                              method="encode_image"))(
      jax.random.PRNGKey(0), jnp.asarray(images[:2]))
  init_s = time.time() - t
  fns = predict.make_predict_fns(model, None, config)
  state = State(variables)
  t = time.time()
  jax.block_until_ready(fns.encode_images(state, images)["image_feature"])
  compile_s = time.time() - t
  n = max(1, num_images // batch)
  t = time.time()
  for _ in range(n):
    out = fns.encode_images(state, images)
  jax.block_until_ready(out["image_feature"])
  seconds = time.time() - t
  return {"what": "feature_extraction", "config": config.name, "tower": config.model.image.name,
          "image_size": s, "batch": batch, "images": n * batch,
          "images_per_s": round(n * batch / seconds, 1), "compile_s": round(compile_s, 1),
          "init_s": round(init_s, 1), "feature_dim": int(out["image_feature"].shape[-1])}


def probe_fit(num_train: int, dim: int, seeds=(0, 1, 2), fractions=(0.01, 0.1, 1.0)) -> dict:
  from asg_jax.transfer import linear_probe  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  num_val = max(20, num_train // 10)
  x = rng.normal(size=(num_train + num_val, dim)).astype(np.float32)
  w = rng.normal(size=(dim, 5))
  y = (x @ w + rng.normal(size=(len(x), 5)) * 4 > 0).astype(np.float32)
  masks = np.zeros((len(fractions) * len(seeds), num_train), bool)
  for f, frac in enumerate(fractions):
    rows = rng.permutation(num_train)[:max(1, int(round(frac * num_train)))]
    masks[f * len(seeds):(f + 1) * len(seeds), rows] = True
  keys = jnp.stack([jax.random.PRNGKey(s) for _ in fractions for s in seeds])
  args = (jnp.asarray(x[:num_train]), jnp.asarray(y[:num_train]), jnp.asarray(masks), keys,
          jnp.asarray(x[num_train:]), jnp.asarray(y[num_train:]))
  t = time.time()
  fit = jax.block_until_ready(linear_probe.fit_probes(*args, patience=1000))
  first = time.time() - t
  t = time.time()
  fit = jax.block_until_ready(linear_probe.fit_probes(*args, patience=1000))
  again = time.time() - t
  return {"what": "probe_fit", "train": num_train, "dim": dim, "runs": int(masks.shape[0]),
          "epochs": [int(e) for e in np.asarray(fit["epochs"])],
          "seconds_incl_compile": round(first, 2), "seconds_compiled": round(again, 2)}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--config", default="demo")
  p.add_argument("--images", type=int, default=256)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--train", default="540,20000")
  p.add_argument("--dim", type=int, default=0)
  a = p.parse_args(argv)
  config = load_recipe(a.config)
  e = extraction(config, a.images, a.batch)
  print(json.dumps(e), flush=True)
  for n in (int(v) for v in a.train.split(",")):
    print(json.dumps(probe_fit(n, a.dim or e["feature_dim"])), flush=True)


if __name__ == "__main__":
  main()
