"""ASG with a ResNet-50 image encoder: input upsampled to 299, local features = layer3
(1024 channels on a 19×19 grid), global = pooled layer4 (2048) (asg.md). The tag decoder
attends to the 1024-d layer3 tokens (projected to d_model = 768).

Arguments: ablation=full|ira|ira_arsa|ira_irl|ira_irl_erl; runlocal.
"""
from asg_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, ablation="full", runlocal=False)
  c = config_lib.base_config()
  c.name = "asg_resnet50" + ("" if args["ablation"] == "full" else f"_{args['ablation']}")
  c.model.image.name = "resnet50"
  c.model.image.input_resize = 299
  c.model.image.pretrained = "microsoft/resnet-50"
  c.model.text.pretrained = "emilyalsentzer/Bio_ClinicalBERT"
  config_lib.apply_asg_ablation(c, args["ablation"])
  c.model.dtype = "bfloat16"     # compute dtype on TPU/GPU (parameters stay float32)
  if args["runlocal"]:
    config_lib.make_runlocal(c)
  return config_lib.finalize(c)
