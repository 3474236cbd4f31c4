"""Throughput of the segmentation transfer's train step (images/s), CPU.

    .venv/bin/python benchmarks/segmentation_step.py [--configs demo,demo_vit,resnet50,vit_b16]
        [--steps 5] [--batch 8]

Times the evaluator's own jitted step (`asg_jax.transfer.segmentation.Evaluator`: the
project's `train.make_train_step`, sharded batch, donated state, augmentation on) on random
images and masks, one device, after one warm-up (compiling) step:

- `demo`: the demo ResNet (1 block per stage, width 16) at 112 px, U-Net widths 32 (the
  `configs/transfer/demo_seg.py` recipe);
- `demo_vit`: the demo ViT (patch 8, 2 layers, 96 wide) at 112 px, SETR widths 32;
- `resnet50` / `vit_b16`: the paper models at 224 px with the paper decoders (frozen
  encoder; `--finetune` trains it too).

Prints a Markdown table (and the compile time of the first step).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--configs", default="demo,demo_vit,resnet50,vit_b16")
  p.add_argument("--steps", type=int, default=5)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--finetune", action="store_true")
  return p.parse_args()


ARGS = _parse() if __name__ == "__main__" else None
if ARGS is not None:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402


def model_config(name: str):
  from asg_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  c = config_lib.base_config()
  c.unlock()
  if name.startswith("demo"):
    c.data.image_size, c.data.resize, c.data.normalization = 112, 128, "half"
    c.model.image.name = "vit" if name == "demo_vit" else "resnet50"
    c.model.image.resnet_stage_sizes, c.model.image.resnet_width = (1, 1, 1, 1), 16
    c.model.image.patch_size, c.model.image.hidden_size = 8, 96
    c.model.image.num_layers, c.model.image.num_heads, c.model.image.mlp_dim = 2, 4, 192
    channels, hidden = (32,), 32
  else:
    c.data.image_size, c.data.resize = 224, 256
    c.model.image.name = "vit" if name == "vit_b16" else "resnet50"
    channels, hidden = (), 768
  return c, channels, hidden


def measure(name: str, steps: int, batch: int, finetune: bool) -> dict:
  from asg_jax import parallel  # pylint: disable=import-outside-toplevel
  from asg_jax.data import geometry  # pylint: disable=import-outside-toplevel
  from asg_jax.evaluate import TransferState  # pylint: disable=import-outside-toplevel
  from asg_jax.transfer.segmentation import Evaluator  # pylint: disable=import-outside-toplevel
  config, channels, hidden = model_config(name)
  ev = Evaluator({"config": config}, downstream="none", batch_size=batch, channels=channels,
                 setr_hidden=hidden, freeze_encoder=not finetune, num_devices=1)
  s = config.data.image_size
  key = jax.random.PRNGKey(0)
  dummy = {"image": jax.ShapeDtypeStruct((2, s, s, 3), np.float32),
           "mask": jax.ShapeDtypeStruct((2, s, s, 1), np.float32)}
  shapes = jax.eval_shape(lambda b: ev.model.init({"params": key, "dropout": key}, b,
                                                  train=False), dummy)
  rng = np.random.default_rng(0)
  enc = jax.tree.map(lambda a: rng.normal(0, 0.02, a.shape).astype(np.float32),
                     shapes["params"]["image_encoder"])
  stats = {"image_encoder": jax.tree.map(lambda a: np.ones(a.shape, np.float32),
                                         shapes["batch_stats"]["image_encoder"])} \
      if "image_encoder" in shapes.get("batch_stats", {}) else {}
  mesh = ev.mesh()
  with jax.set_mesh(mesh):
    ts, tx = ev.init_state(TransferState({"image_encoder": enc}, stats), 0, mesh)
    step = ev.train_step(ts, tx, mesh)
    images = rng.integers(0, 255, (batch, s, s, 1), dtype=np.uint8)
    masks = (rng.random((batch, s, s, 1)) < 0.1).astype(np.float32)
    batch_np = {"image": geometry.normalize_numpy(images, "half"), "mask": masks}
    t = time.time()
    ts, m = step(ts, parallel.shard_batch(batch_np, mesh), {})
    jax.block_until_ready(m)
    compile_s = time.time() - t
    t = time.time()
    for _ in range(steps):
      ts, m = step(ts, parallel.shard_batch(batch_np, mesh), {})
    jax.block_until_ready(m)
    sec = time.time() - t
  from asg_jax.models.segmentation import num_params  # pylint: disable=import-outside-toplevel
  return {"config": name, "size": s, "batch": batch, "decoder_params": num_params(ts.params["decoder"]),
          "compile_s": compile_s, "images_per_s": steps * batch / sec, "finetune": finetune}


def main() -> None:
  rows = [measure(n, ARGS.steps, ARGS.batch, ARGS.finetune) for n in ARGS.configs.split(",")]
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cores, "
        f"{time.strftime('%Y-%m-%d')}")
  print("| config | input | batch | decoder params | encoder | first step (compile) s | images/s |")
  print("|---|---|---|---:|---|---:|---:|")
  for r in rows:
    print(f"| {r['config']} | {r['size']}² | {r['batch']} | {r['decoder_params']:,} | "
          f"{'fine-tuned' if r['finetune'] else 'frozen'} | {r['compile_s']:.1f} | "
          f"{r['images_per_s']:.1f} |")


if __name__ == "__main__":
  main()
