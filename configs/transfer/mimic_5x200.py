"""Cross-modal retrieval against REPORTS and zero-shot on MIMIC-CXR 5×200 (`mimic_cxr/5x200`,
built from the MIMIC-CXR-JPG manual download + `mimic-cxr-2.0.0-chexpert.csv`; docs/data.md
"Downstream datasets", docs/transfer.md):

    python -m asg_jax.evaluate --config configs/transfer/mimic_5x200.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

image→report and report→image Precision@K / Recall@K (K = 1, 5, 10), a hit being the same
class and, separately (`*_exact_*`), the exact report / image; zero-shot top-1 + AUROC
(prompts + tag decoder) on the same 1,000 images.

`runlocal`: the same evaluators on `mimic_cxr/demo_5x200` (the 5×200 rule with 8 per task,
longest side 128), a tiny set for fixtures and CPU runs; build it first from any folder in
the MIMIC layout (a hand-made fixture, or the synthetic demo's `<workdir>/data/demo_manual`):

    tfds.builder("mimic_cxr/demo_5x200", data_dir=D).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=M))

and pass `--config.data_dir=D`.
"""
from asg_jax.transfer import config as transfer_config


def get_config(arg=None):
  runlocal = arg == "runlocal"
  if arg not in (None, "", "runlocal"):
    raise ValueError(f"configs/transfer/mimic_5x200.py: unknown argument {arg!r} "
                     "(expected none or 'runlocal')")
  c = transfer_config.base()
  c.name = "mimic_5x200" + ("_runlocal" if runlocal else "")
  data = "mimic_cxr/demo_5x200" if runlocal else "mimic_cxr/5x200"
  batch = 16 if runlocal else 128
  transfer_config.add(c, "retrieval_reports", type="retrieval", downstream=data,
               texts="reports", ks=(1, 5, 10), extract_batch_size=batch)
  transfer_config.add(c, "zeroshot", type="zeroshot", downstream=data, prompts="chexpert",
               extract_batch_size=batch)
  return c
