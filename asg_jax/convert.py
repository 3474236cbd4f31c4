"""PyTorch weights -> a workdir, from the command line (docs/models.md "Weights from PyTorch"):

    python -m asg_jax.convert --from mgca --checkpoint mgca_vit.ckpt \
        --tokenizer /data/Bio_ClinicalBERT --config configs/asg_vit_b16.py --out workdir/mgca

`--from` asg | mgca | gloria (their Lightning checkpoints) | timm | torchvision | hf (a bare
tower); `--config` the recipe whose architecture the weights fit (`--config.<key>=value`
overrides, as for asg_jax.main); `--tokenizer` the Hugging Face folder with the checkpoint's
vocab.txt / tokenizer.json (default: beside the checkpoint, else the recipe's
data.tokenizer). Pickled code is never executed (asg_jax/models/torch_checkpoint.py). Then

    python -m asg_jax.evaluate --config configs/transfer/chexpert.py --config.init=workdir/mgca
    python -m asg_jax.main --config configs/asg_vit_b16.py --workdir workdir/mgca \
        --config.data.tokenizer=workdir/mgca/tokenizer.json

Exit status 2 with one `ERROR:` line for a bad flag, a missing file, a key / shape mismatch
or a checkpoint that needs arbitrary Python objects. The mapping of the weights is
asg_jax/models/peer_checkpoints.py's; this module writes the workdir (`write_workdir`) and is
its command line.

What the workdir holds:

    <out>/config.json         the recipe, with model.image.pretrained = "",
                              model.text.pretrained = <out>/query_tower (ASG: the frozen tag-query
                              BERT of the checkpoint) or "", data.tokenizer = <out>/tokenizer.json
    <out>/tokenizer.json      the vocabulary (--tokenizer DIR, the checkpoint's folder, or the
                              recipe's data.tokenizer), saved as training saves it
    <out>/constants.npz       the tag-decoder queries, as training makes them
    <out>/checkpoints/0/      the converted model at step 0 (model + a fresh optimizer state +
                              an empty loop record): `main` resumes from it, counting steps
                              and the learning-rate schedule from 0
    <out>/query_tower/        ASG only: model.safetensors of the frozen BERT (`text_encoder.*`)
    <out>/converted_from.json the source, what was and was not carried, the peer's
                              hyper-parameters (plain data; objects not loaded are named)

Step 0 means "not trained here yet" to asg_jax/lineage.py: the first `main` run records the
data (data_lineage.json) and reads the vocabulary from `config.data.tokenizer`, so continue
with `--config.data.tokenizer=<out>/tokenizer.json` (the printed command says so).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from asg_jax import checkpoints
from asg_jax import state as state_lib
from asg_jax import workdir as workdir_lib
from asg_jax.models import checkpoint_convert, peer_checkpoints, tag_queries, torch_checkpoint
from asg_jax.models import vlp

QUERY_TOWER = "query_tower"
RECORD = "converted_from.json"
_VOCAB_FILES = ("tokenizer.json", "vocab.txt")


def read_checkpoint(path: str) -> torch_checkpoint.Checkpoint:
  """A weight file or folder: PyTorch pickles through `torch_checkpoint` (with the Lightning
  metadata), safetensors files / HF folders / cached hub names through
  `checkpoint_convert.read_state_dict`."""
  if os.path.isfile(path) and not path.endswith((".safetensors", ".index.json")):
    return torch_checkpoint.load(path)
  return torch_checkpoint.Checkpoint(checkpoint_convert.read_state_dict(path), {}, [])


def tokenizer_source(checkpoint: str, tokenizer_dir: str | None,
                     config: ml_collections.ConfigDict) -> str:
  """Where the vocabulary comes from: `--tokenizer`, else a vocab.txt / tokenizer.json beside
  the checkpoint, else the recipe's `data.tokenizer`."""
  if tokenizer_dir:
    return tokenizer_dir
  folder = checkpoint if os.path.isdir(checkpoint) else os.path.dirname(checkpoint)
  if any(os.path.isfile(os.path.join(folder, f)) for f in _VOCAB_FILES):
    return folder
  if config.data.tokenizer:
    return config.data.tokenizer
  raise ValueError(f"{checkpoint}: no vocabulary: pass --tokenizer DIR (the Hugging Face folder "
                   f"with vocab.txt or tokenizer.json of the checkpoint's BERT; e.g. "
                   f"Bio_ClinicalBERT for ASG, MGCA and GLoRIA)")


