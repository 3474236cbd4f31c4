"""Build a tfds dataset from its manual download once, and again whenever its inputs change.

    build.check_builder("image_text_csv", "default")    # ValueError naming valid choices
    build.prepare(name, builder_config, data_dir, manual_dir, rebuild="auto")

A build records a fingerprint of what it was built from in `FINGERPRINT_FILE`, next to the
dataset (`<data_dir>/<name>/<config>/<version>/`): the builder's name, config, version and
stored image size, and the SHA-256 of each label / list file of the manual_dir (the files
ending in .csv, .csv.gz, .txt, .tsv or .json at its top level and one folder down, e.g.
`pairs.csv`, the MIMIC CSVs, `CheXpert-v1.0-small/train.csv`; images and per-study report
files are not read). `rebuild`:

  "auto"    rebuild when the fingerprint differs (an edited CSV, another builder version) or
            the build has none (it predates fingerprints, or was made by `tfds build`);
  "never"   reuse any existing build, with a warning when its fingerprint differs;
  "always"  rebuild.

Rebuilding replaces only the dataset's own version folder (tfds' REUSE_CACHE_IF_EXISTS);
nothing in the manual_dir is ever written.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time

from asg_jax.errors import ConfigError

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "asg_jax_inputs.json"
LABEL_FILE_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv", ".json")
REBUILD_CHOICES = ("auto", "never", "always")


def _tfds():
  """tfds, with the project's builders registered (by this package's `__init__`, which
  importing this module has run)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds


def check_builder(name: str, builder_config: str | None) -> None:
  """A clear error unless `name` is a registered tfds builder with config `builder_config`
  (also `<config>_<size>` for the project's builders). Reads no data."""
  tfds = _tfds()
  try:
    cls = tfds.builder_cls(name)
  except Exception as e:  # tfds raises DatasetNotFoundError with a long message
    import difflib  # pylint: disable=import-outside-toplevel
    known = [n for n in tfds.list_builders(with_community_datasets=False)]
    close = difflib.get_close_matches(name, known, n=3)
    raise ConfigError(f"config.data.name = {name!r} is not a tfds builder"
                     + (f"; did you mean {close}?" if close else "")) from e
  configs = [c.name for c in getattr(cls, "BUILDER_CONFIGS", [])]
  if not builder_config or not configs:
    return
  base = builder_config
  head, _, size = builder_config.rpartition("_")
  if builder_config not in configs and head in configs and size.isdigit():
    base = head
  if base not in configs:
    raise ConfigError(f"config.data.builder_config = {builder_config!r} is not a config of "
                     f"tfds builder {name!r}; expected one of {configs}")


def label_files(manual_dir: str) -> list[str]:
  """The manual_dir's label / list files (relative paths, sorted) that the fingerprint reads."""
  out = []
  for entry in sorted(os.listdir(manual_dir)):
    full = os.path.join(manual_dir, entry)
    if entry.startswith("."):
      continue
    if os.path.isfile(full) and entry.endswith(LABEL_FILE_SUFFIXES):
      out.append(entry)
    elif os.path.isdir(full):
      with os.scandir(full) as it:
        out.extend(os.path.join(entry, e.name) for e in sorted(it, key=lambda e: e.name)
                   if not e.name.startswith(".") and e.name.endswith(LABEL_FILE_SUFFIXES)
                   and e.is_file())
  return out


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def fingerprint(builder, manual_dir: str) -> dict:
  """What a build of `builder` from `manual_dir` depends on (see the module docstring)."""
  config = builder.builder_config
  return {"builder": builder.name, "config": config.name if config else "",
          "version": str(builder.version),
          "image_size": getattr(config, "image_size", None),
          "files": {rel: _sha256(os.path.join(manual_dir, rel))
                    for rel in label_files(manual_dir)}}


def expected_fingerprint(name: str, builder_config: str | None, data_dir: str,
                         manual_dir: str | None, rebuild: str = "auto") -> dict | None:
  """The fingerprint of the data `prepare(...)` with these arguments would leave in
  `data_dir`, computed without building anything (asg_jax/lineage.py compares it with what
  a workdir was trained on before the data is touched): that of `manual_dir` when it would
  be (re)built from it; else the existing build's recorded one, or — for a build that
  records none — the builder, config, version and split sizes tfds knows. None when it
  cannot be told (no manual_dir folder and nothing built: `prepare` raises)."""
  tfds = _tfds()
  builder = tfds.builder(name, config=builder_config or None, data_dir=data_dir)
  prepared = builder.is_prepared()
  usable = bool(manual_dir) and os.path.isdir(manual_dir)
  if usable and not (prepared and rebuild == "never"):
    return fingerprint(builder, manual_dir)
  if not prepared:
    return None
  fp_path = os.path.join(builder.data_dir, FINGERPRINT_FILE)
  if os.path.isfile(fp_path):
    with open(fp_path) as f:
      return json.load(f)
  config = builder.builder_config
  return {"builder": builder.name, "config": config.name if config else "",
          "version": str(builder.version), "image_size": getattr(config, "image_size", None),
          "splits": {k: int(v.num_examples) for k, v in sorted(builder.info.splits.items())}}


