"""benchmarks/demo_ablations.py --suite methods: the table docs/demo.md records is the mean ±
std over pre-training seeds of each workdir's results, the random-init row is the one random
encoder's (its own ±), and a cell from fewer seeds than the method's workdirs (--seg on seed 0
only, an unfinished run) is marked as such.

Runs the script's `main` on finished workdirs (summary.json present, so no pre-training is
started) with results the test writes, and checks every cell against NumPy.
"""
import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from benchmarks import demo_ablations  # noqa: E402  pylint: disable=wrong-import-position

CHEX, SIIM = "cxr_chexpert/demo", "cxr_siim/demo"


def _row(dataset, protocol, metric, value, fraction=None, std=None, chance=0.5, init="pretrained"):
  return {"dataset": dataset, "protocol": protocol, "metric": metric, "fraction": fraction,
          "init": init, "value": value, "std": std, "chance": chance}


def _write(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f)


def _cells(text: str, name: str) -> dict[str, str]:
  """{column: cell} of the rows named `name` in every Markdown table of `text` (the
  transfer, segmentation and validation tables have distinct columns)."""
  def split(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")][1:]

  cells, cols = {}, None
  for line in text.splitlines():
    if line.startswith("| method |"):
      cols = split(line)
    elif line.startswith(f"| {name} |"):
      cells.update(zip(cols, split(line)))
  return cells


def _fmt(values) -> str:
  v = 100 * np.asarray(values)
  return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}"


def test_methods_table_is_mean_and_std_over_seeds_and_marks_partial_cells(tmp_path, capsys):
  rng = np.random.default_rng(0)
  seeds = [0, 1, 2]
  methods = [arg.split("=")[1] for _, arg in demo_ablations.SUITES["methods"]]
  probe, rand, zs, seg = {}, {}, {}, {}
  for m in methods:
    for s in seeds:
      w = tmp_path / "methods" / f"{m}_seed{s}"
      probe[m, s], zs[m, s] = rng.uniform(0.5, 0.9, size=2)
      # the random-init encoder is the transfer config's random_seed: the same in every
      # workdir of a method; different in the first method's to test the mean over seeds
      rand[m, s] = 0.6 if m != methods[0] else 0.6 + s / 100
      _write(w / "summary.json", {"metrics": {"top1": 0.1 + s / 100}, "chance": {"top1": 0.006}})
      rows = [_row(CHEX, "linear_probe_lbfgs", "auroc", probe[m, s], 0.01, std=0.02),
              _row(CHEX, "linear_probe_lbfgs", "auroc", rand[m, s], 0.01, std=0.03,
                   init="random"),
              _row(CHEX, "zero_shot_prompt", "auroc", zs[m, s])]
      _write(w / "transfer" / "results.json", {"rows": rows})
      if s == 0:   # --seg ran on seed 0's workdirs only
        seg[m] = rng.uniform(0.3, 0.9)
        _write(w / "transfer_seg" / "results.json", {"rows": [
            _row(SIIM, "segmentation", "dice", seg[m], 0.1, std=0.04, chance=0.6),
            _row(SIIM, "segmentation", "dice_positive", seg[m] / 2, 0.1, std=0.02, chance=0.0),
            _row(SIIM, "segmentation", "dice", 0.25, 0.1, std=0.05, chance=0.6, init="random")]})

  demo_ablations.main(["--suite", "methods", "--steps", "7", "--seeds", "0,1,2",
                       "--root", str(tmp_path)])
  assert "$ " not in capsys.readouterr().out, "a finished workdir was pre-trained again"
  text = (tmp_path / "methods.md").read_text()

  for (name, _), m in zip(demo_ablations.SUITES["methods"], methods):
    cells = _cells(text, name)
    assert cells["L-BFGS 1 %"] == _fmt([probe[m, s] for s in seeds])
    assert cells["ZS AUROC (prompts)"] == _fmt([zs[m, s] for s in seeds])
    assert cells["L-BFGS 10 %"] == "—"                       # no such row: no number
    assert cells["Dice 10 %"] == f"{100 * seg[m]:.1f} ± 4.0" + demo_ablations.PARTIAL_MARK
    assert cells["Dice+ 10 %"] == f"{50 * seg[m]:.1f} ± 2.0" + demo_ablations.PARTIAL_MARK
  # segmentation is a table of its own, after the transfer table
  heads = [l for l in text.splitlines() if l.startswith("| method |")]
  assert len(heads) == 3 and "Dice" not in heads[0] and "Dice+ 100 %" in heads[1]
  # the random-init rows: read from the first method's workdirs (ConVIRT's)
  cells = _cells(text, "*random init*")
  assert cells["L-BFGS 1 %"] == _fmt([rand[methods[0], s] for s in seeds])
  assert cells["Dice 10 %"] == "25.0 ± 5.0"   # one random encoder: seed 0's run says it all
  assert _cells(text, "*chance*")["Dice 10 %"] == "60.0"
  assert _cells(text, "*chance*")["Dice+ 10 %"] == "0.0"
  footnote = next(l for l in text.splitlines() if l.startswith(demo_ablations.PARTIAL_MARK))
  assert "Dice 10 %, Dice+ 10 %" in footnote and "L-BFGS" not in footnote
  # the validation table: summary.json metrics, mean ± std over the seeds
  assert f"| ConVIRT | {0.11:.3f} ± {np.std([0.10, 0.11, 0.12], ddof=1):.3f} |" in text

  # one random encoder in every workdir (as the transfer config's random_seed makes it): its
  # own ±, no seed mark, also while a seed's transfer is unfinished; that seed's cell is marked
  one_method = {"A": [str(tmp_path / "methods" / f"{methods[1]}_seed{s}") for s in seeds]}
  assert _cells(demo_ablations.methods_table(one_method), "*random init*")["L-BFGS 1 %"] \
      == "60.0 ± 3.0"
  os.remove(tmp_path / "methods" / f"{methods[1]}_seed2" / "transfer" / "results.json")
  unfinished = demo_ablations.methods_table(one_method)
  assert _cells(unfinished, "*random init*")["L-BFGS 1 %"] == "60.0 ± 3.0"
  assert _cells(unfinished, "A")["L-BFGS 1 %"] == (
      _fmt([probe[methods[1], s] for s in (0, 1)]) + demo_ablations.PARTIAL_MARK)


