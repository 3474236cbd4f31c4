"""Ablation tables on the demo data: the ASG rows, the RECLF ladder and the methods, same
steps and seeds.

    .venv/bin/python benchmarks/demo_ablations.py --suite asg   [--steps 500] [--root runs/abl]
    .venv/bin/python benchmarks/demo_ablations.py --suite reclf [--steps 500]
    .venv/bin/python benchmarks/demo_ablations.py --suite methods --steps 1500 --seeds 0,1,2

Each row is one `python -m asg_jax.main --config configs/demo.py:<row>` run in its own
process (a fresh workdir, one shared generated dataset and vocabulary, the same seed and
number of steps), then its `summary.json` is read. Prints a Markdown table of the final
validation metrics with their chance levels (retrieval R@1/5/10 as the mean of both
directions, zero-shot AUROC from prompts and from the tag decoder, region-grounding
pointing-game accuracy) and writes it to `<root>/<suite>.md`. A row already finished
(its summary.json exists) is not rerun.

Downstream, where the papers measure each term: every row's main job also runs
`configs/transfer/demo.py` (the CheXpert-layout stand-in, docs/transfer.md); a second table
reads each row's `transfer/results.json`: linear-probe macro AUROC on raw and on z-scored
features at 1 / 10 / 100 % as mean ± std over the 3 probe seeds, zero-shot AUROC (prompts,
tag decoder) and 5×200 image→prompt P@1, with the random-init encoder and chance as the
last rows.

`--suite methods` pre-trains ConVIRT, GLoRIA, MGCA, ASG and RECLF (configs/demo.py's
`objective=`) at the same steps for every seed of `--seeds` (`config.seed`) and writes
`<root>/methods.md`: one table in the shape of results.md's Table 1 (one row per method,
linear probe at 1 / 10 / 100 %, then zero-shot and retrieval), each cell the mean ± std over
the pre-training seeds of the run's value (a probe's value is already the mean of its 3
probe seeds), then the validation table. `--seg` also runs configs/transfer/demo_seg.py on
every workdir (`<workdir>/transfer_seg`; the random-init decoders only on the first, which
the table's random-init row reads: ~13 min there, ~6–7 min on each other on 2 cores); a
segmentation table (Dice over all test films, Dice+ over those with a finding) follows the
transfer table whenever a workdir has that result. A cell from fewer seeds than the method's
workdirs is marked ¹.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SUITES = {
    "asg": [("IRA", "objective=ira"),
            ("IRA + ARSA", "objective=asg,ablation=ira_arsa"),
            ("IRA + IRL", "objective=asg,ablation=ira_irl"),
            ("IRA + IRL + ERL", "objective=asg,ablation=ira_irl_erl"),
            ("ASG (all four)", "objective=asg,ablation=full")],
    "reclf": [("GLoRIA pooling", "objective=reclf,rung=gloria"),
              ("+ IRM", "objective=reclf,rung=irm"),
              ("+ IRM + SRM", "objective=reclf,rung=irm_srm"),
              ("RECLF (+ semantic targets)", "objective=reclf,rung=full")],
    # the methods of the papers' Table 1 (results.md), each at its configs/demo.py defaults
    "methods": [("ConVIRT", "objective=convirt"), ("GLoRIA", "objective=gloria"),
                ("MGCA", "objective=mgca"), ("ASG", "objective=asg"),
                ("RECLF", "objective=reclf")],
}
COLUMNS = [("R@1", "top1"), ("R@5", "top5"), ("R@10", "top10"),
           ("ZS AUROC (prompts)", "zs_prompt_auroc"), ("ZS AUROC (tags)", "zs_tag_auroc"),
           ("grounding acc", "grounding_acc")]


def run_row(arg: str, workdir: str, data_dir: str, steps: int, extra: list[str]) -> dict:
  summary = os.path.join(workdir, "summary.json")
  if not os.path.exists(summary):
    cmd = [sys.executable, "-m", "asg_jax.main", f"--config=configs/demo.py:{arg}",
           f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
           f"--config.train.num_steps={steps}", f"--config.eval.every_steps={steps}", *extra]
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    print(f"  {time.time() - t0:.0f} s", flush=True)
  with open(summary) as f:
    return json.load(f)


def table(rows: list[tuple[str, dict]]) -> str:
  head = "| row | " + " | ".join(c for c, _ in COLUMNS) + " |"
  lines = [head, "|---|" + "---:|" * len(COLUMNS)]
  for name, s in rows:
    cells = []
    for _, key in COLUMNS:
      value = s["metrics"].get(key)
      cells.append("—" if value is None else f"{value:.3f}")
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  chance = {}
  for _, summary in rows:
    chance.update(summary["chance"])
  cells = [("—" if chance.get(k) is None else f"{chance[k]:.3f}") for _, k in COLUMNS]
  lines.append("| *chance* | " + " | ".join(cells) + " |")
  return "\n".join(lines)


DOWNSTREAM = [("probe 1 %", ("linear_probe", "auroc", 0.01, "cxr_chexpert/demo")),
              ("probe 10 %", ("linear_probe", "auroc", 0.1, "cxr_chexpert/demo")),
              ("probe 100 %", ("linear_probe", "auroc", 1.0, "cxr_chexpert/demo")),
              ("z-probe 1 %", ("linear_probe", "auroc_zscored", 0.01, "cxr_chexpert/demo")),
              ("z-probe 10 %", ("linear_probe", "auroc_zscored", 0.1, "cxr_chexpert/demo")),
              ("z-probe 100 %", ("linear_probe", "auroc_zscored", 1.0, "cxr_chexpert/demo")),
              ("ZS AUROC (prompts)", ("zero_shot_prompt", "auroc", None, "cxr_chexpert/demo")),
              ("ZS AUROC (tags)", ("zero_shot_tags", "auroc", None, "cxr_chexpert/demo")),
              ("5×200 i2t P@1", ("retrieval", "i2t_precision@1", None, "cxr_chexpert/demo_5x200"))]


def downstream_table(rows: list[tuple[str, str]]) -> str:
  """Markdown from each row's `<workdir>/transfer/results.json` ((name, workdir) pairs)."""
  def cell(results, init, key):
    value, chance, std = _transfer_value(results, init, key)
    return _cell([value], own_std=std), chance
  lines = ["| row | " + " | ".join(c for c, _ in DOWNSTREAM) + " |",
           "|---|" + "---:|" * len(DOWNSTREAM)]
  last, chance = None, {}
  for name, workdir in rows:
    path = _results_path(workdir)
    if not os.path.exists(path):
      lines.append(f"| {name} | " + " | ".join("—" for _ in DOWNSTREAM) + " |")
      continue
    with open(path) as f:
      last = json.load(f)
    cells = []
    for col, key in DOWNSTREAM:
      value, c = cell(last, "pretrained", key)
      cells.append(value)
      chance[col] = c if c is not None else chance.get(col)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  if last is not None:
    lines.append("| *random init* | " + " | ".join(cell(last, "random", k)[0]
                                                  for _, k in DOWNSTREAM) + " |")
    lines.append("| *chance* | " + " | ".join(
        "—" if chance.get(c) is None else f"{100 * chance[c]:.1f}" for c, _ in DOWNSTREAM) + " |")
  return "\n".join(lines)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--suite", choices=sorted(SUITES), required=True)
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--seeds", default="0", help="pre-training seeds (methods suite)")
  parser.add_argument("--seg", action="store_true", help="methods: + demo_seg.py Dice")
  parser.add_argument("--root", default="runs/ablations")
  parser.add_argument("extra", nargs="*", help="more --config.x=y overrides for every row")
  args = parser.parse_args(argv)
  data_dir = os.path.abspath(os.path.join(args.root, "data"))
  if args.suite == "methods":
    seeds = [int(s) for s in args.seeds.split(",")]
    text = methods_suite(args.root, data_dir, args.steps, seeds, args.seg, args.extra)
    print(text)
    with open(os.path.join(args.root, "methods.md"), "w") as f:
      f.write(text)
    return
  rows, workdirs = [], []
  for name, arg in SUITES[args.suite]:
    workdir = os.path.join(args.root, args.suite, arg.replace(",", "_").replace("=", "-"))
    rows.append((name, run_row(arg, workdir, data_dir, args.steps, args.extra)))
    workdirs.append((name, workdir))
  text = table(rows)
  n = rows[0][1].get("num_eval_examples")
  text += (f"\n\n{args.steps} steps, seed 0, demo data ({n} validation studies); "
           "R@K = mean of image→text and text→image.\n")
  text += ("\nDownstream (configs/transfer/demo.py on the stand-in, %; probe: mean ± std "
           "over 3 probe seeds, on raw and on z-scored (z-) features):\n\n"
           + downstream_table(workdirs) + "\n")
  print(text)
  with open(os.path.join(args.root, f"{args.suite}.md"), "w") as f:
    f.write(text)


