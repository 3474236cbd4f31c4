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
    import importlib.util, os  # pylint: disable=import-outside-toplevel,multiple-imports
    spec = importlib.util.spec_from_file_location(
        "transfer_demo", os.path.join(os.path.dirname(__file__), "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config("runlocal")
  c = evaluate.base_transfer_config()
  c.name = "covidx"
  evaluate.add(c, "probe", type="linear_probe", downstream="cxr_covidx", task="multiclass",
               fractions=(0.01, 0.1, 1.0), seeds=(0, 1, 2), extract_batch_size=128)
  return c
