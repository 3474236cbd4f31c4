"""Changed data never meets a trained checkpoint silently (asg_jax/lineage.py): a rerun after
pairs.csv changed refuses saying what changed, `continue` keeps the old vocabulary and trains
on the new rows, `retrain` keeps the old run aside and starts over; tokenizer.json of a trained
workdir is never rewritten; `--reevaluate` gives the numbers of the original data or refuses.

One tiny own-data run (real radiographs and real IU X-ray reports, 2 steps at 64 px) is
trained once; every test works on a copy of its workdir with pairs.csv back as it was."""
import csv
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from asg_jax import config as config_lib
from asg_jax.errors import ConfigError
from asg_jax import lineage, train
from asg_jax import workdir as workdir_lib
from tests.helpers import recipe, snapshot

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = {"train.num_steps": 2, "eval.every_steps": 2, "train.checkpoint_every": 2,
         "train.num_devices": 1}
FIELDS = ["image_path", "report", "split", "subject_id"]


def config_for(folder, **overrides):
  """configs/own_data.py:runlocal on `folder` at 64 px, 2 steps, the loss evaluator only."""
  return recipe("own_data", "runlocal", evals=["loss"], **{
      "data.manual_dir": str(folder), "data.image_size": 64, "data.resize": 72,
      **STEPS, **overrides})


def run_files(workdir) -> dict:
  """{relative path: sha256} of the workdir's files, less the lock (it names its holder)."""
  return {k: v for k, v in snapshot(workdir).items() if not os.path.basename(k).startswith(".")}