# ---------------------------------------------------------------------- methods suite

# (column, key): a transfer row (protocol, metric, fraction, dataset) or ("val", metric)
METHOD_COLUMNS = [
    ("z-probe 1 %", ("linear_probe", "auroc_zscored", 0.01, "cxr_chexpert/demo")),
    ("z-probe 10 %", ("linear_probe", "auroc_zscored", 0.1, "cxr_chexpert/demo")),
    ("z-probe 100 %", ("linear_probe", "auroc_zscored", 1.0, "cxr_chexpert/demo")),
    ("probe 1 %", ("linear_probe", "auroc", 0.01, "cxr_chexpert/demo")),
    ("probe 10 %", ("linear_probe", "auroc", 0.1, "cxr_chexpert/demo")),
    ("probe 100 %", ("linear_probe", "auroc", 1.0, "cxr_chexpert/demo")),
    ("L-BFGS 1 %", ("linear_probe_lbfgs", "auroc", 0.01, "cxr_chexpert/demo")),
    ("L-BFGS 10 %", ("linear_probe_lbfgs", "auroc", 0.1, "cxr_chexpert/demo")),
    ("L-BFGS 100 %", ("linear_probe_lbfgs", "auroc", 1.0, "cxr_chexpert/demo")),
    ("fine-tune 100 %", ("fine_tune", "auroc", 1.0, "cxr_chexpert/demo")),
    ("ZS AUROC (prompts)", ("zero_shot_prompt", "auroc", None, "cxr_chexpert/demo")),
    ("5×200 i2t P@1", ("retrieval", "i2t_precision@1", None, "cxr_chexpert/demo_5x200")),
]
SEG_COLUMNS = [(f"{name} {f} %", ("segmentation", metric, f / 100, "cxr_siim/demo"))
               for name, metric in (("Dice", "dice"), ("Dice+", "dice_positive"))
               for f in (1, 10, 100)]
