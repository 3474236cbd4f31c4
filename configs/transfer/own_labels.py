"""Transfer evaluation on YOUR OWN labelled chest X-rays (docs/transfer.md "Evaluate on your
own labelled images"): a labels CSV (image_path + label columns, a `labels` column of
'|'-separated names, or a `label` column) or a folder with one sub-folder per class.

    python -m asg_jax.evaluate --workdir W --config configs/transfer/own_labels.py \
        --config.own.path=PATH --out OUT

builds the images into `OUT/tfds` (asg_jax/data/builders/labelled_images.py; PATH is only
read), then for the pre-trained encoder and a random-init one (+ ImageNet with
`--config.imagenet=...`): the linear probe at 1 / 10 / 100 % of the training labels × 3
seeds with L-BFGS (converged L2 logistic regression, C chosen on validation), zero-shot
with prompts built from the class names and with the tag decoder queried by the names;
results in `OUT/results.json` and `OUT/results.md`. Options: `--config.own.task=multilabel|
multiclass` (default: the layout's), `--config.evals.probe.fractions="(0.1, 1.0)"`,
`--config.own.all_views=True`, `--config.own.uncertain=ones` ... (asg_jax/transfer/config.py
`own_config`). Recipe arguments, comma-separated: `runlocal` (a small budget for CPUs and
the tests), `fine_tune` (adds full fine-tuning at 100 %, 1 seed), `adamw` (adds the papers'
AdamW probe beside L-BFGS).
"""
from asg_jax.transfer import config as transfer_config
from asg_jax.transfer.config import OWN


def get_config(arg=None):
  args = {a.strip() for a in (arg or "").split(",") if a.strip()}
  unknown = args - {"runlocal", "fine_tune", "adamw"}
  if unknown:
    raise ValueError(f"own_labels.py: unknown argument(s) {sorted(unknown)}; expected "
                     "runlocal, fine_tune, adamw (comma-separated)")
  runlocal = "runlocal" in args
  c = transfer_config.base()
  c.name = "own_labels" + ("_runlocal" if runlocal else "")
  seeds = (0, 1) if runlocal else (0, 1, 2)
  batch = 16 if runlocal else 64
  transfer_config.add(c, "probe", type="linear_probe", downstream=OWN, solver="lbfgs",
                      fractions=transfer_config.PROBE_PROTOCOL["fractions"], seeds=seeds,
                      extract_batch_size=batch, max_iter=100 if runlocal else 500)
  if runlocal:
    c.evals.probe.cs = (0.01, 1.0, 100.0)
  if "adamw" in args:
    transfer_config.add(c, "probe_adamw", type="linear_probe", downstream=OWN,
                        fractions=transfer_config.PROBE_PROTOCOL["fractions"], seeds=seeds,
                        extract_batch_size=batch, max_epochs=5 if runlocal else 50)
  if "fine_tune" in args:
    transfer_config.add(c, "fine_tune", type="linear_probe", fine_tune=True, encoder_lr=1e-5,
                        downstream=OWN, fractions=(1.0,), seeds=(0,),
                        max_epochs=2 if runlocal else 50, extract_batch_size=batch)
  transfer_config.add(c, "zeroshot", type="zeroshot", downstream=OWN, val_split="validation",
                      prompts="", extract_batch_size=batch)
  if runlocal:
    c.own.image_size = 64
  return c
