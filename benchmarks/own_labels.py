"""Own labelled X-rays (issue 29): the `labelled_images` build speed on the real NIH
ChestX-ray14 sample (200 PNGs at 1024², ../shared/realdata/nih-sample) and the L-BFGS probe's
fit time for every fraction × seed × C of one dataset at the demo's size.

    .venv/bin/python benchmarks/own_labels.py [--threads 1] [--skip_build] [--skip_fit]

Build: the NIH sample as a user's CSV (`image_path`, `labels`, `patient_id`, `view`), built
by `labelled_images.prepare` (decode → resize to 256 → PNG → tfrecord, one Python process)
with TensorFlow limited to `--threads` threads; images/s = built images / wall s, TensorFlow
warmed up first. Fit: 2,340 × 2,048-d features with 5 classes (the demo stand-in's training
split and the demo ResNet's feature width; a planted linear model plus noise, raw scales
0.2–5), 3 fractions (1 / 10 / 100 %) × 3 seeds × 6 C, timed as
`lbfgs_probe.fit_runs` (each fraction on its own rows; seed s draws the rows) and, for
reference, one fraction × one seed × 6 C as a single masked `fit_lbfgs` over all rows (the
way every run was fitted before). CPU seconds = process time (user + system).
"""
from __future__ import annotations

import argparse
import csv
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
REAL = pathlib.Path(__file__).resolve().parents[2] / "shared" / "realdata" / "nih-sample"


def build_speed(threads: int) -> dict:
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.threading.set_intra_op_parallelism_threads(threads)
  tf.config.threading.set_inter_op_parallelism_threads(threads)
  from asg_jax.data.builders import labelled_images  # pylint: disable=import-outside-toplevel
  with open(REAL / "Data_Entry_2017_v2020.sample.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  tf.io.encode_png(tf.zeros((8, 8, 1), tf.uint8))         # warm TensorFlow up
  with tempfile.TemporaryDirectory() as tmp:
    src = pathlib.Path(tmp) / "mine"
    src.mkdir()
    with open(src / "labels.csv", "w", newline="") as f:
      w = csv.writer(f)
      w.writerow(["image_path", "labels", "patient_id", "view"])
      for r in rows:
        w.writerow([str(REAL / "images" / r["Image Index"]), r["Finding Labels"],
                    r["Patient ID"], r["View Position"]])
    t0, c0 = time.time(), time.process_time()
    out = labelled_images.prepare(str(src / "labels.csv"), os.path.join(tmp, "tfds"),
                                  all_views=True)
    wall, cpu = time.time() - t0, time.process_time() - c0
  n = sum(v["examples"] for v in out["summary"]["splits"].values())
  return {"images": n, "wall_s": wall, "cpu_s": cpu, "images_per_s": n / wall}


def fit_time() -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from asg_jax.data.builders import downstream  # pylint: disable=import-outside-toplevel
  from asg_jax.transfer import lbfgs_probe  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  n, d, c = 2340, 2048, 5
  z = rng.normal(size=(n, d)).astype(np.float32)
  x = z * rng.uniform(0.2, 5.0, size=d).astype(np.float32) + rng.normal(size=d).astype(np.float32)
  y = ((z[:, :64] @ rng.normal(size=(64, c)) * 0.3 + rng.normal(size=(n, c))) > 0.5).astype(np.float32)
  ids = [f"{i:05d}" for i in range(n)]
  fractions, seeds, cs = (0.01, 0.1, 1.0), (0, 1, 2), lbfgs_probe.DEFAULT_GRID
  masks = np.zeros((len(fractions) * len(seeds), n), bool)
  for f, frac in enumerate(fractions):
    for s in seeds:
      chosen = set(downstream.select_fraction(ids, frac, 42 + s))
      masks[f * len(seeds) + s] = [i in chosen for i in ids]
  keys = jnp.stack([jax.random.PRNGKey(s) for _ in fractions for s in seeds])
  t0, c0 = time.time(), time.process_time()
  fit = lbfgs_probe.fit_runs(x, y, masks, keys, cs)
  out = {"runs_x_c": int(np.prod(fit["iterations"].shape)), "rows": [int(m.sum()) for m in masks[::3]],
         "grouped_wall_s": time.time() - t0, "grouped_cpu_s": time.process_time() - c0,
         "iterations_max": int(fit["iterations"].max())}
  one = masks[-1:]                                          # 100 %, one seed, as before
  t0, c0 = time.time(), time.process_time()
  jax.block_until_ready(lbfgs_probe.fit_lbfgs(x, y, jnp.asarray(masks[3:4]), keys[:1], cs))
  out["masked_10pct_one_seed_cpu_s"] = time.process_time() - c0
  t0, c0 = time.time(), time.process_time()
  jax.block_until_ready(lbfgs_probe.fit_lbfgs(x, y, jnp.asarray(one), keys[:1], cs))
  out["masked_100pct_one_seed_cpu_s"] = time.process_time() - c0
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--skip_build", action="store_true")
  p.add_argument("--skip_fit", action="store_true")
  a = p.parse_args()
  if not a.skip_build:
    if not REAL.is_dir():
      print(f"build: skipped, {REAL} not found")
    else:
      print("build:", build_speed(a.threads), flush=True)
  if not a.skip_fit:
    print("fit:", fit_time(), flush=True)


if __name__ == "__main__":
  main()