VAL_COLUMNS = [("val R@1", "top1"), ("val R@10", "top10"), ("val ZS AUROC", "zs_prompt_auroc"),
               ("grounding", "grounding_acc")]


def _transfer_value(results: dict | None, init: str, key) -> tuple[float | None, ...]:
  """(value, chance, std) of the row `key` = (protocol, metric, fraction, dataset) for
  `init` (Nones when there is none); std = the row's own (a probe's over its probe seeds)."""
  protocol, metric, fraction, dataset = key
  for r in (results or {}).get("rows", []):
    if (r["protocol"], r["metric"], r["dataset"], r["init"]) == (protocol, metric, dataset, init) \
        and (r["fraction"] == fraction or (fraction is not None and r["fraction"] is not None
                                           and abs(r["fraction"] - fraction) < 1e-9)):
      return r["value"], r.get("chance"), r.get("std")
  return None, None, None


def _results_path(workdir: str, segmentation: bool = False) -> str:
  """`<workdir>/transfer/results.json`, or the `--seg` run's `transfer_seg/results.json`."""
  return os.path.join(workdir, "transfer_seg" if segmentation else "transfer", "results.json")


def _read_json(path: str) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


PARTIAL_MARK = "¹"


def _cell(values: list, scale: float = 100.0, digits: int = 1, own_std=None) -> str:
  """Mean ± std over the seeds; one seed: its value (± `own_std`, the probe seeds', if any)."""
  values = [v for v in values if v is not None]
  if not values:
    return "—"
  mean = f"{scale * statistics.mean(values):.{digits}f}"
  if len(values) < 2:
    return mean + (f" ± {scale * own_std:.{digits}f}" if own_std is not None else "")
  return f"{mean} ± {scale * statistics.stdev(values):.{digits}f}"


def _seeds_cell(runs: list[tuple]) -> tuple[str, bool]:
  """(cell, partial) for one column over a method's workdirs: `runs` =
  [(value, chance, own std)] per pre-training seed, None where that workdir has no result.
  Several values: their mean ± std over the seeds. One value: that run's value ± its own std
  (over its probe or decoder seeds). Marked when some workdirs have no value (a run not
  finished, or --seg on some seeds only)."""
  present = [(v, s) for v, _, s in runs if v is not None]
  return (_cell([v for v, _ in present], own_std=present[0][1] if present else None),
          0 < len(present) < len(runs))


def _transfer_table(runs: dict[str, list[str]], columns: list, partial_columns: set) -> list[str]:
  """Markdown lines: one row per method (each cell mean ± std over its workdirs, the seeds),
  then the random-init and chance rows; adds the columns with a partial cell to
  `partial_columns`."""
  lines = ["| method | " + " | ".join(c for c, _ in columns) + " |",
           "|---|" + "---:|" * len(columns)]
  chance = {}

  def row(name: str, workdirs: list[str], init: str) -> None:
    cells = []
    for col, key in columns:
      per_seed = [_transfer_value(_read_json(_results_path(w, key[0] == "segmentation")),
                                  init, key) for w in workdirs]
      chance.update({col: c for _, c, _ in per_seed if c is not None})
      if init == "random":   # one encoder (the transfer config's random_seed) for every seed:
        # its own ±, not a "± 0.0" spread over identical runs
        per_seed = list(dict.fromkeys(p for p in per_seed if p[0] is not None))
      text, marked = _seeds_cell(per_seed)
      cells.append(text + (PARTIAL_MARK if marked else ""))
      if marked:
        partial_columns.add(col)
    lines.append(f"| {name} | " + " | ".join(cells) + " |")

  for name, workdirs in runs.items():
    row(name, workdirs, "pretrained")
  # the random-init encoder is every method's: read from the first method's workdirs
  row("*random init*", next(iter(runs.values())), "random")
  lines.append("| *chance* | " + " | ".join(
      "—" if chance.get(c) is None else f"{100 * chance[c]:.1f}" for c, _ in columns) + " |")
  return lines


