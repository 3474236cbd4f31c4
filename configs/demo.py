"""Demo recipe: ASG (all four terms) on the built-in synthetic demo data, CPU, minutes.

    python -m asg_jax.main --config configs/demo.py --workdir workdir/demo
    python -m asg_jax.main --config configs/demo.py:objective=reclf --workdir workdir/demo_reclf
    python -m asg_jax.main --config configs/demo.py:objective=mgca --workdir workdir/demo_mgca

Arguments (after the colon, comma-separated):
  objective=asg|ira|reclf|gloria|mgca|convirt   which method to train (default asg)
  ablation=full|ira|ira_arsa|ira_irl|ira_irl_erl   ASG ablation row (objective=asg)
  rung=full|gloria|irm|irm_srm      RECLF ablation-ladder rung (objective=reclf)
  mgca_ablation=full|ita|ita_local  MGCA's levels (objective=mgca; docs/peers.md)
  image=resnet|vit                  the image tower (default resnet, see below)
  runlocal                          an even smaller, faster variant (tests, smoke runs)

The image tower of the demo is a small ResNet (one bottleneck block per stage, width 16;
local features = layer3, a 7x7 grid at 112 px): measured on the demo data, it learns
to see the findings within ~80 steps on a 2-core CPU, while a ViT trained from scratch did
not separate even cardiomegaly in 200 steps (docs/demo.md). `image=vit` trains the ViT path
(patch 8, 14x14 grid) instead.
"""
from asg_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, objective="asg", ablation="full", rung="full", image="resnet",
                              mgca_ablation="full", runlocal=False)
  c = config_lib.base_config()
  c.name = f"demo_{args['objective']}"
  c.seed = 0

  c.data.name = "mimic_cxr"
  c.data.builder_config = "demo"
  c.data.demo_num_studies = 1000
  c.data.demo_seed = 0
  c.data.demo_vocab_size = 600
  c.data.tokenizer = ""            # the WordPiece vocab trained on the demo captions
  c.data.lower_case = True
  c.data.max_length = 64
  c.data.max_region_words = 63
  c.data.resize = 128
  c.data.image_size = 112
  c.data.normalization = "half"
  c.data.shuffle_buffer = 1000

  if args["image"] not in ("resnet", "vit"):
    raise config_lib.ConfigError(f"image={args['image']!r}; expected resnet or vit")
  c.model.image.name = "resnet50" if args["image"] == "resnet" else "vit"
  c.model.image.resnet_stage_sizes = (1, 1, 1, 1)
  c.model.image.resnet_width = 16  # layer3: 256 channels on a 7x7 grid at 112 px
  c.model.image.patch_size = 8     # ViT: 112 / 8 = 14x14 grid, as ViT-B/16 at 224
  c.model.image.hidden_size = 96
  c.model.image.num_layers = 2
  c.model.image.num_heads = 4
  c.model.image.mlp_dim = 192
  c.model.text.vocab_size = 600
  c.model.text.hidden_size = 96
  c.model.text.num_hidden_layers = 4
  c.model.text.use_layers = 2      # "first k layers", as ASG's 6 of 12
  c.model.text.num_attention_heads = 4
  c.model.text.intermediate_size = 192
  c.model.text.max_position_embeddings = 128
  c.model.head_hidden = 256
  c.model.tag_decoder.num_layers = 2
  c.model.tag_decoder.d_model = 96
  c.model.tag_decoder.num_heads = 4
  c.model.tag_decoder.mlp_dim = 192
  c.model.local_head.irm_hidden = 64

  c.train.batch_size = 32
  c.train.num_steps = 1500        # docs/demo.md "How long": at 500 the tag decoder was at chance
  c.train.lr = 5e-4
  c.train.warmup_frac = 0.1
  c.train.log_every = 25
  c.train.checkpoint_every = 100
  c.train.keep_checkpoints = 2
  c.train.early_stop_patience = 0
  c.eval.every_steps = 250
  c.eval.batch_size = 64
  # the main job ends with the downstream table on the demo's CheXpert-layout stand-in
  c.transfer = "configs/transfer/demo.py"

  objective = args["objective"]
  if objective == "asg":
    config_lib.apply_asg_ablation(c, args["ablation"])
  elif objective == "ira":
    config_lib.apply_asg_ablation(c, "ira")
    c.loss.name = "ira"
  elif objective in ("reclf", "gloria"):
    config_lib.apply_reclf_rung(c, "gloria" if objective == "gloria" else args["rung"])
  elif objective == "mgca":
    # prototypes frozen for the first 2 % of the steps: MGCA's 1 of 50 epochs; here 30 of
    # 1500 steps, about the demo's first epoch (825 / 32)
    from asg_jax import objectives  # pylint: disable=import-outside-toplevel
    objectives.apply_mgca(c, args["mgca_ablation"])
  elif objective == "convirt":
    from asg_jax import objectives  # pylint: disable=import-outside-toplevel
    objectives.apply_convirt(c)
  else:
    raise config_lib.ConfigError(f"objective={objective!r}; expected asg, ira, reclf, gloria, "
                                 "mgca or convirt")

  if args["runlocal"]:
    c.data.demo_num_studies = 96
    c.model.image.num_layers = 1
    c.model.image.resnet_width = 8
    c.model.text.num_hidden_layers = 2
    c.model.text.use_layers = 1
    c.model.tag_decoder.num_layers = 1
    c.train.batch_size = 16
    c.train.num_steps = 6
    c.train.log_every = 2
    c.train.checkpoint_every = 3
    c.eval.every_steps = 6
    c.eval.batch_size = 16
    c.eval.max_examples = 32
    c.transfer = ""
  return config_lib.finalize(c)
