"""Transfer evaluation on COVIDx (`cxr_covidx`; docs/transfer.md): linear probe, top-1
accuracy (softmax over COVID-19 / normal / pneumonia; macro AUROC too), 1 / 10 / 100 %,
3 seeds.

    python -m asg_jax.evaluate --config configs/transfer/covidx.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

`runlocal`: the same evaluators on a small budget (`transfer_config.runlocal`), what the
tests run on the builder's fixture; configs/transfer/demo.py needs no download.
"""
from asg_jax.transfer import config as transfer_config


def get_config(arg=None):
  c = transfer_config.base()
  c.name = "covidx"
  transfer_config.add(c, "probe", type="linear_probe", downstream="cxr_covidx", task="multiclass",
               **transfer_config.PROBE_PROTOCOL, extract_batch_size=128)
  return transfer_config.runlocal(c) if arg == "runlocal" else c
