"""MGCA (Wang et al., NeurIPS 2022), the published recipe: ViT-B/16 (DeiT-base init) +
Bio_ClinicalBERT (all 12 layers), λ1·ITA + λ2·token + λ3·prototype level with the module's
(1, 0.7, 0.5), 500 prototypes frozen for the first of 50 epochs, emb 128, AdamW lr 2e-5,
wd 0.05, β 0.9 / 0.999, cosine with 40 % warm-up, 50 epochs, batch 144 (docs/peers.md).

    python -m asg_jax.main --config configs/mgca_vit_b16.py --workdir gs://.../mgca_vit \
        --config.data.data_dir=... --config.data.manual_dir=...

Arguments: ablation=full|ita|ita_local (which levels are on); runlocal.
"""
from asg_jax import config as config_lib
from asg_jax import objectives


def get_config(arg=None):
  args = config_lib.parse_arg(arg, ablation="full", runlocal=False)
  c = config_lib.base_config()
  c.name = "mgca_vit_b16" + ("" if args["ablation"] == "full" else f"_{args['ablation']}")
  c.model.image.name = "vit"
  c.model.image.pretrained = "facebook/deit-base-patch16-224"
  c.model.text.pretrained = "emilyalsentzer/Bio_ClinicalBERT"
  c.data.tokenizer = "emilyalsentzer/Bio_ClinicalBERT"
  c.model.text.use_layers = 12     # MGCA's BertEncoder: the whole BERT, last layer
  c.model.embed_dim = 128
  c.loss.temperature = 0.07        # ITA
  c.train.batch_size = c.eval.batch_size = 144
  c.train.num_epochs = 50
  c.train.lr = 2e-5
  c.train.weight_decay = 0.05
  c.train.b1, c.train.b2 = 0.9, 0.999
  c.train.warmup_frac = 0.4
  objectives.apply_mgca(c, args["ablation"])   # loss, prototypes (+ freeze), patch_importance
  c.model.dtype = "bfloat16"     # compute dtype on TPU/GPU (parameters stay float32)
  if args["runlocal"]:
    config_lib.make_runlocal(c)
  return config_lib.finalize(c)
