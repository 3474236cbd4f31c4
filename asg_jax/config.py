"""The full configuration schema, shared by every recipe in configs/.

A recipe file (configs/<name>.py) starts from `base_config()` and changes values; it never
adds keys. The returned ConfigDict is locked, so a typo in a recipe or on the command line
(`--config.train.nmu_steps=3`) fails at once, naming the key.
"""
from __future__ import annotations

import difflib

import ml_collections


from asg_jax.errors import ConfigError  # noqa: E402

# The 23 Chest ImaGenome regions used for ARSA. ASG never published which 23 of the 29 it
# kept; these are the 29 minus the 6 that rarely carry a finding or a sentence (see docs).
ASG_REGIONS_23 = (
    "right lung", "right upper lung zone", "right mid lung zone", "right lower lung zone",
    "right hilar structures", "right apical zone", "right costophrenic angle",
    "right hemidiaphragm", "left lung", "left upper lung zone", "left mid lung zone",
    "left lower lung zone", "left hilar structures", "left apical zone",
    "left costophrenic angle", "left hemidiaphragm", "trachea", "spine", "aortic arch",
    "mediastinum", "upper mediastinum", "cardiac silhouette", "abdomen",
)


# Keys that say what a rerun does, not what is trained: left out of the fingerprint that ties
# summary.json to its config and of the config changes a resumed run reports.
RERUN_POLICY_KEYS = ("data.on_change",)


def without_rerun_policy(tree: dict) -> dict:
  """A copy of `tree` (a config as JSON: nested dicts) without `RERUN_POLICY_KEYS`."""
  def drop(node: dict, parts: list[str]) -> dict:
    head, rest = parts[0], parts[1:]
    if not rest:
      return {k: v for k, v in node.items() if k != head}
    if not isinstance(node.get(head), dict):
      return node
    return {**node, head: drop(node[head], rest)}
  for dotted in RERUN_POLICY_KEYS:
    tree = drop(tree, dotted.split("."))
  return tree


