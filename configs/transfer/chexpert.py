"""Transfer evaluation on CheXpert (`cxr_chexpert`, built from the manual download;
docs/data.md "Downstream datasets", docs/transfer.md):

    python -m asg_jax.evaluate --config configs/transfer/chexpert.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

linear probe (5 competition tasks, macro AUROC, 1 / 10 / 100 %, 3 seeds) and zero-shot
AUROC / F1 / ACC (prompts + tag decoder) on the official validation set (our test);
zero-shot top-1 and retrieval on `cxr_chexpert/5x200`. `runlocal`: the same evaluators on
a small budget (`transfer_config.runlocal`), what the tests run on the builder's fixture;
configs/transfer/demo.py needs no download.
"""
from asg_jax.transfer import config as transfer_config


def get_config(arg=None):
  c = transfer_config.base()
  c.name = "chexpert"
  transfer_config.add(c, "probe", type="linear_probe", downstream="cxr_chexpert",
               **transfer_config.PROBE_PROTOCOL, extract_batch_size=128)
  transfer_config.add(c, "zeroshot", type="zeroshot", downstream="cxr_chexpert",
               val_split="validation", prompts="chexpert", extract_batch_size=128)
  transfer_config.add(c, "zeroshot_5x200", type="zeroshot", downstream="cxr_chexpert/5x200",
               prompts="chexpert", extract_batch_size=128)
  transfer_config.add(c, "retrieval_5x200", type="retrieval", downstream="cxr_chexpert/5x200",
               prompts="chexpert", max_prompts_per_class=10, extract_batch_size=128)
  return transfer_config.runlocal(c) if arg == "runlocal" else c