def _dummy_batch(config: ml_collections.ConfigDict) -> dict:
  """Two blank examples of the model's inputs (docs/interfaces.md §2), for `init`."""
  s, length = config.data.image_size, config.data.max_length
  word_ids = -np.ones((2, length), np.int32)
  word_ids[:, 1] = 0
  mask = np.zeros((2, length), np.int32)
  mask[:, :2] = 1
  return {"image": jnp.zeros((2, s, s, 3), jnp.float32),
          "input_ids": jnp.zeros((2, length), jnp.int32),
          "attention_mask": jnp.asarray(mask), "word_ids": jnp.asarray(word_ids)}


def _plain(value):
  """JSON-able hyper-parameters (arrays summarised, other objects as strings)."""
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple, set, frozenset)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return value.tolist() if value.size <= 16 else f"<array {value.dtype}{list(value.shape)}>"
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  return repr(value) if not isinstance(value, bytes) else f"<{len(value)} bytes>"


def write_workdir(source: str, checkpoint: str, config: ml_collections.ConfigDict, out: str,
                  tokenizer_dir: str | None = None) -> dict:
  """Converts `checkpoint` (of `source`, `peer_checkpoints.SOURCES`) into the workdir `out`
  (module docstring) for the architecture of `config` (a recipe).

  Returns:
    the record also written to `<out>/converted_from.json`: carried / not_carried lines,
    skipped metadata objects, the config's tokenizer and query-tower paths.
  Raises:
    ValueError: an unknown source, a key / shape mismatch (one line naming the file and the
      keys), a checkpoint needing arbitrary objects (`torch_checkpoint.UnsafeCheckpointError`),
      no vocabulary, or `out` already holding checkpoints.
    FileNotFoundError: no such checkpoint.
  """
  from asg_jax.data.reports import tokenization  # pylint: disable=import-outside-toplevel
  if source not in peer_checkpoints.SOURCES:
    raise ValueError(f"--from {source!r}: expected one of {', '.join(peer_checkpoints.SOURCES)}")
  out = os.path.abspath(out)
  if checkpoints.saved_steps(out) or os.path.isdir(os.path.join(out, "best")):
    raise ValueError(f"{out} already holds checkpoints: pass a new --out")
  if not os.path.exists(checkpoint) and source in ("asg", "mgca", "gloria"):
    raise FileNotFoundError(f"checkpoint {checkpoint}: no such file")
  ckpt = read_checkpoint(checkpoint)
  tokenizer = tokenization.load_tokenizer(tokenizer_source(checkpoint, tokenizer_dir, config),
                                          config.data.max_length, config.data.lower_case)
  vocab = tokenizer.backend.get_vocab_size()
  if vocab > config.model.text.vocab_size:
    raise ValueError(f"the vocabulary has {vocab} tokens but config.model.text.vocab_size = "
                     f"{config.model.text.vocab_size}: use the recipe of the checkpoint's BERT")
  config = ml_collections.ConfigDict(config.to_dict())       # a private, unlocked copy
  os.makedirs(out, exist_ok=True)
  config.model.image.pretrained = ""
  config.model.text.pretrained = ""
  config.data.tokenizer = os.path.join(out, workdir_lib.TOKENIZER_FILE)

  model = vlp.VisionLanguageModel(vlp.frozen_model_config(config))
  init_rng, _, query_rng = jax.random.split(jax.random.PRNGKey(config.seed), 3)   # as train
  probe = {"tag_queries": jnp.zeros((len(tag_queries.tag_phrases()),
                                     config.model.text.hidden_size), jnp.float32)}
  variables = state_lib.run_once(lambda r: model.init(
      {"params": r, "dropout": r}, _dummy_batch(config), train=False,
      tag_queries=probe["tag_queries"] if config.model.tag_decoder.enabled else None), init_rng)
  variables = {"params": dict(variables["params"]),
               "batch_stats": dict(variables.get("batch_stats", {}))}
  variables, report = peer_checkpoints.convert(source, ckpt.tensors, variables, config,
                                               checkpoint)
  if report.query_tower is not None:
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
    os.makedirs(os.path.join(out, QUERY_TOWER), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in report.query_tower.items()},
              os.path.join(out, QUERY_TOWER, "model.safetensors"))
    config.model.text.pretrained = os.path.join(out, QUERY_TOWER)
  constants = tag_queries.make_constants(config, tokenizer, query_rng)
  workdir_lib.write_config(config, out)
  workdir_lib.save_inference_files(out, tokenizer, constants)
  _save_step0(config, variables, out)
  record = {"source": source, "checkpoint": os.path.abspath(checkpoint),
            "carried": report.carried, "not_carried": report.not_carried,
            "skipped_objects": [f"{name} at {where}" for where, name in ckpt.skipped],
            "metadata": _plain(ckpt.metadata), "tokenizer": config.data.tokenizer,
            "query_tower": config.model.text.pretrained}
  with open(os.path.join(out, RECORD), "w") as f:
    json.dump(record, f, indent=1, sort_keys=True)
  return record