def base_config() -> ml_collections.ConfigDict:
  """Every key a recipe may set, with the published ASG ViT-B/16 values as defaults."""
  c = ml_collections.ConfigDict()
  c.name = "asg_vit_b16"
  c.seed = 42

  # ---------------------------------------------------------------- model
  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 128          # projection output (asg.md)
  c.model.head_hidden = 2048       # projection MLP width
  c.model.dtype = "float32"        # compute dtype of every module (the accelerator recipes:
                                   # "bfloat16"; parameters, softmax/norm statistics and loss
                                   # reductions stay float32)

  c.model.image = ml_collections.ConfigDict()
  c.model.image.name = "vit"       # an image tower of asg_jax/registry.py: "vit" | "resnet50"
  c.model.image.pretrained = ""    # local HF checkpoint dir/file or cached hub name ("" = random)
  c.model.image.input_resize = 0   # resize the crop inside the model (ResNet-50: 299); 0 = no
  c.model.image.patch_size = 16
  c.model.image.hidden_size = 768
  c.model.image.num_layers = 12
  c.model.image.num_heads = 12
  c.model.image.mlp_dim = 3072
  c.model.image.dropout = 0.0
  c.model.image.attention_impl = "einsum"   # ViT: einsum | auto | xla | cudnn (models/attention.py)
  c.model.image.remat = "none"     # ViT blocks: none | block | dots_saveable (models/remat.py)
  c.model.image.scan = False       # ViT: nn.scan over the identical blocks (faster compiles)
  c.model.image.resnet_stage_sizes = (3, 4, 6, 3)
  c.model.image.resnet_width = 64
  c.model.image.patch_importance = False  # ViT: the output `patch_importance` (MGCA, peers.md)

  c.model.text = ml_collections.ConfigDict()
  c.model.text.name = "bert"       # a text tower of asg_jax/registry.py
  c.model.text.pretrained = ""     # e.g. "emilyalsentzer/Bio_ClinicalBERT" or a local dir
  c.model.text.vocab_size = 28996
  c.model.text.hidden_size = 768
  c.model.text.num_hidden_layers = 12
  c.model.text.num_attention_heads = 12
  c.model.text.intermediate_size = 3072
  c.model.text.max_position_embeddings = 512
  c.model.text.use_layers = 6      # ASG uses the first 6 of 12 layers
  c.model.text.hidden_dropout = 0.1
  c.model.text.attention_dropout = 0.1
  c.model.text.attention_impl = "einsum"    # einsum | auto | xla | cudnn (fused: dropout 0)
  c.model.text.remat = "none"      # BERT layers: none | block | dots_saveable
  c.model.text.scan = False        # BERT: nn.scan over the identical layers

  c.model.tag_decoder = ml_collections.ConfigDict()
  c.model.tag_decoder.enabled = True
  c.model.tag_decoder.num_layers = 4
  c.model.tag_decoder.d_model = 768
  c.model.tag_decoder.num_heads = 4
  c.model.tag_decoder.mlp_dim = 1024
  c.model.tag_decoder.dropout = 0.1

  # RECLF / GLoRIA local-matching head ("" = none).
  c.model.local_head = ml_collections.ConfigDict()
  c.model.local_head.mode = ""     # "" | "gloria" | "reclf"
  c.model.local_head.use_srm = True
  c.model.local_head.use_irm = True
  c.model.local_head.srm_layers = 1
  c.model.local_head.srm_heads = 1
  c.model.local_head.srm_visual_context = False
  c.model.local_head.irm_hidden = 128
  c.model.local_head.attn_temperature = 0.1   # τ_a (RECLF) — GLoRIA uses 1/γ1
  c.model.local_head.gamma1 = 4.0
  c.model.local_head.gamma2 = 5.0
  c.model.local_head.block_size = 32          # reports per block of the pairwise matching
  c.model.local_head.srm_qk_dim = 0           # SRM query/key width per layer (0 = E)
  c.model.local_head.importance_source = "attention"  # IRM prior π: "attention" | "uniform"
  c.model.local_head.detach_importance = True  # stop-gradient on π (IRM leaves the attention be)
  c.model.local_head.pooling = "lse"          # reclf mode with IRM off: "lse" | "mean"
  c.model.local_head.word_softmax_first = False  # GLoRIA code's extra softmax over words
  c.model.local_head.remat = True             # rematerialise each block in the backward pass
  c.model.local_head.shard = True             # shard_map by image rows when a mesh is active
  # MGCA's prototype layer, the parameter `prototypes [K, embed_dim]` (0 = none; docs/peers.md)
  c.model.num_prototypes = 0

  # ----------------------------------------------------------------- loss
  c.loss = ml_collections.ConfigDict()
  c.loss.name = "asg"              # an objective of asg_jax/registry.py: ira|asg|reclf|gloria|
                                   # mgca|convirt
  c.loss.temperature = 0.07
  c.loss.global_batch = True       # IRA/ERL over the global batch (False: per device, as released)
  c.loss.use_ira = True
  c.loss.use_arsa = True
  c.loss.use_irl = True
  c.loss.use_erl = True
  c.loss.w_ira = 1.0
  c.loss.w_arsa = 1.0
  c.loss.w_irl = 5.0
  c.loss.w_erl = 1.0
  c.loss.soft_mix = 0.2            # ERL: Q = 0.8 I + 0.2 S
  # RECLF semantic contrastive loss
  c.loss.beta = 0.2
  c.loss.local_temperature = 0.1   # τ_l
  c.loss.lambda_local = 1.0
  c.loss.label_source = "tags"     # "tags" | "chexpert" | "embedding" | "auto" (what the batch has)
  c.loss.gamma3 = 10.0             # GLoRIA local logit scale
  c.loss.semantic_local = True     # soft targets also on the local branch (False: hard)
  # MGCA (loss.name = "mgca"; ITA uses loss.temperature, docs/peers.md)
  c.loss.mgca = ml_collections.ConfigDict()
  c.loss.mgca.lambdas = (1.0, 0.7, 0.5)  # λ1 ITA, λ2 token (CTA), λ3 prototype (CPA) level
  c.loss.mgca.use_ita = True
  c.loss.mgca.use_local = True
  c.loss.mgca.use_proto = True
  c.loss.mgca.bidirectional = True       # + the patch->word half of the token level
  c.loss.mgca.local_temperature = 0.1
  c.loss.mgca.proto_temperature = 0.2
  c.loss.mgca.epsilon = 0.05             # Sinkhorn-Knopp ε and iterations
  c.loss.mgca.sinkhorn_iterations = 3
  c.loss.mgca.clip = (0.1, 0.9)          # quantiles of the [CLS]-attention weight clip
  # ConVIRT (loss.name = "convirt"): scale·(λ·ℓ(image→text) + (1−λ)·ℓ(text→image)) at τ
  c.loss.convirt = ml_collections.ConfigDict()
  c.loss.convirt.temperature = 0.1
  c.loss.convirt.lam = 0.75
  c.loss.convirt.scale = 1.0

  # ----------------------------------------------------------------- data
  c.data = ml_collections.ConfigDict()
  c.data.name = "mimic_cxr"        # tfds builder name
  c.data.builder_config = "default"
  c.data.data_dir = ""             # tfds data_dir ("" = <workdir>/data)
  c.data.manual_dir = ""           # where the manual download / your pairs.csv lives (read only)
  c.data.rebuild = "auto"          # "auto": rebuild when the label files changed | "never" | "always"
  # a rerun whose data changed under a trained workdir (asg_jax/lineage.py): "refuse" (exit 2,
  # saying what changed) | "continue" (old vocabulary, the new data) | "retrain" (start over,
  # the old run kept in <workdir>/previous_<time>/)
  c.data.on_change = "refuse"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.tokenizer = "emilyalsentzer/Bio_ClinicalBERT"  # vocab.txt, local dir or cached hub name
  c.data.lower_case = False
  c.data.max_length = 112
  c.data.resize = 256
  c.data.image_size = 224
  c.data.max_regions = 23
  c.data.max_region_words = 110
  c.data.regions = ASG_REGIONS_23
  c.data.normalization = "imagenet"  # "imagenet" | "half"
  c.data.shuffle_buffer = 10_000
  c.data.demo_num_studies = 0      # > 0: generate + build the synthetic demo into data_dir
  c.data.demo_seed = 0
  c.data.demo_vocab_size = 0       # > 0: train a WordPiece vocab of this size on the demo captions

  # ---------------------------------------------------------------- train
  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 288         # global batch
  c.train.num_steps = 0            # 0: derive from num_epochs
  c.train.num_epochs = 50
  c.train.lr = 4e-5
  c.train.init_lr = 1e-8
  c.train.end_lr = 1e-8
  c.train.warmup_frac = 0.4
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.weight_decay = 0.05
  c.train.grad_clip = 0.0          # 0 = none (the released recipe does not clip)
  # {top-level params key (e.g. "tag_decoder"): m}: that subtree's AdamW updates × m, as a
  # PyTorch param group with lr·m (weight decay too); empty = none (the plain optimizer)
  c.train.lr_multipliers = ml_collections.ConfigDict()
  # {top-level params key: f}: that subtree is frozen for the first f·num_steps steps, skipped
  # by AdamW (moments, step count, weight decay), as PyTorch skips a parameter whose grad is
  # None (MGCA: {"prototypes": 0.02}, its first epoch of 50); empty = none
  c.train.freeze = ml_collections.ConfigDict()
  c.train.log_every = 50           # also how often the step's measurements are fetched
  c.train.device_prefetch = 2      # sharded batches transferred ahead of the step (0 = none)
  c.train.dropout_prng = "threefry"  # the dropout keys' PRNG: "threefry" | "rbg" (cheaper bits
                                     # on GPU/TPU; a different, still seeded, dropout stream)
  c.train.checkpoint_every = 1000
  c.train.keep_checkpoints = 3
  c.train.early_stop_patience = 5  # evaluations without val-loss improvement; 0 = off
  c.train.num_devices = 0          # 0 = all

  # ----------------------------------------------------------------- eval
  c.eval = ml_collections.ConfigDict()
  c.eval.every_steps = 1000        # the default schedule of the evaluators (every_steps = -1)
  c.eval.batch_size = 288
  c.eval.max_examples = 0          # 0 = the whole split
  c.eval.best_metric = "val_loss"  # lower is better; early stopping and best/ follow it

  # ---------------------------------------------------------------- evals
  # Evaluator plug-ins (asg_jax/evaluators/plugins.py): `type` names the module; add more
  # with `add_eval(c, name, type=..., **kwargs)` in a recipe.
  c.evals = ml_collections.ConfigDict()
  for name in ("loss", "retrieval", "zeroshot", "grounding"):
    c.evals[name] = eval_entry(name)
  c.evals.retrieval.ks = (1, 5, 10)
  c.evals.zeroshot.prompts = True
  c.evals.zeroshot.tag_decoder = True

  # a transfer config (configs/transfer/<x>.py[:arg], relative to the repo or absolute) run
  # on the finished workdir by the command line, printing the downstream table; "" = none
  c.transfer = ""
  c.lock()
  return c


