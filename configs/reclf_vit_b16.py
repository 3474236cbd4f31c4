"""RECLF (reconstruction, see docs/reclf.md) with a vit_b16 image encoder and Bio_ClinicalBERT.

Arguments: rung=full|gloria|irm|irm_srm (the ablation ladder: GLoRIA pooling -> +IRM ->
+SRM -> +semantic targets = full RECLF); runlocal.
"""
from asg_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, rung="full", runlocal=False)
  c = config_lib.base_config()
  c.name = "reclf_vit_b16" + ("" if args["rung"] == "full" else f"_{args['rung']}")
  c.model.image.name = "vit"
  c.model.image.pretrained = "facebook/deit-base-patch16-224"
  c.model.text.pretrained = "emilyalsentzer/Bio_ClinicalBERT"
  config_lib.apply_reclf_rung(c, args["rung"])
  c.model.dtype = "bfloat16"     # compute dtype on TPU/GPU (parameters stay float32)
  if args["runlocal"]:
    config_lib.make_runlocal(c)
  return config_lib.finalize(c)
