"""Transfer evaluation on COVIDx (`cxr_covidx`; docs/transfer.md): linear probe, top-1
accuracy (softmax over COVID-19 / normal / pneumonia; macro AUROC too), 1 / 10 / 100 %,
3 seeds.

    python -m asg_jax.evaluate --config configs/transfer/covidx.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

`runlocal`: the same evaluators on a small budget (`evaluate.runlocal`), what the
tests run on the builder's fixture; configs/transfer/demo.py needs no download.
"""
from asg_jax import evaluate


def get_config(arg=None):
  c = evaluate.base_transfer_config()
  c.name = "covidx"
  evaluate.add(c, "probe", type="linear_probe", downstream="cxr_covidx", task="multiclass",
               **evaluate.PROBE_PROTOCOL, extract_batch_size=128)
  return evaluate.runlocal(c) if arg == "runlocal" else c