def eval_entry(kind: str, *, every_steps: int = -1, split: str = "", dataset: str = "",
               prefix: str = "") -> ml_collections.ConfigDict:
  """A `config.evals` entry with the keys every evaluator has (see evaluators/plugins.py)."""
  return ml_collections.ConfigDict({"type": kind, "every_steps": every_steps, "split": split,
                                    "dataset": dataset, "prefix": prefix})


def add_eval(c: ml_collections.ConfigDict, name: str, *, type: str, every_steps: int = -1,  # pylint: disable=redefined-builtin
             split: str = "", dataset: str = "", prefix: str = "", **kwargs) -> None:
  """Declare evaluator `name` (of module `type`) with its own keyword arguments."""
  entry = eval_entry(type, every_steps=every_steps, split=split, dataset=dataset,
                     prefix=prefix)
  for k, v in kwargs.items():
    entry[k] = v
  with c.evals.unlocked():
    c.evals[name] = entry


def remove_evals(c: ml_collections.ConfigDict, *names: str) -> None:
  """Drop evaluators from `config.evals` (e.g. grounding for data without boxes)."""
  with c.evals.unlocked():
    for name in names:
      if name not in c.evals:
        raise ConfigError(f"config.evals has no {name!r}; it has {sorted(c.evals)}")
      del c.evals[name]


