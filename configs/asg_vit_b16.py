"""ASG, the published recipe: ViT-B/16 (DeiT-base init) + Bio_ClinicalBERT (first 6 of 12
layers), IRA + ARSA + 5·IRL + ERL, AdamW 4e-5, batch 288, ≤ 50 epochs (asg.md).

    python -m asg_jax.main --config configs/asg_vit_b16.py --workdir gs://.../asg_vit \
        --config.data.data_dir=... --config.data.manual_dir=...

Arguments: ablation=full|ira|ira_arsa|ira_irl|ira_irl_erl (results.md's rows); runlocal.
"""
from asg_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, ablation="full", runlocal=False)
  c = config_lib.base_config()
  c.name = "asg_vit_b16" + ("" if args["ablation"] == "full" else f"_{args['ablation']}")
  c.model.image.name = "vit"
  c.model.image.pretrained = "facebook/deit-base-patch16-224"
  c.model.text.pretrained = "emilyalsentzer/Bio_ClinicalBERT"
  c.data.tokenizer = "emilyalsentzer/Bio_ClinicalBERT"
  config_lib.apply_asg_ablation(c, args["ablation"])
  c.model.dtype = "bfloat16"     # compute dtype on TPU/GPU (parameters stay float32)
  if args["runlocal"]:
    config_lib.make_runlocal(c)
  return config_lib.finalize(c)
