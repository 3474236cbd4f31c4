"""What data and vocabulary a workdir's checkpoints were trained on, and what a rerun does
when the data changed (`config.data.on_change`).

    binding = lineage.check(config, workdir)   # before the data is generated, built or read
    data = asg_jax.data.prepare(config, workdir, bound_tokenizer=bound_tokenizer(workdir))
    lineage.record(workdir, binding, examples={"train": n, "validation": m})

`<workdir>/data_lineage.json` holds the fingerprint of the data (`build.fingerprint`: the
builder, its config, version and stored image size, and the SHA-256 of each label file of
the manual_dir, e.g. pairs.csv; for the demo its generator parameters), the rows of those
files (per split for pairs.csv), the example counts of the built splits, the SHA-256 of
`tokenizer.json` with the tokenizer settings, and the history of the data the steps were
trained on (`from_step`).

Once the workdir has a checkpoint, its tokenizer is bound to it: `tokenizer.json` is never
rewritten, and the tokenizer is read from it (`bound_tokenizer`), not learnt again from the
data nor taken from `config.data.tokenizer` — so a rerun, `--reevaluate` and
`Pretrained.from_workdir` use the vocabulary the checkpoints were trained with.

A rerun whose data (or tokenizer setting) differs from the record of a workdir with a
checkpoint does what `config.data.on_change` says, before anything is built:

  refuse    (default) `DataChangedError`: one line saying what changed ("pairs.csv: 10 rows
            fewer in train (117 -> 107)") and how to go on (exit status 2; nothing written);
  continue  keeps the old vocabulary and resumes from the latest checkpoint on the new data
            (the dataset is rebuilt); the history records from which step;
  retrain   moves the old run into `<workdir>/previous_<UTC time>/` (nothing is deleted; the
            dataset folder, hidden files and lock files stay) and starts over in place.

A workdir without a checkpoint is not bound: its record is replaced. A workdir trained
before this record existed is adopted: the current data is recorded, its tokenizer.json kept.
`config.data.on_change` says what a rerun does, not what is trained: it is left out of the
config fingerprint and of the config changes a resume reports (`config.RERUN_POLICY_KEYS`).
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
from typing import Mapping

import jax
import ml_collections

from asg_jax import checkpoints
from asg_jax import distributed
from asg_jax import workdir as workdir_lib
from asg_jax.errors import ConfigError

LINEAGE_FILE = "data_lineage.json"
TOKENIZER_FILE = workdir_lib.TOKENIZER_FILE
PREVIOUS_PREFIX = "previous_"


class DataChangedError(ConfigError):
  """The data of a trained workdir changed and `config.data.on_change` is "refuse": one
  line naming what changed and what to pass (exit status 2, like a config error)."""


@dataclasses.dataclass(frozen=True)
class Binding:
  """What `check` found and did.

  Attributes:
    data: the fingerprint of the data this run uses (None: cannot be told before the build,
      e.g. no manual_dir folder; the build then raises).
    tokenizer: the tokenizer settings of this config.
    action: "new" (no checkpoint: nothing bound), "unchanged", "adopted" (checkpoints
      without a record), "continue" or "retrain" (the data changed).
    changes: what changed, one phrase each.
    step: the latest checkpoint's step when checked (0: none).
    kept: where "retrain" moved the old run.
    manual_dir: the label files' folder (row counts), or "".
  """
  data: dict | None
  tokenizer: dict
  action: str
  changes: tuple[str, ...] = ()
  step: int = 0
  kept: str | None = None
  manual_dir: str = ""

  @property
  def changed(self) -> bool:
    """The data differs from what the checkpoints were trained on (continue / retrain)."""
    return self.action in ("continue", "retrain")


def read(workdir: str) -> dict | None:
  """The workdir's record (None: none)."""
  path = os.path.join(workdir, LINEAGE_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except ValueError:      # a half-written record: as if there were none (adopted again)
    return None


def trained_step(workdir: str) -> int:
  """The latest checkpoint's step (0: none); a best.json alone counts as step -1 (trained)."""
  steps = checkpoints.saved_steps(workdir)
  if steps:
    return max(steps)
  return -1 if os.path.isfile(os.path.join(workdir, "best.json")) else 0


def bound_tokenizer(workdir: str) -> str | None:
  """`<workdir>/tokenizer.json` when the workdir has a checkpoint (the vocabulary its
  checkpoints were trained with: never learnt again), else None."""
  path = os.path.join(workdir, TOKENIZER_FILE)
  return path if os.path.isfile(path) and trained_step(workdir) else None


def tokenizer_settings(config: ml_collections.ConfigDict) -> dict:
  """The config keys that choose the vocabulary."""
  dc = config.data
  return {"tokenizer": dc.tokenizer, "demo_vocab_size": 0 if dc.tokenizer else
          int(dc.demo_vocab_size), "lower_case": bool(dc.lower_case)}


def data_fingerprint(config: ml_collections.ConfigDict, workdir: str) -> dict | None:
  """The fingerprint of the data a run of `config` in `workdir` uses, before anything is
  generated or built (`build.expected_fingerprint`; the demo: its generator parameters)."""
  from asg_jax.data.builders import build  # pylint: disable=import-outside-toplevel
  dc = config.data
  data_dir = os.path.abspath(dc.data_dir or os.path.join(workdir, "data"))
  if dc.demo_num_studies > 0:
    from asg_jax.data.demo import synthetic  # pylint: disable=import-outside-toplevel
    cls = build._tfds().builder_cls(dc.name)  # pylint: disable=protected-access
    return {"builder": dc.name, "config": dc.builder_config, "version": str(cls.VERSION),
            "demo": {"num_studies": int(dc.demo_num_studies), "seed": int(dc.demo_seed),
                     "version": synthetic.GENERATOR_VERSION}}
  return build.expected_fingerprint(dc.name, dc.builder_config, data_dir,
                                    dc.manual_dir or None, dc.rebuild)


# ----------------------------------------------------------------------------- check
def check(config: ml_collections.ConfigDict, workdir: str) -> Binding:
  """Compares the data and tokenizer settings of `config` with what the workdir's
  checkpoints were trained on and acts on `config.data.on_change` (module docstring).

  Raises:
    DataChangedError: they differ and on_change is "refuse" (nothing was written).
  """
  dc = config.data
  manual_dir = "" if dc.demo_num_studies > 0 else (dc.manual_dir or "")
  data = data_fingerprint(config, workdir)
  settings = tokenizer_settings(config)
  step = trained_step(workdir)
  old = read(workdir)
  distributed.barrier("asg_jax: lineage read")   # all have decided before anything moves
  make = lambda action, changes=(), kept=None: Binding(  # noqa: E731
      data, settings, action, tuple(changes), max(step, 0), kept, manual_dir)
  if not step:
    return make("new")
  if old is None:   # trained before records existed: from now on, changes are noticed
    binding = make("adopted")
    record(workdir, binding, None)
    return binding
  changes = describe(old, data, settings, manual_dir)
  if not changes:
    return make("unchanged")
  where = f"step {step}" if step > 0 else "a best checkpoint"
  what = "; ".join(changes)
  if dc.on_change == "refuse":
    raise DataChangedError(
        f"the data changed since the checkpoints in {workdir} were trained ({where}): {what}. "
        f"Use a new --workdir, or pass --config.data.on_change=retrain (start over here; the "
        f"old run is moved to {os.path.join(workdir, PREVIOUS_PREFIX)}<time>/) or "
        f"--config.data.on_change=continue (fine-tune on the new data with the old vocabulary)")
  if dc.on_change == "continue":
    more = ""
    if config.train.num_steps and step >= config.train.num_steps:
      more = (f" Nothing is left to train at train.num_steps = {config.train.num_steps}: "
              f"the checkpoint is evaluated on the new data (raise --config.train.num_steps to "
              f"fine-tune on it).")
    _say(f"The data changed since {workdir} was trained ({where}): {what}. Continuing on the "
         f"new data with the vocabulary of the checkpoints ({TOKENIZER_FILE} kept; "
         f"config.data.on_change=continue).{more}")
    return make("continue", changes)
  kept = _move_aside(config, workdir)
  _say(f"The data changed since {workdir} was trained ({where}): {what}. The old run is kept "
       f"in {kept}; training starts over here (config.data.on_change=retrain).")
  return make("retrain", changes, kept)


def _say(line: str) -> None:
  if jax.process_index() == 0:
    print(line, flush=True)


def _move_aside(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Moves the run's files into `<workdir>/previous_<UTC time>/` (process 0; the others
  wait): everything but the dataset / manual_dir folders inside the workdir, earlier
  `previous_*` folders, hidden files and `*.lock` files. Returns the new folder."""
  workdir = os.path.abspath(workdir)
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
  dest = os.path.join(workdir, PREVIOUS_PREFIX + stamp)
  dc = config.data
  stay = {os.path.abspath(p) for p in (dc.data_dir or os.path.join(workdir, "data"),
                                       dc.manual_dir) if p}
  with distributed.first_process_only("lineage: keep the old run") as mine:
    if mine:
      n = 0
      while os.path.exists(dest):
        n += 1
        dest = os.path.join(workdir, f"{PREVIOUS_PREFIX}{stamp}-{n}")
      os.makedirs(dest)
      for entry in sorted(os.listdir(workdir)):
        full = os.path.join(workdir, entry)
        if (entry.startswith((".", PREVIOUS_PREFIX)) or entry.endswith(".lock")
            or any(s == full or s.startswith(full + os.sep) for s in stay)):
          continue
        os.replace(full, os.path.join(dest, entry))
  return dest


# ----------------------------------------------------------------------------- describe
def describe(old: Mapping, data: dict | None, settings: dict, manual_dir: str) -> list[str]:
  """What differs between the record `old` and the current data / tokenizer settings, one
  phrase each ([] when nothing does, or the current data cannot be told)."""
  out = []
  before = old.get("tokenizer", {}).get("settings")
  if before is not None and before != settings:
    out += [f"config.data.{k} {before.get(k)!r} -> {settings[k]!r}" for k in settings
            if before.get(k) != settings[k]]
  fp = old.get("data")
  if data is None or fp == data:
    return out
  if fp is None:
    return out + ["the record names no data"]
  for key in ("builder", "config", "version", "image_size"):
    if fp.get(key) != data.get(key):
      out.append(f"{key} {fp.get(key)!r} -> {data.get(key)!r}")
  if fp.get("demo") != data.get("demo"):
    out.append(f"the demo's generator {fp.get('demo')} -> {data.get('demo')}")
  old_files, new_files = fp.get("files", {}), data.get("files", {})
  old_rows = old.get("rows", {})
  for rel in sorted(set(old_files) | set(new_files)):
    if rel not in new_files:
      out.append(f"{rel} removed")
    elif rel not in old_files:
      out.append(f"new file {rel}")
    elif old_files[rel] != new_files[rel]:
      out.append(_file_change(rel, old_rows.get(rel), _rows(data, manual_dir, rel),
                              old_files[rel], new_files[rel]))
  if fp.get("splits") != data.get("splits"):
    a, b = fp.get("splits") or {}, data.get("splits") or {}
    out += [f"{s}: {a.get(s, 0)} -> {b.get(s, 0)} examples" for s in sorted(set(a) | set(b))
            if a.get(s) != b.get(s)]
  return out or ["its fingerprint differs"]


def _file_change(rel: str, old: dict | None, new: dict | None, old_sha: str,
                 new_sha: str) -> str:
  """`pairs.csv: 10 rows fewer in train (117 -> 107) (sha256 1a2b3c4d -> 5e6f7a8b)`."""
  shas = f"sha256 {old_sha[:8]} -> {new_sha[:8]}"
  if not old or not new or old.get("rows") is None or new.get("rows") is None:
    return f"{rel} changed ({shas})"
  parts = []
  a, b = old.get("splits") or {}, new.get("splits") or {}
  for split in sorted(set(a) | set(b), key=lambda s: (s == "none", s)):
    d = b.get(split, 0) - a.get(split, 0)
    if d and split == "none":
      parts.append(f"{abs(d)} {'more' if d > 0 else 'fewer'} unusable rows (no image_path / "
                   f"report, or a bad split: {a.get(split, 0)} -> {b.get(split, 0)})")
    elif d:
      parts.append(f"{abs(d)} rows {'more' if d > 0 else 'fewer'} in {split} "
                   f"({a.get(split, 0)} -> {b.get(split, 0)})")
  if not parts:
    d = new["rows"] - old["rows"]
    parts.append(f"{abs(d)} rows {'more' if d > 0 else 'fewer'} ({old['rows']} -> "
                 f"{new['rows']})" if d else f"rows edited ({new['rows']} rows as before)")
  return f"{rel}: {', '.join(parts)} ({shas})"


def _rows(fp: Mapping, manual_dir: str, rel: str) -> dict | None:
  """{"rows": data rows of the label file, "splits": rows per split (pairs.csv)} or None."""
  path = os.path.join(manual_dir, rel) if manual_dir else ""
  if not path or not os.path.isfile(path):
    return None
  try:
    if fp.get("builder") == "image_text_csv" and rel == "pairs.csv":
      from asg_jax.data.builders import image_text_csv  # pylint: disable=import-outside-toplevel
      splits = image_text_csv.rows_per_split(manual_dir)
      return {"rows": sum(splits.values()), "splits": splits}
    opener = gzip.open if rel.endswith(".gz") else open
    with opener(path, "rb") as f:
      text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="")
      if rel.endswith((".csv", ".csv.gz", ".tsv")):
        rows = sum(1 for _ in csv.reader(text, delimiter="\t" if ".tsv" in rel else ","))
        return {"rows": max(rows - 1, 0)}      # the header
      if rel.endswith(".txt"):
        return {"rows": sum(1 for line in text if line.strip())}
  except (OSError, ValueError, csv.Error):
    return None
  return None


# ----------------------------------------------------------------------------- record
def record(workdir: str, binding: Binding, examples: Mapping[str, int] | None) -> None:
  """Writes the record of the data this run trains on (process 0, after tokenizer.json is
  written): replaced for a new or retrained workdir, a history entry added on "continue"
  or adoption, left as it is when unchanged."""
  if jax.process_index() != 0 or binding.data is None or binding.action == "unchanged":
    return
  old = read(workdir) or {}
  fp = binding.data
  examples = dict(old.get("examples", {}) if examples is None else examples)
  rows = {rel: r for rel in fp.get("files", {})
          if (r := _rows(fp, binding.manual_dir, rel)) is not None}
  entry = {"from_step": 0 if binding.action == "retrain" else binding.step,
           "data_sha256": _sha(json.dumps(fp, sort_keys=True).encode()),
           "examples": examples,
           "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  if binding.action == "adopted":
    entry["note"] = "the checkpoints up to this step predate the record: their data is unknown"
  history = list(old.get("history", [])) if binding.action == "continue" else []
  tok = os.path.join(workdir, TOKENIZER_FILE)
  value = {"data": fp, "rows": rows, "examples": examples,
           "tokenizer": {"sha256": _file_sha(tok) if os.path.isfile(tok) else None,
                         "settings": binding.tokenizer},
           "history": history + [entry]}
  tmp = os.path.join(workdir, LINEAGE_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(value, f, indent=1, sort_keys=True)
  os.replace(tmp, os.path.join(workdir, LINEAGE_FILE))


def _sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def _file_sha(path: str) -> str:
  with open(path, "rb") as f:
    return _sha(f.read())