# ASG ablation rows of results.md: which of the four terms are on.
ASG_ABLATIONS = {
    "ira": dict(use_ira=True, use_arsa=False, use_irl=False, use_erl=False),
    "ira_arsa": dict(use_ira=True, use_arsa=True, use_irl=False, use_erl=False),
    "ira_irl": dict(use_ira=True, use_arsa=False, use_irl=True, use_erl=False),
    "ira_irl_erl": dict(use_ira=True, use_arsa=False, use_irl=True, use_erl=True),
    "full": dict(use_ira=True, use_arsa=True, use_irl=True, use_erl=True),
}

# RECLF ablation ladder (reclf.md): GLoRIA pooling -> +IRM -> +SRM -> +semantic targets.
RECLF_LADDER = {
    "gloria": dict(mode="gloria", use_irm=False, use_srm=False, beta=0.0),
    "irm": dict(mode="reclf", use_irm=True, use_srm=False, beta=0.0),
    "irm_srm": dict(mode="reclf", use_irm=True, use_srm=True, beta=0.0),
    "full": dict(mode="reclf", use_irm=True, use_srm=True, beta=0.2),
}


def parse_arg(arg: str | None, **defaults) -> dict:
  """`"runlocal,ablation=ira_arsa"` -> {"runlocal": True, "ablation": "ira_arsa"}.

  Only names given in `defaults` are accepted; values take the default's type.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f"unknown config argument {key!r}; expected one of {sorted(defaults)}")
    kind = type(defaults[key])
    if kind is bool:
      out[key] = value.strip().lower() not in ("0", "false", "no") if value else True
    else:
      out[key] = kind(value.strip())
  return out


def apply_asg_ablation(c: ml_collections.ConfigDict, name: str) -> None:
  """Switch ASG's loss terms to a row of the published ablation (results.md)."""
  if name not in ASG_ABLATIONS:
    raise ConfigError(f"unknown ASG ablation {name!r}; expected one of {sorted(ASG_ABLATIONS)}")
  for key, value in ASG_ABLATIONS[name].items():
    c.loss[key] = value
  c.model.tag_decoder.enabled = c.loss.use_irl