def _save_step0(config: ml_collections.ConfigDict, variables: dict, out: str) -> None:
  """`checkpoints/0`: the converted model, a fresh optimizer state, an empty loop record."""
  tx, _ = state_lib.make_optimizer(config.train, max(int(config.train.num_steps), 1))
  params = jax.tree.map(jnp.asarray, variables["params"])
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               batch_stats=jax.tree.map(jnp.asarray, variables["batch_stats"]),
                               opt_state=tx.init(params))
  manager = checkpoints.Manager(out, config.train.keep_checkpoints)
  manager.save(0, state, loop={}, force=True)
  manager.wait()



def main(argv=None) -> int:
  argv = list(sys.argv if argv is None else argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  from absl import flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  fv = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file("config", None, "configs/<recipe>.py[:arg]: the "
                                                "architecture the weights fit", flag_values=fv,
                                                lock_config=True)
  source = flags.DEFINE_enum("from", None, ["asg", "mgca", "gloria", "timm", "torchvision", "hf"],
                             "what wrote the checkpoint", flag_values=fv)
  ckpt = flags.DEFINE_string("checkpoint", None, "the weight file (.ckpt / .pth / .pt / .bin / "
                             ".safetensors) or Hugging Face folder", flag_values=fv)
  tok = flags.DEFINE_string("tokenizer", "", "folder (or file) with the checkpoint's vocab.txt "
                            "/ tokenizer.json", flag_values=fv)
  out = flags.DEFINE_string("out", None, "the workdir to write (new)", flag_values=fv)
  try:
    fv(argv)
    missing = [n for n, f in (("--from", source), ("--checkpoint", ckpt), ("--config",
                                                                          config_flag),
                              ("--out", out)) if f.value is None]
    if missing:
      raise flags.Error(f"{', '.join(missing)} required")
  except flags.Error as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return 2
  from asg_jax import console  # pylint: disable=import-outside-toplevel
  console.configure(verbose=False)
  try:
    record = write_workdir(source.value, ckpt.value, config_flag.value, out.value,
                                        tok.value or None)
  except (ValueError, FileNotFoundError, OSError) as e:
    print(f"ERROR: {e}", file=sys.stderr)
    return 2
  print(f"Converted {ckpt.value} ({source.value}) into {os.path.abspath(out.value)}:")
  for line in record["carried"]:
    print(f"  carried      {line}")
  for line in record["not_carried"]:
    print(f"  not carried  {line}")
  for line in record["skipped_objects"]:
    print(f"  not loaded   {line} (checkpoint metadata, not plain data)")
  spec = argv[argv.index("--config") + 1] if "--config" in argv else next(
      (a.split("=", 1)[1] for a in argv if a.startswith("--config=")), "RECIPE")
  print(f"Evaluate:  python -m asg_jax.evaluate --config configs/transfer/<x>.py "
        f"--config.init={out.value}")
  print(f"Continue:  python -m asg_jax.main --config {spec} --workdir {out.value} "
        f"--config.data.tokenizer={record['tokenizer']} "
        f"--config.model.text.pretrained={record['query_tower']} "
        f"--config.model.image.pretrained=", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
