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


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--suite", choices=sorted(SUITES), required=True)
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--root", default="runs/ablations")
  parser.add_argument("extra", nargs="*", help="more --config.x=y overrides for every row")
  args = parser.parse_args(argv)
  data_dir = os.path.abspath(os.path.join(args.root, "data"))
  rows = []
  for name, arg in SUITES[args.suite]:
    workdir = os.path.join(args.root, args.suite, arg.replace(",", "_").replace("=", "-"))
    rows.append((name, run_row(arg, workdir, data_dir, args.steps, args.extra)))
  text = table(rows)
  n = rows[0][1].get("num_eval_examples")
  text += (f"\n\n{args.steps} steps, seed 0, demo data ({n} validation studies); "
           "R@K = mean of image→text and text→image.\n")
  print(text)
  with open(os.path.join(args.root, f"{args.suite}.md"), "w") as f:
    f.write(text)


if __name__ == "__main__":
  main()
