"""Nothing the user owns is written or deleted; builds notice changed inputs; config errors
come before any data work (issue "Your own data, safely")."""
import csv
import json
import os
import pathlib
import subprocess
import sys

import pytest

from asg_jax import config as config_lib
from asg_jax.errors import ConfigError
from asg_jax import data as data_lib
from asg_jax.data.builders import build
from asg_jax.data.demo import owned_dir, synthetic
from tests.helpers import demo_config, own_config, snapshot

REPO = pathlib.Path(__file__).resolve().parents[2]
REPORT = "The heart is enlarged. There is a small left pleural effusion. No pneumothorax."


def user_folder(tmp_path, realdata_dir, n=12) -> pathlib.Path:
  """A user's folder: pairs.csv over real images + an unrelated file of theirs."""
  folder = tmp_path / "my_pairs"
  folder.mkdir()
  (folder / "my_notes.docx").write_bytes(b"the user's own file, not data")
  images = sorted((realdata_dir / "images").glob("*.png"))[:2]
  with open(folder / "pairs.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["image_path", "report", "split", "subject_id"])
    for i in range(n):
      w.writerow([str(images[i % 2]), REPORT, "validation" if i % 4 == 0 else "train", f"p{i}"])
  return folder


def test_demo_refuses_a_users_folder_and_writes_nothing(tmp_path, realdata_dir):
  folder = user_folder(tmp_path, realdata_dir)
  before = snapshot(folder)
  config = demo_config("runlocal", **{"data.manual_dir": str(folder), "data.demo_num_studies": 4})
  with pytest.raises(owned_dir.NotOwnedError, match=r"refusing to write into .*my_pairs.*"
                     r"own_data\.py"):
    data_lib.prepare(config, str(tmp_path / "wd"))
  with pytest.raises(owned_dir.NotOwnedError):
    synthetic.generate(str(folder), 3, seed=0)
  assert snapshot(folder) == before


def test_demo_regenerates_only_its_own_files(tmp_path):
  folder = tmp_path / "demo"
  assert synthetic.ensure_demo(str(folder), 4, seed=0)
  assert not synthetic.ensure_demo(str(folder), 4, seed=0)     # same parameters: reused
  planted = folder / "files" / "mine.txt"
  planted.write_text("a file the user put into the generated folder")
  first = set(snapshot(folder)) - {"files/mine.txt", owned_dir.MARKER_FILE}
  assert synthetic.ensure_demo(str(folder), 3, seed=1)         # new parameters: regenerated
  second = set(snapshot(folder)) - {"files/mine.txt", owned_dir.MARKER_FILE}
  assert planted.read_text().startswith("a file the user")
  marker = json.loads((folder / owned_dir.MARKER_FILE).read_text())
  assert set(marker["files"]) == second and marker["params"]["num_studies"] == 3
  stale = first - second       # the 4-study generation's own files are gone, nothing else
  assert stale and not any((folder / f).exists() for f in stale)


def test_own_data_build_reads_only_and_rebuilds_when_pairs_csv_changes(tmp_path, realdata_dir):
  folder = user_folder(tmp_path, realdata_dir)
  before = snapshot(folder)
  data_dir = tmp_path / "tfds"
  config = own_config(folder, data_dir)
  source = data_lib.prepare(config, str(tmp_path / "wd"))
  assert source.build["built"] and (source.num_train_examples, source.num_eval_examples) == (9, 3)
  again = data_lib.prepare(config, str(tmp_path / "wd"))
  assert not again.build["built"] and again.build["reason"] == "up to date"
  # the user edits pairs.csv: every row becomes train except two
  rows = list(csv.reader(open(folder / "pairs.csv")))
  for i, row in enumerate(rows[1:]):
    row[2] = "validation" if i < 2 else "train"
  with open(folder / "pairs.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  edited = snapshot(folder)
  changed = data_lib.prepare(config, str(tmp_path / "wd"))
  assert changed.build["built"] and "changed: pairs.csv" in changed.build["reason"]
  assert (changed.num_train_examples, changed.num_eval_examples) == (10, 2)
  never = own_config(folder, data_dir, **{"data.rebuild": "never"})
  rows[1][2] = "train"
  with open(folder / "pairs.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  reused = data_lib.prepare(never, str(tmp_path / "wd"))
  assert not reused.build["built"] and reused.num_eval_examples == 2
  assert set(snapshot(folder)) == set(before) and snapshot(folder)["my_notes.docx"] == \
      edited["my_notes.docx"] == before["my_notes.docx"]


def test_data_dir_defaults_into_the_workdir(tmp_path, realdata_dir):
  folder = user_folder(tmp_path, realdata_dir)
  config = own_config(folder, "")
  source = data_lib.prepare(config, str(tmp_path / "wd"))
  assert source.data_dir == str(tmp_path / "wd" / "data")
  assert source.build["data_dir"].startswith(str(tmp_path / "wd" / "data"))
  assert os.path.isfile(os.path.join(source.build["data_dir"], build.FINGERPRINT_FILE))


def test_wrong_builder_and_values_fail_before_any_data_work(tmp_path):
  config = demo_config("runlocal", **{"data.name": "image_text_csv"})
  with pytest.raises(ConfigError, match=r"'demo' is not a config of tfds builder "
                     r"'image_text_csv'; expected one of \['default', 'no_anatomy', 'all_views'\]"):
    data_lib.prepare(config, str(tmp_path / "wd"))
  config = demo_config("runlocal", **{"data.name": "image_text_csv",
                                      "data.builder_config": "default"})
  with pytest.raises(ConfigError, match="own_data.py"):
    data_lib.prepare(config, str(tmp_path / "wd"))
  with pytest.raises(ConfigError, match="did you mean"):
    build.check_builder("mimic_cxrr", None)
  config = demo_config("runlocal")
  config.unlock()
  config.data.regions = ("right lung", "foo")
  with pytest.raises(ConfigError, match=r"unknown region name\(s\) \['foo'\]"):
    config_lib.check_overrides_applied(config)
  assert not (tmp_path / "wd").exists() or not any((tmp_path / "wd").rglob("*.jpg"))


def test_unknown_override_key_is_one_line_naming_the_closest(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "asg_jax.main", "--config", str(REPO / "configs" / "demo.py"),
       "--workdir", str(tmp_path / "wd"), "--config.train.num_step=3"],
      capture_output=True, text=True, cwd=REPO, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
      "ERROR: unknown config key 'train.num_step'; closest valid keys: train.num_steps, "
      "train.num_epochs, train.num_devices"]
  assert not (tmp_path / "wd").exists()