@pytest.mark.parametrize("values,expected", [
    ([(0.7, 0.5, 0.01)], ("70.0 ± 1.0", False)),                      # one seed: its own std
    ([(0.7, 0.5, 0.01), (None, None, None)], ("70.0 ± 1.0", True)),   # one of two: marked
    ([(0.6, 0.5, 0.01), (0.8, 0.5, 0.09)], ("70.0 ± 14.1", False)),   # two: std over seeds
    ([(0.6, 0.5, 0.01), (0.8, 0.5, 0.09), (None, None, None)], ("70.0 ± 14.1", True)),
    ([(None, None, None)], ("—", False))])
def test_seeds_cell(values, expected):
  assert demo_ablations._seeds_cell(values) == expected  # pylint: disable=protected-access


def test_seg_trains_the_random_init_decoders_only_on_the_first_workdir(tmp_path, monkeypatch):
  """--seg evaluates every workdir that lacks `transfer_seg/results.json`; the random-init
  encoder is one for all of them, so only the first workdir (the one the table's random-init
  row reads) trains its decoders, the others evaluate the pre-trained encoder only."""
  methods = [arg.split("=")[1] for _, arg in demo_ablations.SUITES["methods"]]
  for m in methods:
    for s in (0, 1):
      _write(tmp_path / "methods" / f"{m}_seed{s}" / "summary.json", {"metrics": {}, "chance": {}})
  done = tmp_path / "methods" / f"{methods[1]}_seed0" / "transfer_seg" / "results.json"
  _write(done, {"rows": []})
  commands = []

  def run(cmd, check):
    assert check
    commands.append(cmd)
    out = next(a.split("=", 1)[1] for a in cmd if a.startswith("--out="))
    _write(os.path.join(out, "results.json"), {"rows": []})

  monkeypatch.setattr(demo_ablations.subprocess, "run", run)
  demo_ablations.main(["--suite", "methods", "--steps", "7", "--seeds", "0,1", "--seg",
                       "--root", str(tmp_path)])
  evaluated = [next(a for a in c if a.startswith("--workdir=")).split("/")[-1] for c in commands]
  assert evaluated == [f"{m}_seed{s}" for s in (0, 1) for m in methods
                       if (m, s) != (methods[1], 0)]          # a finished one is reused
  inits = [[a for a in c if a.startswith("--config.inits=")] for c in commands]
  assert inits[0] == []                                      # the config's: incl. random
  assert all(i == ["--config.inits=('pretrained',)"] for i in inits[1:])


def test_downstream_table_reads_each_rows_transfer_results(tmp_path):
  """The ASG / RECLF suites' downstream table: a row per workdir (its pre-trained encoder's
  value ± its probe seeds' std), the last workdir's random-init row, chance, and dashes for a
  workdir without results."""
  done, missing = tmp_path / "a", tmp_path / "b"
  _write(done / "transfer" / "results.json", {"rows": [
      _row(CHEX, "linear_probe", "auroc", 0.731, 0.01, std=0.012),
      _row(CHEX, "linear_probe", "auroc", 0.592, 0.01, std=0.017, init="random"),
      _row(CHEX, "zero_shot_prompt", "auroc", 0.757)]})
  text = demo_ablations.downstream_table([("A", str(done)), ("B", str(missing))])
  text = text.replace("| row |", "| method |", 1)   # the header _cells reads
  a, b = _cells(text, "A"), _cells(text, "B")
  assert (a["probe 1 %"], a["ZS AUROC (prompts)"], a["probe 10 %"]) == ("73.1 ± 1.2", "75.7", "—")
  assert len(b) == len(demo_ablations.DOWNSTREAM) and set(b.values()) == {"—"}
  assert _cells(text, "*random init*")["probe 1 %"] == "59.2 ± 1.7"
  chance = _cells(text, "*chance*")
  assert chance["probe 1 %"] == "50.0" and chance["5×200 i2t P@1"] == "—"
