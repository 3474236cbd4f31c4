"""Transfer evaluation on COVIDx (`cxr_covidx`; docs/transfer.md): linear probe, top-1
accuracy (softmax over COVID-19 / normal / pneumonia; macro AUROC too), 1 / 10 / 100 %,
3 seeds.

    python -m asg_jax.evaluate --config configs/transfer/covidx.py \
        --config.init=workdir/asg --config.data_dir=/data/tfds

`runlocal`: the demo stand-in (configs/transfer/demo.py:runlocal).
"""
from asg_jax import evaluate


def get_config(arg=None):
  if arg == "runlocal":
    return evaluate.demo_config()
  c = evaluate.base_transfer_config()
  c.name = "covidx"
  evaluate.add(c, "probe", type="linear_probe", downstream="cxr_covidx", task="multiclass",
               **evaluate.PROBE_PROTOCOL, extract_batch_size=128)
  return c
