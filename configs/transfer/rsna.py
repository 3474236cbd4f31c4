"""Transfer evaluation on RSNA Pneumonia (`cxr_rsna`; docs/transfer.md):

    python -m asg_jax.evaluate --config configs/transfer/rsna.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

linear probe (AUROC, 1 / 10 / 100 %, 3 seeds) and zero-shot AUROC / F1 / ACC, threshold
chosen on validation (GLoRIA prompts vs negative prompts; the tag decoder's `pneumonia`).
`runlocal`: the same evaluators on a small budget (`evaluate.runlocal`), what the
tests run on the builder's fixture; configs/transfer/demo.py needs no download.
"""
from asg_jax import evaluate


def get_config(arg=None):
  c = evaluate.base_transfer_config()
  c.name = "rsna"
  evaluate.add(c, "probe", type="linear_probe", downstream="cxr_rsna",
               **evaluate.PROBE_PROTOCOL, extract_batch_size=128)
  evaluate.add(c, "zeroshot", type="transfer_zeroshot", downstream="cxr_rsna",
               val_split="validation", prompts="rsna", extract_batch_size=128)
  return evaluate.runlocal(c) if arg == "runlocal" else c