def apply_reclf_rung(c: ml_collections.ConfigDict, name: str) -> None:
  """Set the RECLF ablation-ladder rung (reclf.md)."""
  if name not in RECLF_LADDER:
    raise ConfigError(f"unknown RECLF rung {name!r}; expected one of {sorted(RECLF_LADDER)}")
  rung = RECLF_LADDER[name]
  c.model.local_head.mode = rung["mode"]
  c.model.local_head.use_irm = rung["use_irm"]
  c.model.local_head.use_srm = rung["use_srm"]
  c.loss.name = rung["mode"]
  c.loss.beta = rung["beta"]
  c.model.tag_decoder.enabled = False


def load_recipe(spec: str) -> ml_collections.ConfigDict:
  """`path/to/recipe.py[:arg]` -> that file's `get_config(arg)` (`get_config()` without arg)."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  path, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location("_asg_jax_recipe", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def finalize(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the config so unknown keys fail, and checks values that must agree."""
  config.lock()
  _check(config)
  return config


def _check(c: ml_collections.ConfigDict) -> None:
  from asg_jax import registry  # pylint: disable=import-outside-toplevel
  from asg_jax.models import remat  # pylint: disable=import-outside-toplevel
  choices = {
      "model.image.name": tuple(registry.IMAGE_TOWERS),
      "model.text.name": tuple(registry.TEXT_TOWERS),
      "model.local_head.mode": ("", "gloria", "reclf"),
      "model.local_head.importance_source": ("attention", "uniform"),
      "model.local_head.pooling": ("lse", "mean"),
      "loss.name": tuple(registry.OBJECTIVES),
      "loss.label_source": ("tags", "chexpert", "embedding", "auto"),
      "data.normalization": ("imagenet", "half"),
      "model.dtype": ("float32", "bfloat16"),
      "model.image.attention_impl": ("einsum", "auto", "xla", "cudnn"),
      "model.text.attention_impl": ("einsum", "auto", "xla", "cudnn"),
      "data.rebuild": ("auto", "never", "always"),
      "data.on_change": ("refuse", "continue", "retrain"),
      "train.dropout_prng": ("threefry", "rbg"),
      "model.image.remat": remat.REMAT_OPTIONS,
      "model.text.remat": remat.REMAT_OPTIONS,
  }
  for dotted, allowed in choices.items():
    value = c
    for part in dotted.split("."):
      value = value[part]
    if value not in allowed:
      raise ConfigError(f"config.{dotted} = {value!r}; expected one of {allowed}")
  if c.model.text.attention_impl != "einsum" and c.model.text.attention_dropout > 0:
    raise ConfigError(f"config.model.text.attention_impl = {c.model.text.attention_impl!r} "
                      f"(a fused kernel) has no dropout on the attention probabilities: set "
                      f"config.model.text.attention_dropout = 0 (it is "
                      f"{c.model.text.attention_dropout})")
  from asg_jax.data.reports import REGIONS  # pylint: disable=import-outside-toplevel
  regions = (c.data.regions,) if isinstance(c.data.regions, str) else tuple(c.data.regions)
  unknown = [r for r in regions if r not in REGIONS]
  if unknown or not regions:
    raise ConfigError(f"config.data.regions: unknown region name(s) {unknown or '(empty list)'}; "
                     f"expected names of vocab.json imagenome_regions_29, e.g. {REGIONS[:3]}")
  if c.loss.name in ("reclf", "gloria") and c.model.local_head.mode != c.loss.name:
    raise ConfigError(f"config.loss.name = {c.loss.name!r} needs config.model.local_head.mode = "
                     f"{c.loss.name!r} (got {c.model.local_head.mode!r})")
  if c.loss.name == "asg" and c.loss.use_irl and not c.model.tag_decoder.enabled:
    raise ConfigError("config.loss.use_irl = True needs config.model.tag_decoder.enabled = True")
  if c.train.batch_size <= 0 or c.eval.batch_size <= 0:
    raise ConfigError("config.train.batch_size and config.eval.batch_size must be > 0")
  if not 0.0 <= c.train.warmup_frac < 1.0:
    raise ConfigError(f"config.train.warmup_frac = {c.train.warmup_frac}; expected in [0, 1)")
  if c.train.num_steps <= 0 and c.train.num_epochs <= 0:
    raise ConfigError("set config.train.num_steps or config.train.num_epochs (> 0)")
  from asg_jax import state  # pylint: disable=import-outside-toplevel
  state.lr_multipliers(c.train)    # values: numbers > 0 (names: checked against the params)
  state.freeze_fractions(c.train)  # values in [0, 1] (names: checked against the params)
  from asg_jax import objectives  # pylint: disable=import-outside-toplevel
  objectives.check_config(c)       # the outputs and parameters the objective reads exist
  from asg_jax.evaluators import plugins  # pylint: disable=import-outside-toplevel
  for name in c.evals:
    plugins.check_entry(name, c.evals[name])


