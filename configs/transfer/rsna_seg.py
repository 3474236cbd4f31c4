"""Segmentation transfer on RSNA Pneumonia (`cxr_rsna`, masks filled from the boxes;
docs/transfer.md "Segmentation"):

    python -m asg_jax.evaluate --config configs/transfer/rsna_seg.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds \
        [--config.imagenet=/ckpt/resnet-50]        # adds the ImageNet-init rows

frozen pre-trained encoder + decoder (SETR-style for ViT, U-Net for ResNet-50), trained on
1 / 10 / 100 % of the training split, batch 16, AdamW lr 5e-4 wd 0.05, 10·focal −
log(soft Dice), <= 50 epochs with early stopping on the validation loss; test Dice beside
results.md's, for the pre-trained, random-init (and ImageNet-init) encoders.

`runlocal`: the same protocol, tiny (decoder widths 8, 1 epoch, batch 8), on whatever
`cxr_rsna` config data_dir holds (the tests pass their fixture with
`--config.evals.seg.downstream=cxr_rsna/fixture`).
"""
from asg_jax.transfer import config as transfer_config
from asg_jax.transfer import segmentation


def get_config(arg=None):
  runlocal = arg == "runlocal"
  c = transfer_config.base()
  c.name = "rsna_seg" + ("_runlocal" if runlocal else "")
  transfer_config.add(c, "seg", type="segmentation", downstream="cxr_rsna",
               **segmentation.protocol(batch_size=16, runlocal=runlocal))
  return c
