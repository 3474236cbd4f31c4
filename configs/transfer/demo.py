"""Transfer evaluation of a demo workdir on the CheXpert-layout demo stand-in
(asg_jax.data.demo.downstream; docs/transfer.md):

    python -m asg_jax.evaluate --workdir workdir/demo --config configs/transfer/demo.py

generates + builds `cxr_chexpert/demo` and `cxr_chexpert/demo_5x200` into
`<workdir>/downstream_demo/` (once), then, for the pre-trained and a random-init encoder:
linear probe at 1 / 10 / 100 % (3 seeds; AdamW on raw and on z-scored features, and the
converged L-BFGS probe), full fine-tuning at 100 % (1 seed, 3 epochs),
zero-shot AUROC / F1 / ACC (prompts and tag decoder; thresholds on validation), zero-shot
top-1 on demo_5x200 and image↔prompt retrieval P@K / R@K on demo_5x200. `runlocal`: fewer images and seeds (tests).
`tiny`: every protocol of the project once, at its smallest — linear probe, fine-tuning,
zero-shot, retrieval and segmentation (the SIIM-layout stand-in) on 60 + 8 images, one seed,
the pre-trained encoder only:
the main job end to end on 1 / 8 devices and 2 processes (tests/test_main_job_devices.py).
"""
from asg_jax.transfer import config as transfer_config


def get_config(arg=None):
  if arg == "tiny":
    return _tiny()
  runlocal = arg == "runlocal"
  c = transfer_config.base()
  c.name = "demo" + ("_runlocal" if runlocal else "")
  c.demo.prepare = True
  # 2400 studies (base_transfer_config's default, shared with demo_seg.py): 1 % of the
  # training split is then 23 films with 1-4 positives of every finding (at 600 it was 5
  # films, 3 of the 5 findings without a positive: docs/demo.md)
  if runlocal:
    c.demo.num_images = 120
    c.demo.num_siim = 8     # this recipe segments nothing (configs/transfer/demo_seg.py does)
  seeds = (0, 1) if runlocal else (0, 1, 2)
  transfer_config.add(c, "probe", type="linear_probe", downstream="cxr_chexpert/demo",
               fractions=(0.01, 0.1, 1.0), seeds=seeds, max_epochs=10 if runlocal else 50)
  if not runlocal:   # the same probe on z-scored features (docs/transfer.md: scale matters)
    transfer_config.add(c, "probe_zscored", type="linear_probe", downstream="cxr_chexpert/demo",
                 fractions=(0.01, 0.1, 1.0), seeds=seeds, standardize=True)
  if not runlocal:   # the converged probe (L-BFGS, C on validation; raw features): seed s
    # draws the fraction's films (docs/transfer.md "The converged probe")
    transfer_config.add(c, "probe_lbfgs", type="linear_probe", solver="lbfgs",
                 downstream="cxr_chexpert/demo", fractions=(0.01, 0.1, 1.0), seeds=seeds)
  if not runlocal:   # full fine-tuning, 100 % and one seed only (docs/transfer.md "Fine-tuning")
    transfer_config.add(c, "fine_tune", type="linear_probe", fine_tune=True, encoder_lr=1e-5,
                 downstream="cxr_chexpert/demo", fractions=(1.0,), seeds=(0,), max_epochs=3)
  transfer_config.add(c, "zeroshot", type="zeroshot", downstream="cxr_chexpert/demo",
               val_split="validation", prompts="chexpert")
  transfer_config.add(c, "zeroshot_5x200", type="zeroshot",
               downstream="cxr_chexpert/demo_5x200", prompts="chexpert")
  transfer_config.add(c, "retrieval_5x200", type="retrieval",
               downstream="cxr_chexpert/demo_5x200", prompts="chexpert", max_prompts_per_class=10)
  return c


def _tiny():
  from asg_jax.transfer import segmentation  # pylint: disable=import-outside-toplevel
  c = transfer_config.base()
  c.name = "demo_tiny"
  c.inits = ("pretrained",)
  c.demo.prepare = True
  c.demo.num_images, c.demo.num_siim = 60, 8
  transfer_config.add(c, "probe", type="linear_probe", downstream="cxr_chexpert/demo",
               fractions=(0.1, 1.0), seeds=(0,), max_epochs=3)
  transfer_config.add(c, "fine_tune", type="linear_probe", fine_tune=True, encoder_lr=1e-5,
               downstream="cxr_chexpert/demo", fractions=(1.0,), seeds=(0,), max_epochs=1)
  transfer_config.add(c, "zeroshot", type="zeroshot", downstream="cxr_chexpert/demo",
               val_split="validation", prompts="chexpert")
  transfer_config.add(c, "retrieval_5x200", type="retrieval",
               downstream="cxr_chexpert/demo_5x200", prompts="chexpert", max_prompts_per_class=4)
  kw = dict(segmentation.protocol(batch_size=8, runlocal=True), fractions=(1.0,))
  transfer_config.add(c, "seg", type="segmentation", downstream="cxr_siim/demo", balance=True, **kw)
  return c