def check_overrides_applied(config: ml_collections.ConfigDict) -> None:
  """Re-validates after command-line overrides (config_flags applies them after loading)."""
  _check(config)


def make_runlocal(c: ml_collections.ConfigDict) -> None:
  """Shrinks a full recipe to run on a CPU in seconds on the demo data (same code paths)."""
  c.model.image.pretrained = ""
  c.model.text.pretrained = ""
  c.model.dtype = "float32"        # CPU: bfloat16 is no faster there
  c.model.image.hidden_size = 64
  c.model.image.num_layers = 1
  c.model.image.num_heads = 2
  c.model.image.mlp_dim = 128
  c.model.image.patch_size = 8
  c.model.image.resnet_stage_sizes = (1, 1, 1, 1)
  c.model.image.resnet_width = 8
  c.model.text.vocab_size = 600
  c.model.text.hidden_size = 64
  c.model.text.num_hidden_layers = 2
  c.model.text.use_layers = 1
  c.model.text.num_attention_heads = 2
  c.model.text.intermediate_size = 128
  c.model.text.max_position_embeddings = 128
  c.model.head_hidden = 128
  c.model.tag_decoder.num_layers = 1
  c.model.tag_decoder.d_model = 64
  c.model.tag_decoder.num_heads = 2
  c.model.tag_decoder.mlp_dim = 128
  c.model.local_head.irm_hidden = 32
  c.data.builder_config = "demo"
  c.data.demo_num_studies = 96
  c.data.demo_vocab_size = 600
  c.data.tokenizer = ""
  c.data.lower_case = True
  c.data.max_length = 64
  c.data.max_region_words = 63
  c.data.resize = 128
  c.data.image_size = 112
  c.train.batch_size = 16
  c.train.num_steps = 4
  c.train.log_every = 2
  c.train.checkpoint_every = 2
  c.eval.every_steps = 4
  c.eval.batch_size = 16
  c.eval.max_examples = 32


def flat_keys(c: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every leaf key of a config, dotted (`train.num_steps`)."""
  out = []
  for k, v in c.items():
    if isinstance(v, ml_collections.ConfigDict):
      out.extend(flat_keys(v, f"{prefix}{k}."))
    else:
      out.append(f"{prefix}{k}")
  return out


def check_override_key(c: ml_collections.ConfigDict, dotted: str) -> None:
  """ConfigError naming `dotted` and the closest valid keys unless it is a key of `c`."""
  node = c
  for part in dotted.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      keys = flat_keys(c)
      close = difflib.get_close_matches(dotted, keys, n=3, cutoff=0.5)
      if not close:
        leaf = dotted.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:3]
      hint = f"; closest valid keys: {', '.join(close)}" if close else ""
      raise ConfigError(f"unknown config key {dotted!r}{hint}")
    node = node[part]
