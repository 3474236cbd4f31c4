"""Ablation tables on the demo data: the ASG rows and the RECLF ladder, same steps and seed.

    .venv/bin/python benchmarks/demo_ablations.py --suite asg   [--steps 500] [--root runs/abl]
    .venv/bin/python benchmarks/demo_ablations.py --suite reclf [--steps 500]

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
"""
from __future__ import annotations

import argparse
import json
import os
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
    protocol, metric, fraction, dataset = key
    for r in results["rows"]:
      if (r["protocol"], r["metric"], r["fraction"], r["dataset"], r["init"]) == (
          protocol, metric, fraction, dataset, init):
        v = f"{100 * r['value']:.1f}" if r["value"] is not None else "—"
        return v + (f" ± {100 * r['std']:.1f}" if r.get("std") is not None else ""), r["chance"]
    return "—", None
  lines = ["| row | " + " | ".join(c for c, _ in DOWNSTREAM) + " |",
           "|---|" + "---:|" * len(DOWNSTREAM)]
  last, chance = None, {}
  for name, workdir in rows:
    path = os.path.join(workdir, "transfer", "results.json")
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
  parser.add_argument("--root", default="runs/ablations")
  parser.add_argument("extra", nargs="*", help="more --config.x=y overrides for every row")
  args = parser.parse_args(argv)
  data_dir = os.path.abspath(os.path.join(args.root, "data"))
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


if __name__ == "__main__":
  main()