def _changes(old: dict | None, new: dict) -> str:
  """A short human description of what differs ('' when equal)."""
  if old is None:
    return "the existing build records no fingerprint of its inputs"
  parts = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in ("builder", "config", "version",
                                                         "image_size") if old.get(k) != new[k]]
  files_old, files_new = old.get("files", {}), new["files"]
  changed = [f for f in files_new if f in files_old and files_old[f] != files_new[f]]
  added = [f for f in files_new if f not in files_old]
  removed = [f for f in files_old if f not in files_new]
  for what, names in (("changed", changed), ("new", added), ("removed", removed)):
    if names:
      parts.append(f"{what}: {', '.join(names[:5])}" + (" ..." if len(names) > 5 else ""))
  return "; ".join(parts)


def _one_build_at_a_time(prepare_fn):
  """Two processes preparing one dataset in one data_dir (two workdirs sharing
  `config.data.data_dir`) take turns (asg_jax/locking.py): the second waits, naming the
  first, then finds the build done (or still out of date, and builds it)."""
  @functools.wraps(prepare_fn)
  def wrapper(name, builder_config, data_dir, manual_dir, rebuild="auto"):
    if not manual_dir:   # nothing to build from: only reads
      return prepare_fn(name, builder_config, data_dir, manual_dir, rebuild)
    from asg_jax import locking  # pylint: disable=import-outside-toplevel
    config = builder_config or "default"
    path = os.path.join(data_dir, f".{name}.{config}.build.lock")
    with locking.take_turns(path, f"preparing {name}/{config} in {data_dir}"):
      return prepare_fn(name, builder_config, data_dir, manual_dir, rebuild)
  return wrapper


@_one_build_at_a_time
def prepare(name: str, builder_config: str | None, data_dir: str, manual_dir: str | None,
            rebuild: str = "auto") -> dict:
  """Build `name/builder_config` into `data_dir` from `manual_dir` unless an up-to-date build
  is there (see the module docstring).

  Returns:
    {"built": bool, "reason": why it was (re)built or reused, "data_dir": the dataset's
    version folder}.
  Raises:
    FileNotFoundError: nothing is built and no manual_dir is given.
  """
  if rebuild not in REBUILD_CHOICES:
    raise ConfigError(f"config.data.rebuild = {rebuild!r}; expected one of {REBUILD_CHOICES}")
  tfds = _tfds()
  builder = tfds.builder(name, config=builder_config or None, data_dir=data_dir)
  fp_path = os.path.join(builder.data_dir, FINGERPRINT_FILE)
  prepared = builder.is_prepared()
  if not manual_dir:
    if prepared:
      return {"built": False, "reason": "prepared (no manual_dir to compare)",
              "data_dir": builder.data_dir}
    raise FileNotFoundError(f"tfds dataset {name}/{builder_config} is not prepared in "
                            f"{builder.data_dir} and no config.data.manual_dir was given to "
                            f"build it from")
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"config.data.manual_dir = {manual_dir!r} is not a folder")
  new = fingerprint(builder, manual_dir)
  reason = "not built yet"
  if prepared:
    old = None
    if os.path.isfile(fp_path):
      with open(fp_path) as f:
        old = json.load(f)
    reason = _changes(old, new)
    if not reason and rebuild != "always":
      return {"built": False, "reason": "up to date", "data_dir": builder.data_dir}
    if rebuild == "never":
      logger.warning("reusing %s although its inputs differ (%s): config.data.rebuild="
                     "'never'", builder.data_dir, reason)
      print(f"WARNING: reusing the build in {builder.data_dir} although {reason} "
            f"(config.data.rebuild=never)", flush=True)
      return {"built": False, "reason": f"reused despite: {reason}",
              "data_dir": builder.data_dir}
    reason = reason or "config.data.rebuild = 'always'"
    print(f"Rebuilding {name}/{builder.builder_config.name} in {builder.data_dir}: {reason}",
          flush=True)
  else:
    print(f"Building {name}/{builder.builder_config.name} from {manual_dir} into "
          f"{builder.data_dir}", flush=True)
  mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS
  from asg_jax import console  # pylint: disable=import-outside-toplevel
  t0 = time.time()
  with console.quiet_tfds_prints():   # tfds' own progress bars stay (on a terminal)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, download_mode=mode))
  counts = ", ".join(f"{n} {s}" for s, n in sorted(
      (k, v.num_examples) for k, v in builder.info.splits.items()))
  print(f"Built {name}/{builder.builder_config.name} ({counts}) in {time.time() - t0:.0f} s",
        flush=True)
  with open(fp_path, "w") as f:
    json.dump(new, f, indent=1)
  return {"built": True, "reason": reason, "data_dir": builder.data_dir}
