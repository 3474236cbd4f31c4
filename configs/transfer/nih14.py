"""Transfer evaluation on NIH ChestX-ray14 (`cxr_nih14`; docs/transfer.md): linear probe
(14 classes, macro AUROC, 1 / 10 / 100 %, 3 seeds) and zero-shot via the tag decoder (the
NIH classes that are ASG tags; no NIH prompt set is shipped).

    python -m asg_jax.evaluate --config configs/transfer/nih14.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

`runlocal`: the same evaluators on a small budget (`transfer_config.runlocal`), what the
tests run on the builder's fixture; configs/transfer/demo.py needs no download.
"""
from asg_jax.transfer import config as transfer_config


def get_config(arg=None):
  c = transfer_config.base()
  c.name = "nih14"
  transfer_config.add(c, "probe", type="linear_probe", downstream="cxr_nih14",
               **transfer_config.PROBE_PROTOCOL, extract_batch_size=128)
  transfer_config.add(c, "zeroshot", type="zeroshot", downstream="cxr_nih14",
               val_split="validation", protocols=("tags",), extract_batch_size=128,
               tag_names={"Effusion": "pleural effusion", "Pleural_Thickening": "pleural thicken",
                          "Infiltration": "infiltration", "Mass": "mass", "Nodule": "nodule"})
  return transfer_config.runlocal(c) if arg == "runlocal" else c
