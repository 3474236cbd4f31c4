"""ConVIRT (Zhang et al. 2020): ResNet-50 (ImageNet init, 224 px) + Bio_ClinicalBERT,
λ·ℓ(image→text) + (1−λ)·ℓ(text→image) with the paper's λ 0.75, τ 0.1, on the global
embeddings only. Encoders' pooling, projection heads and optimiser are those of the MGCA
comparison (emb 128, AdamW lr 2e-5, wd 0.05, cosine with 40 % warm-up, 50 epochs, batch 144),
so that the peers differ in the objective only (docs/peers.md: what is ConVIRT's, what ours).

    python -m asg_jax.main --config configs/convirt_resnet50.py --workdir gs://.../convirt \
        --config.data.data_dir=... --config.data.manual_dir=...

Arguments: runlocal.
"""
from asg_jax import config as config_lib
from asg_jax import objectives


def get_config(arg=None):
  args = config_lib.parse_arg(arg, runlocal=False)
  c = config_lib.base_config()
  c.name = "convirt_resnet50"
  c.model.image.name = "resnet50"
  c.model.image.pretrained = "microsoft/resnet-50"
  c.model.text.pretrained = "emilyalsentzer/Bio_ClinicalBERT"
  c.data.tokenizer = "emilyalsentzer/Bio_ClinicalBERT"
  c.model.text.use_layers = 12
  c.model.embed_dim = 128
  c.train.batch_size = c.eval.batch_size = 144
  c.train.num_epochs = 50
  c.train.lr = 2e-5
  c.train.weight_decay = 0.05
  c.train.warmup_frac = 0.4
  objectives.apply_convirt(c)      # λ 0.75, τ 0.1; no tag decoder, no local head
  c.model.dtype = "bfloat16"     # compute dtype on TPU/GPU (parameters stay float32)
  if args["runlocal"]:
    config_lib.make_runlocal(c)
  return config_lib.finalize(c)
