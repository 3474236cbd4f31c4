"""What a training workdir holds and how it is written (and read back by inference).

    <workdir>/config.json, config.txt   the resolved config
    <workdir>/config.until_step{N}.json the config that trained steps <= N, kept when a rerun
                                        resumed the workdir with a changed config
    <workdir>/tokenizer.json            the tokenizer of training (never rewritten once a
                                        checkpoint exists: asg_jax/lineage.py)
    <workdir>/data_lineage.json         the data and vocabulary the checkpoints were trained
                                        on (asg_jax/lineage.py)
    <workdir>/previous_<time>/          an earlier run kept by config.data.on_change=retrain
    <workdir>/constants.npz             constants of the step: the IRL `tag_queries` [40, Dt]
                                        and `tag_query_rng` (uint32 key data of the frozen
                                        query tower's random init), with which config.json
                                        + tokenizer.json rebuild that tower to embed new
                                        class names (asg_jax.inference; older workdirs
                                        lack `tag_query_rng`)
    <workdir>/checkpoints/, best/, best.json   (asg_jax.checkpoints)
    <workdir>/summary.json              final metrics next to their chance levels
    <workdir>/data/                     the tfds data_dir unless config.data.data_dir is set
"""
from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import ml_collections
import numpy as np

from asg_jax import config as config_lib

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
CONSTANTS_FILE = "constants.npz"
SUMMARY_FILE = "summary.json"


def _atomic(path: str, write) -> str:
  """Calls `write(tmp)` then renames `tmp` to `path`: a kill or a full disk mid-write leaves
  the old file (or none), never half of the new one. Returns `path`."""
  tmp = f"{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}"
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def _write_text(path: str, text: str) -> str:
  def write(tmp):
    with open(tmp, "w") as f:
      f.write(text)
  return _atomic(path, write)


def _flat(node, prefix: str = "") -> dict:
  if not isinstance(node, dict):
    return {prefix: node}
  out = {}
  for key, value in node.items():
    out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
  return out


def config_changes(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """`["train.num_steps: 500 -> 1500", ...]`: the keys whose value differs between
  `<workdir>/config.json` (the config the workdir was last run with) and `config`; keys only
  one side has are listed too. [] when there is no config.json."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isfile(path):
    return []
  with open(path) as f:   # the rerun policy (config.RERUN_POLICY_KEYS) is no change of the run
    old = _flat(config_lib.without_rerun_policy(json.load(f)))
  new = _flat(config_lib.without_rerun_policy(json.loads(config.to_json_best_effort(
      sort_keys=True))))
  missing = object()
  return [f"{k}: {old.get(k, '(absent)')} -> {new.get(k, '(absent)')}"
          for k in sorted(set(old) | set(new)) if old.get(k, missing) != new.get(k, missing)]


def keep_previous_config(workdir: str, step: int) -> str:
  """Renames `<workdir>/config.json` to `config.until_step{step}.json` (and .txt) before a
  changed config replaces it, so the record of what trained steps ≤ `step` is kept.
  Returns the new path."""
  path = os.path.join(workdir, f"config.until_step{step}.json")
  os.replace(os.path.join(workdir, CONFIG_FILE), path)
  txt = os.path.join(workdir, "config.txt")
  if os.path.isfile(txt):
    os.replace(txt, os.path.join(workdir, f"config.until_step{step}.txt"))
  return path


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config as `<workdir>/config.json` (and .txt)."""
  _write_text(os.path.join(workdir, CONFIG_FILE),
              config.to_json_best_effort(indent=2, sort_keys=True))
  _write_text(os.path.join(workdir, "config.txt"), str(config))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The workdir's config, merged onto today's schema (`config.base_config`): keys a newer
  version added get their defaults, so older workdirs still load; keys the schema no longer
  has are dropped."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir!r} a training workdir?")
  with open(path) as f:
    saved = json.load(f)
  config = config_lib.base_config()
  config.unlock()
  _merge(config, saved)
  return config


def _merge(node: ml_collections.ConfigDict, saved: dict) -> None:
  for key, value in saved.items():
    if key not in node:
      continue
    current = node[key]
    if isinstance(current, ml_collections.ConfigDict) and isinstance(value, dict):
      if key == "evals":   # the run's own evaluators replace the defaults
        node[key] = ml_collections.ConfigDict(value)
      else:
        _merge(current, value)
    elif isinstance(current, tuple) and isinstance(value, list):
      node[key] = tuple(value)
    else:
      node[key] = value


def save_inference_files(workdir: str, tokenizer, constants: Mapping[str, np.ndarray]) -> None:
  """Writes what `Pretrained.from_workdir` needs besides config and checkpoints."""
  backend = getattr(tokenizer, "backend", None)
  if backend is not None:
    _atomic(os.path.join(workdir, TOKENIZER_FILE), backend.save)
  host = {k: np.asarray(jax.device_get(v)) for k, v in constants.items()}
  _atomic(os.path.join(workdir, CONSTANTS_FILE), lambda tmp: np.savez(tmp, **host))


def read_constants(workdir: str) -> dict[str, np.ndarray]:
  """The saved constants ({} when the workdir has none: no tag decoder)."""
  path = os.path.join(workdir, CONSTANTS_FILE)
  if not os.path.exists(path):
    return {}
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def write_summary(workdir: str, summary: dict) -> str:
  return _write_text(os.path.join(workdir, SUMMARY_FILE),
                     json.dumps(summary, indent=2, sort_keys=True))


def read_summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, SUMMARY_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)
