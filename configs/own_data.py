"""ASG on your own chest X-ray image–report pairs (the `image_text_csv` builder).

    python -m asg_jax.main --config configs/own_data.py:runlocal \
        --config.data.manual_dir=/path/to/folder/with/pairs.csv --workdir workdir/mine

`pairs.csv` columns (docs/data.md, "Train on your own image–report pairs"): image_path and
report (required); split, subject_id / patient_id, view_position, boxes and the 14 CheXpert
columns (optional). The folder is only read: the dataset is built into
`<workdir>/data` (or `config.data.data_dir`), and rebuilt when pairs.csv changes — but a
workdir with a checkpoint refuses changed data (one line saying what changed) unless
`--config.data.on_change=continue` (old vocabulary, new rows) or `=retrain` (start over, the
old run kept in `<workdir>/previous_<time>/`).

Arguments (after the colon, comma-separated):
  image=vit|resnet50   the image tower (default vit: DeiT-B/16 weights + Bio_ClinicalBERT,
                       the published ASG recipe; resnet50: ResNet-50 at 299, layer3 grid)
  views=frontal|all    keep only frontal views (default) or every view in the CSV
  runlocal             a small model trained from scratch (with its own WordPiece vocabulary
                       learnt from your reports) that runs on a CPU in minutes
"""
from asg_jax import config as config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, image="vit", views="frontal", runlocal=False)
  if args["image"] not in ("vit", "resnet50"):
    raise config_lib.ConfigError(f"image={args['image']!r}; expected vit or resnet50")
  if args["views"] not in ("frontal", "all"):
    raise config_lib.ConfigError(f"views={args['views']!r}; expected frontal or all")
  c = config_lib.base_config()
  c.name = "own_data"
  c.model.image.name = args["image"]
  c.model.text.pretrained = "emilyalsentzer/Bio_ClinicalBERT"
  c.data.tokenizer = "emilyalsentzer/Bio_ClinicalBERT"
  if args["image"] == "vit":
    c.model.image.pretrained = "facebook/deit-base-patch16-224"
  else:
    c.model.image.pretrained = "microsoft/resnet-50"
    c.model.image.input_resize = 299
  config_lib.apply_asg_ablation(c, "full")

  c.model.dtype = "bfloat16"     # compute dtype on TPU/GPU (parameters stay float32)
  if args["runlocal"]:
    config_lib.make_runlocal(c)
    c.model.image.resnet_width = 16
    c.model.image.input_resize = 0
    c.data.resize = 128
    c.data.image_size = 112
    c.data.normalization = "half"
    c.data.shuffle_buffer = 1000
    c.train.batch_size = 16
    c.train.num_steps = 40
    c.train.lr = 5e-4
    c.train.warmup_frac = 0.1
    c.train.log_every = 10
    c.train.checkpoint_every = 20
    c.train.keep_checkpoints = 2
    c.eval.every_steps = 20
    c.eval.batch_size = 32
    c.eval.max_examples = 0
  # the user's pairs, never the demo generator
  c.data.name = "image_text_csv"
  c.data.builder_config = "default" if args["views"] == "frontal" else "all_views"
  c.data.demo_num_studies = 0
  return config_lib.finalize(c)
