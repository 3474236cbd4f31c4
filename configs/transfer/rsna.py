"""Transfer evaluation on RSNA Pneumonia (`cxr_rsna`; docs/transfer.md):

    python -m asg_jax.evaluate --config configs/transfer/rsna.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

linear probe (AUROC, 1 / 10 / 100 %, 3 seeds) and zero-shot AUROC / F1 / ACC, threshold
chosen on validation (GLoRIA prompts vs negative prompts; the tag decoder's `pneumonia`).
`runlocal`: the same evaluators on a small budget (`transfer_config.runlocal`), what the
tests run on the builder's fixture; configs/transfer/demo.py needs no download.
"""
from asg_jax.transfer import config as transfer_config


def get_config(arg=None):
  c = transfer_config.base()
  c.name = "rsna"
  transfer_config.add(c, "probe", type="linear_probe", downstream="cxr_rsna",
               **transfer_config.PROBE_PROTOCOL, extract_batch_size=128)
  transfer_config.add(c, "zeroshot", type="zeroshot", downstream="cxr_rsna",
               val_split="validation", prompts="rsna", extract_batch_size=128)
  return transfer_config.runlocal(c) if arg == "runlocal" else c