def methods_table(runs: dict[str, list[str]]) -> str:
  """Markdown: the transfer table (one row per method, each cell mean ± std over its
  workdirs, the seeds), the segmentation table when any workdir has
  `transfer_seg/results.json`, then the validation table."""
  partial_columns = set()
  lines = _transfer_table(runs, METHOD_COLUMNS, partial_columns)
  if any(os.path.exists(_results_path(w, segmentation=True))
         for workdirs in runs.values() for w in workdirs):
    lines += ["", "Segmentation (configs/transfer/demo_seg.py, the SIIM-layout stand-in), Dice "
              "%: over all test films (a film without a finding scores 1 when predicted empty, "
              "else 0; chance = the all-empty prediction) and over the films with a finding "
              "(Dice+):", ""]
    lines += _transfer_table(runs, SEG_COLUMNS, partial_columns)
  if partial_columns:
    named = ", ".join(c for c, _ in METHOD_COLUMNS + SEG_COLUMNS if c in partial_columns)
    lines += ["", f"{PARTIAL_MARK} from fewer pre-training seeds than the method has workdirs "
              f"(the others have no {named}); a cell from one seed is that run's value ± the "
              "std over its own probe or decoder seeds, not over pre-training seeds."]
  lines += ["", "Validation (the pre-training split):", "",
            "| method | " + " | ".join(c for c, _ in VAL_COLUMNS) + " |",
            "|---|" + "---:|" * len(VAL_COLUMNS)]
  val_chance = {}
  for name, workdirs in runs.items():
    summaries = [_read_json(os.path.join(w, "summary.json")) or {} for w in workdirs]
    for s in summaries:
      val_chance.update(s.get("chance", {}))
    lines.append(f"| {name} | " + " | ".join(
        _cell([s.get("metrics", {}).get(k) for s in summaries], 1.0, 3)
        for _, k in VAL_COLUMNS) + " |")
  lines.append("| *chance* | " + " | ".join(
      "—" if val_chance.get(k) is None else f"{val_chance[k]:.3f}" for _, k in VAL_COLUMNS)
      + " |")
  return "\n".join(lines)


def methods_suite(root: str, data_dir: str, steps: int, seeds: list[int], seg: bool,
                  extra: list[str]) -> str:
  """Pre-trains every method for every seed (reusing finished workdirs), then the table."""
  runs: dict[str, list[str]] = {}
  t0 = time.time()
  for seed in seeds:
    for name, arg in SUITES["methods"]:
      workdir = os.path.join(root, "methods", f"{arg.split('=')[1]}_seed{seed}")
      run_row(arg, workdir, data_dir, steps, [f"--config.seed={seed}", *extra])
      seg_results = _results_path(workdir, segmentation=True)
      if seg and not os.path.exists(seg_results):
        cmd = [sys.executable, "-m", "asg_jax.evaluate", f"--workdir={workdir}",
               "--config=configs/transfer/demo_seg.py", f"--out={os.path.dirname(seg_results)}"]
        if runs:   # the random-init encoder is one for every workdir (the transfer config's
          # random_seed) and the table reads it from the first: its decoders train only there
          cmd.append("--config.inits=('pretrained',)")
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
      runs.setdefault(name, []).append(workdir)
  n = len(seeds)
  text = (f"Methods on the demo: {steps} steps each, pre-training seeds {seeds} "
          f"({time.strftime('%Y-%m-%d %H:%M')}, {time.time() - t0:.0f} s for the runs not "
          "already finished). Downstream %: configs/transfer/demo.py on the CheXpert-layout "
          "stand-in; each cell "
          + ("the mean ± std over the pre-training seeds (a probe cell: of the means of its 3 "
             "probe seeds)" if n > 1 else "one pre-training seed: a probe cell is the mean ± "
             "std over its 3 probe seeds, the other cells have no ±")
          + ". z-probe = probe on z-scored features. The random-init row is one encoder "
          "(the transfer config's random_seed), the same for every pre-training seed: its ± is "
          "over its probe (segmentation: decoder) seeds.\n\n")
  return text + methods_table(runs) + "\n"


if __name__ == "__main__":
  main()
