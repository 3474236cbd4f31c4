"""End to end on your own pairs: real public radiographs (PNG, JPEG, DICOM) with real reports
plus generated ones, through configs/own_data.py:runlocal — trains, evaluates, loads with
`Pretrained.from_workdir`; rerunning the README command is a no-op that keeps the summary."""
import csv
import gzip
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from asg_jax import train
from asg_jax.data.demo import synthetic
from asg_jax.data.builders import chest_builder
from tests.helpers import own_config, snapshot

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = {"data.image_size": 64, "data.resize": 72}
STEPS = {"train.num_steps": 4, "eval.every_steps": 4, "train.checkpoint_every": 4}


def make_pairs(tmp_path, realdata_dir) -> tuple[pathlib.Path, int]:
  """pairs.csv over the real images + 30 generated studies; returns (folder, #laterals)."""
  folder = tmp_path / "pairs"
  gen = folder / "generated"
  synthetic.generate(str(gen), 30, seed=7)
  with gzip.open(gen / "mimic-cxr-2.0.0-metadata.csv.gz", "rt") as f:
    meta = list(csv.DictReader(f))
  rows, laterals = [], 0
  for m in meta:
    subj, study = m["subject_id"], m["study_id"]
    base = gen / "files" / f"p{subj[:2]}" / f"p{subj}"
    rows.append({"image_path": os.path.relpath(base / f"s{study}" / f"{m['dicom_id']}.jpg", folder),
                 "report": (base / f"s{study}.txt").read_text(), "subject_id": subj,
                 "view_position": m["ViewPosition"]})
    laterals += m["ViewPosition"] not in ("PA", "AP")
  with open(realdata_dir / "iu-xray-reports" / "annotation.json") as f:
    reports = [e["report"] for e in json.load(f)["train"][:20]]
  images = realdata_dir / "images"
  real = sorted(p for p in images.iterdir() if p.suffix in (".png", ".jpg", ".dcm"))
  for i, path in enumerate(real):
    rows.append({"image_path": str(path), "report": reports[i], "subject_id": f"real{i}",
                 "view_position": "PA"})
  with open(folder / "pairs.csv", "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return folder, laterals


@pytest.mark.slow
def test_own_data_recipe_end_to_end(tmp_path, realdata_dir, capsys):
  from asg_jax.inference import Pretrained
  folder, laterals = make_pairs(tmp_path, realdata_dir)
  (folder / "README.txt").write_text("my notes")
  before = snapshot(folder)
  workdir = tmp_path / "workdir"
  config = own_config(folder, "", **SIZES, **STEPS)
  summary = train.train_and_evaluate(config, str(workdir))
  assert summary["steps"] == 4 and summary["num_eval_examples"] > 0
  assert np.isfinite(summary["metrics"]["val_loss"])     # a tiny split still has a val_loss
  assert "grounding_acc" not in summary["metrics"]        # atlas boxes only: not scored
  assert json.loads((workdir / "best.json").read_text())["step"] == 4
  built = [p for p in (workdir / "data" / "image_text_csv" / "default").iterdir()]
  build_summary = json.loads((built[0] / chest_builder.SUMMARY_FILE).read_text())
  filtered = sum(sum(s["filtered"].values()) for s in build_summary["splits"].values())
  assert laterals > 0 and filtered == laterals
  model = Pretrained.from_workdir(str(workdir))
  image = np.asarray(json.loads("[[0, 255], [128, 64]]"), np.uint8).repeat(40, 0).repeat(40, 1)
  from_best = np.asarray(model.embed_images([image]))
  assert from_best.shape == (1, config.model.embed_dim)
  np.testing.assert_allclose(np.linalg.norm(from_best, axis=-1), 1.0, rtol=1e-5)
  # the README command again: finished, summary.json untouched, nothing rebuilt
  summary_bytes = (workdir / "summary.json").read_bytes()
  args = [f"--config.data.manual_dir={folder}"] + [
      f"--config.{k}={v}" for k, v in {**SIZES, **STEPS}.items()]
  proc = subprocess.run([sys.executable, "-m", "asg_jax.main", "--config",
                         "configs/own_data.py:runlocal", "--workdir", str(workdir)] + args,
                        capture_output=True, text=True, cwd=REPO, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Already finished" in proc.stdout
  assert (workdir / "summary.json").read_bytes() == summary_bytes
  # no best checkpoint (e.g. deleted): the latest is loaded, saying so
  shutil.rmtree(workdir / "best")
  capsys.readouterr()
  from_latest = np.asarray(Pretrained.from_workdir(str(workdir)).embed_images([image]))
  assert "loading the latest checkpoint instead" in capsys.readouterr().out
  np.testing.assert_array_equal(from_latest, from_best)     # best step == last step (4)
  assert snapshot(folder) == before                      # the user's folder was only read
