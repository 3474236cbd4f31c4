"""Segmentation transfer on SIIM-ACR Pneumothorax (`cxr_siim`; docs/transfer.md
"Segmentation"):

    python -m asg_jax.evaluate --config configs/transfer/siim.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds \
        [--config.imagenet=/ckpt/resnet-50]        # adds the ImageNet-init rows

frozen pre-trained encoder + decoder (SETR-style for ViT, U-Net for ResNet-50), trained on
1 / 10 / 100 % of the balanced training set (all positives + as many negatives), batch 8,
AdamW lr 5e-4 wd 0.05, 10·focal − log(soft Dice), <= 50 epochs with early stopping on the
validation loss; test Dice beside results.md's, for the pre-trained, random-init (and
ImageNet-init) encoders. `--config.evals.seg.freeze_encoder=False` fine-tunes the encoder.

`runlocal`: the same protocol, tiny (decoder widths 8, 1 epoch, figures of 2 images), on
whatever `cxr_siim` config data_dir holds (the tests pass their fixture with
`--config.evals.seg.downstream=cxr_siim/fixture`).
"""
from asg_jax.transfer import config as transfer_config
from asg_jax.transfer import segmentation


def get_config(arg=None):
  runlocal = arg == "runlocal"
  c = transfer_config.base()
  c.name = "siim" + ("_runlocal" if runlocal else "")
  transfer_config.add(c, "seg", type="segmentation", downstream="cxr_siim", balance=True,
               **segmentation.protocol(batch_size=8, runlocal=runlocal))
  return c