def sha(path) -> str:
  return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(realdata_dir, tmp_path_factory):
  """(the folder whose pairs.csv the run read, its original bytes, the trained workdir)."""
  root = tmp_path_factory.mktemp("lineage")
  folder = root / "pairs"
  folder.mkdir()
  with open(realdata_dir / "iu-xray-reports" / "annotation.json") as f:
    reports = [e["report"] for e in json.load(f)["train"][:24]]
  images = sorted((realdata_dir / "images").glob("*.png"))[:2]
  rows = [{"image_path": str(images[i % 2]), "report": reports[i],
           "split": "validation" if i % 4 == 0 else "train", "subject_id": f"p{i}"}
          for i in range(24)]                                   # 18 train, 6 validation
  with open(folder / "pairs.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  workdir = root / "trained"
  summary = train.train_and_evaluate(config_for(folder), str(workdir))
  assert summary["steps"] == 2
  return folder, (folder / "pairs.csv").read_bytes(), workdir


@pytest.fixture
def fresh(trained, tmp_path):
  """A copy of the trained workdir; the folder's pairs.csv as it was trained on."""
  folder, original, workdir = trained
  (folder / "pairs.csv").write_bytes(original)
  copy = tmp_path / "wd"
  shutil.copytree(workdir, copy)
  return folder, copy


def drop_train_rows(folder, n=3):
  """Removes the last `n` train rows of pairs.csv."""
  with open(folder / "pairs.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  drop = [i for i, r in enumerate(rows) if r["split"] == "train"][-n:]
  with open(folder / "pairs.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows(r for i, r in enumerate(rows) if i not in drop)


CHANGE = r"pairs\.csv: 3 rows fewer in train \(18 -> 15\) \(sha256 [0-9a-f]{8} -> [0-9a-f]{8}\)"


@pytest.mark.slow
def test_unchanged_rerun_and_reevaluate_keep_the_numbers_and_the_vocabulary(fresh, capsys):
  folder, workdir = fresh
  record = json.loads((workdir / lineage.LINEAGE_FILE).read_text())
  assert record["rows"]["pairs.csv"] == {"rows": 24, "splits": {"train": 18, "validation": 6}}
  assert record["examples"] == {"train": 18, "validation": 6}
  assert record["tokenizer"]["sha256"] == sha(workdir / "tokenizer.json")
  before = run_files(workdir)
  original = json.loads((workdir / "summary.json").read_text())
  assert train.train_and_evaluate(config_for(folder), str(workdir)) == original
  assert "Already finished" in capsys.readouterr().out
  again = train.train_and_evaluate(config_for(folder), str(workdir), reevaluate=True)
  assert again["metrics"] == pytest.approx(original["metrics"], rel=1e-6)
  after = run_files(workdir)
  for name in ("tokenizer.json", lineage.LINEAGE_FILE, "best.json"):
    assert after[name] == before[name]


@pytest.mark.slow
def test_changed_data_is_refused_saying_what_changed(fresh):
  folder, workdir = fresh
  drop_train_rows(folder)
  before = run_files(workdir)
  for reevaluate in (False, True):
    with pytest.raises(lineage.DataChangedError, match=CHANGE + r"\. Use a new --workdir"):
      train.train_and_evaluate(config_for(folder), str(workdir), reevaluate=reevaluate)
  assert run_files(workdir) == before                # nothing written, nothing rebuilt
  # the command line: one line, exit status 2, the same for --reevaluate
  args = [f"--config.data.manual_dir={folder}"] + [
      f"--config.{k}={v}" for k, v in {"data.image_size": 64, "data.resize": 72,
                                        **STEPS}.items()]
  proc = subprocess.run([sys.executable, "-m", "asg_jax.main", "--config",
                         "configs/own_data.py:runlocal", "--workdir", str(workdir),
                         "--reevaluate"] + args, capture_output=True, text=True, cwd=REPO,
                        timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("ERROR: the data changed since the checkpoints")
  assert "--config.data.on_change=retrain" in lines[0]
  assert run_files(workdir) == before


@pytest.mark.slow
def test_continue_keeps_the_vocabulary_and_trains_on_the_new_rows(fresh, capsys):
  folder, workdir = fresh
  vocabulary = (workdir / "tokenizer.json").read_bytes()
  drop_train_rows(folder)
  config = config_for(folder, **{"data.on_change": "continue", "train.num_steps": 4,
                                 "eval.every_steps": 4})
  summary = train.train_and_evaluate(config, str(workdir))
  out = capsys.readouterr().out
  assert "Continuing on the new data with the vocabulary of the checkpoints" in out
  assert "Resuming from step 2" in out and summary["steps"] == 4
  assert (workdir / "tokenizer.json").read_bytes() == vocabulary
  record = json.loads((workdir / lineage.LINEAGE_FILE).read_text())
  history = [(h["from_step"], h["examples"]["train"]) for h in record["history"]]
  assert history == [(0, 18), (2, 15)]
  assert record["tokenizer"]["sha256"] == hashlib.sha256(vocabulary).hexdigest()
  # the rebuilt dataset has the new rows and learnt no vocabulary of its own
  built = next((workdir / "data" / "image_text_csv" / "default").iterdir())
  info = json.loads((built / "dataset_info.json").read_text())
  counts = {s["name"]: int(s["shardLengths"][0]) for s in info["splits"]}
  assert counts == {"train": 15, "validation": 6}
  assert not list(built.glob("wordpiece_*.txt"))
  # the policy is no part of the run: the plain command now finds it finished
  plain = config_for(folder, **{"train.num_steps": 4, "eval.every_steps": 4})
  assert train.train_and_evaluate(plain, str(workdir)) == summary
  assert "Already finished" in capsys.readouterr().out


@pytest.mark.slow
def test_retrain_keeps_the_old_run_aside_and_starts_over(fresh, capsys):
  from asg_jax.inference import Pretrained
  folder, workdir = fresh
  old = run_files(workdir)
  drop_train_rows(folder)
  summary = train.train_and_evaluate(config_for(folder, **{"data.on_change": "retrain"}),
                                     str(workdir))
  assert "The old run is kept in" in capsys.readouterr().out
  kept = [p for p in workdir.iterdir() if p.name.startswith(lineage.PREVIOUS_PREFIX)]
  assert len(kept) == 1
  moved = run_files(kept[0])
  # the whole old run is there byte for byte, the dataset folder stayed in place
  assert moved == {k: v for k, v in old.items() if not k.startswith("data" + os.sep)}
  assert summary["steps"] == 2
  record = json.loads((workdir / lineage.LINEAGE_FILE).read_text())
  assert [h["from_step"] for h in record["history"]] == [0]
  assert record["examples"] == {"train": 15, "validation": 6}
  assert record["tokenizer"]["sha256"] == sha(workdir / "tokenizer.json")
  # the old run still loads from where it was kept
  model = Pretrained.from_workdir(str(kept[0]))
  assert model.tokenizer.source == str(kept[0] / "tokenizer.json")
  embedding = np.asarray(model.embed_images([np.zeros((64, 64), np.uint8)]))
  assert embedding.shape == (1, model.config.model.embed_dim) and np.all(np.isfinite(embedding))


@pytest.mark.slow
def test_a_workdir_without_checkpoints_is_not_bound(fresh):
  folder, workdir = fresh
  empty = workdir.parent / "untrained"
  empty.mkdir()
  shutil.copy(workdir / lineage.LINEAGE_FILE, empty)
  shutil.copy(workdir / "tokenizer.json", empty)
  drop_train_rows(folder)
  binding = lineage.check(config_for(folder), str(empty))
  assert binding.action == "new" and lineage.bound_tokenizer(str(empty)) is None
  assert lineage.bound_tokenizer(str(workdir)) == str(workdir / "tokenizer.json")
  with pytest.raises(lineage.DataChangedError):
    lineage.check(config_for(folder), str(workdir))


def test_the_rerun_policy_is_no_part_of_the_config_fingerprint(tmp_path):
  refuse = config_for(tmp_path)
  cont = config_for(tmp_path, **{"data.on_change": "continue"})
  assert train.config_fingerprint(refuse) == train.config_fingerprint(cont)
  # ... and equal to what a summary.json written before the key existed holds
  legacy = json.loads(refuse.to_json_best_effort(sort_keys=True))
  del legacy["data"]["on_change"]
  old_text = refuse.to_json_best_effort(sort_keys=True).replace(', "on_change": "refuse"', "")
  assert json.loads(old_text) == legacy
  assert train.config_fingerprint(refuse) == hashlib.sha256(old_text.encode()).hexdigest()
  assert train.config_fingerprint(config_for(tmp_path, **{"train.num_steps": 3})) != \
      train.config_fingerprint(refuse)
  workdir_lib.write_config(refuse, str(tmp_path))
  assert workdir_lib.config_changes(cont, str(tmp_path)) == []
  bad = config_for(tmp_path, **{"data.on_change": "ignore"})
  with pytest.raises(ConfigError, match=r"config\.data\.on_change = 'ignore'; "
                     r"expected one of \('refuse', 'continue', 'retrain'\)"):
    config_lib.check_overrides_applied(bad)


def test_describe_names_each_change():
  old = {"data": {"builder": "image_text_csv", "config": "default", "version": "1.2.0",
                  "image_size": 256, "files": {"pairs.csv": "a" * 64, "notes.txt": "b" * 64}},
         "rows": {"pairs.csv": {"rows": 20, "splits": {"train": 16, "validation": 4}}},
         "tokenizer": {"settings": {"tokenizer": "", "demo_vocab_size": 600,
                                    "lower_case": True}}}
  new = {"builder": "image_text_csv", "config": "default", "version": "1.3.0",
         "image_size": 256, "files": {"pairs.csv": "c" * 64, "extra.csv": "d" * 64}}
  settings = {"tokenizer": "", "demo_vocab_size": 800, "lower_case": True}
  assert lineage.describe(old, new, settings, "") == [
      "config.data.demo_vocab_size 600 -> 800", "version '1.2.0' -> '1.3.0'",
      "new file extra.csv", "notes.txt removed", "pairs.csv changed (sha256 aaaaaaaa -> cccccccc)"]
  assert lineage.describe(old, dict(old["data"]), old["tokenizer"]["settings"], "") == []
  # the demo is described by its generator's parameters
  demo = {"builder": "mimic_cxr", "config": "demo", "version": "1", "demo": {"num_studies": 96}}
  assert lineage.describe({"data": demo}, dict(demo, demo={"num_studies": 50}), settings, "") \
      == ["the demo's generator {'num_studies': 96} -> {'num_studies': 50}"]
