"""Where one compiled step's time goes: a `jax.profiler` trace summarised by model part.

    .venv/bin/python benchmarks/train_step.py --size base --batch 8 --ablation ira \
        --steps 3 --profile runs/profile_base

`summarize(trace_dir, hlo_text, module, steps)` reads the Perfetto trace that
`jax.profiler.start_trace(..., create_perfetto_trace=True)` wrote, keeps the events XLA
tags with `args.hlo_op` / `args.hlo_module` (one per executed HLO instruction: thunks on
XLA:CPU's threads, kernels on a GPU's streams), and attributes each event's *self* time
(its duration minus the op events nested inside it on the same thread: a `while` loop's
body is counted once, in the body's ops) to

- a **part** of the program, read from the instruction's `metadata.op_name`, the name stack
  JAX records at trace time (Flax module paths, plus the train step's own `jax.named_scope`s
  `objective` and `update`): image tower, text tower, tag decoder, heads (projection
  heads, RECLF's local head, word aggregation), image input (the uint8 feed's on-device
  normalisation), losses, update (AdamW, the gradient norm and the NaN
  guard: XLA fuses them into the same loops), other (unnamed copies and layout changes,
  dropout random bits);
- a **pass**: forward (`jvp(...)`), backward (`transpose(jvp(...))`) or neither (the
  optimizer, the NaN guard, measurements);
- a **kind**: matmul (a `dot`/`convolution`, a cuBLAS / cuDNN custom call, or a fusion
  whose computation contains one) or not (elementwise, reductions, copies, transposes, ...).

Times are op time added up: on a CPU each thunk's time (an op's own multithreading is inside
it; XLA:CPU also runs independent thunks at once, so the sum can exceed the step's wall
time); on a GPU the kernels' time on the device's streams. Shares are of the sum.
"""
from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re

# part -> the name-stack components (transforms stripped: `jvp(objective)` is `objective`)
# that put an instruction in it; the first part with a matching component wins
PARTS = (
    ("update (AdamW + NaN guard)", lambda c: c == "update"),
    ("losses", lambda c: c == "objective"),
    ("tag decoder", lambda c: c == "tag_decoder"),
    ("image tower", lambda c: c == "image_encoder"),
    ("text tower", lambda c: c == "text_encoder"),
    ("heads", lambda c: c.endswith("_head")),
    # what encode_image / encode_text do outside the towers and heads
    ("image input (on-device normalisation)", lambda c: c.endswith(".encode_image")),
    ("heads", lambda c: c.endswith(".encode_text")),   # word aggregation, word masks
)
_TRANSFORM = re.compile(r"^(?:[\w.]*\()+|\)+$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*\S+.*?\s([\w\-]+)\(")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_MATMUL_OPCODES = {"dot", "convolution"}
_TARGET = re.compile(r'custom_call_target="([^"]*)"')
# library calls that are matmuls: cuBLAS / cuBLASLt GEMMs, cuDNN convolutions and fused
# attention, oneDNN matmuls
_MATMUL_TARGETS = ("gemm", "matmul", "conv", "fmha")


def part_of(op_name: str) -> str:
  """The model part an instruction belongs to, from its `op_name` name stack."""
  components = [_TRANSFORM.sub("", c) for c in op_name.split("/")]
  for part, matches in PARTS:
    if any(matches(c) for c in components):
      return part
  return "other"


_LAYER = re.compile(r"layer_?\d+")
_PROJECTION = {"query", "key", "value", "q", "k", "v", "out", "qkv"}


def block_role(op_name: str) -> str:
  """What an instruction does inside a transformer block (`layer_N/...` in its name stack):
  MLP matmuls, attention projections, attention core (scores, softmax, context), GELU,
  LayerNorm, dropout, rest (residual adds, ...); "-" outside the blocks."""
  comps = op_name.split("/")
  at = [i for i, c in enumerate(comps) if _LAYER.fullmatch(_TRANSFORM.sub("", c))]
  if not at:
    return "-"
  inner = [_TRANSFORM.sub("", c) for c in comps[at[-1] + 1:]]
  text = "/".join(inner)
  lowered = text.lower()
  if "dropout" in lowered:
    return "dropout"
  if ("layernorm" in lowered or "layer_norm" in lowered or
      inner[0].lower().startswith(("ln", "norm"))):
    return "LayerNorm"
  attention = bool(inner) and ("attention" in inner[0] or "attn" in inner[0])
  if attention and (any(c in _PROJECTION for c in inner[1:3]) or "dense" in inner[1:3]):
    return "attention projections"
  if attention:
    return "attention core"
  if "dense" in inner[:2] or inner[0].startswith(("mlp", "fc", "wi", "wo", "linear")):
    return "MLP matmuls"
  if "erf" in lowered or "gelu" in lowered or "tanh" in lowered:
    return "GELU"
  return "rest"


def pass_of(op_name: str) -> str:
  if "transpose(jvp(" in op_name:
    return "backward"
  if "jvp(" in op_name:
    return "forward"
  return "-"


def parse_hlo(hlo_text: str) -> dict[str, dict]:
  """HLO instruction name -> {"op_name", "opcode", "matmul"} from `compiled.as_text()`.

  `matmul` is True for a dot / convolution, a library GEMM / convolution / fused-attention
  custom call, and a fusion (or call) whose called computation contains one."""
  instructions, computations, current = {}, collections.defaultdict(list), None
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head and "=" not in line.split("{")[0]:
      current = head.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, opcode = m.group(1), m.group(2)
    op_name = _OP_NAME.search(line)
    calls = _CALLS.search(line)
    target = _TARGET.search(line) if opcode == "custom-call" else None
    instructions[name] = {"op_name": op_name.group(1) if op_name else "", "opcode": opcode,
                          "calls": calls.group(1) if calls else None,
                          "target": target.group(1).lower() if target else ""}
    if current is not None:
      computations[current].append(name)

  memo: dict[str, bool] = {}

  def computation_has_matmul(comp: str, depth: int = 0) -> bool:
    if comp not in memo:
      memo[comp] = False   # cycles cannot happen in HLO; this guards the recursion anyway
      memo[comp] = any(is_matmul(i, depth + 1) for i in computations.get(comp, ()))
    return memo[comp]

  def is_matmul(name: str, depth: int = 0) -> bool:
    ins = instructions[name]
    if ins["opcode"] in _MATMUL_OPCODES or any(t in ins["target"] for t in _MATMUL_TARGETS):
      return True
    return bool(ins["calls"]) and depth < 8 and computation_has_matmul(ins["calls"], depth)

  for name, ins in instructions.items():
    ins["matmul"] = is_matmul(name)
  return instructions


def load_trace_events(trace_dir: str) -> list[dict]:
  """The complete ("X") events of the newest Perfetto trace under `trace_dir`; where the
  trace has accelerator processes (`/device:GPU:0`, `/device:TPU:0`), only theirs (the
  host threads then only launch the kernels)."""
  files = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"),
                           recursive=True), key=os.path.getmtime)
  if not files:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir} (was the trace "
                            "taken with create_perfetto_trace=True?)")
  with gzip.open(files[-1], "rt") as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  device_pids = {e.get("pid") for e in events
                 if e.get("ph") == "M" and e.get("name") == "process_name" and
                 "/device:" in str((e.get("args") or {}).get("name", ""))}
  return [e for e in events if e.get("ph") == "X" and
          (not device_pids or e.get("pid") in device_pids)]


def self_times(events: list[dict], module: str) -> list[tuple[str, float]]:
  """(hlo_op, self microseconds) for each op event of `module`: its duration minus the op
  events nested inside it on the same thread."""
  ops = [e for e in events
         if (e.get("args") or {}).get("hlo_op") and
         (e["args"].get("hlo_module", module) == module)]
  by_thread = collections.defaultdict(list)
  for e in ops:
    by_thread[(e.get("pid"), e.get("tid"))].append(e)
  out = []
  for thread_events in by_thread.values():
    thread_events.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[list] = []   # [end, index into out]
    for e in thread_events:
      while stack and stack[-1][0] <= e["ts"]:
        stack.pop()
      if stack:
        out[stack[-1][1]][1] -= e["dur"]
      out.append([e["args"]["hlo_op"], float(e["dur"])])
      stack.append([e["ts"] + e["dur"], len(out) - 1])
  return [(name, max(t, 0.0)) for name, t in out]


def summarize(trace_dir: str, hlo_text: str, module: str, steps: int, top: int = 12) -> dict:
  """The profile of `steps` traced executions of HLO module `module` (e.g. jit_train_step).

  Returns JSON-ready figures in milliseconds per step: `total_ms`, `by_part` (part ->
  {forward, backward, -, total, share}), `matmul_share`, `by_kind`, and the `top` ops by
  self time with their part, pass, kind and op_name; `in_blocks` (part -> `block_role` ->
  ms). Op events the HLO text does not name count in `unmatched_ms` and part "other"."""
  instructions = parse_hlo(hlo_text)
  times = self_times(load_trace_events(trace_dir), module)
  if not times:
    raise ValueError(f"the trace under {trace_dir} has no op events of module {module!r}")
  per_op = collections.Counter()
  for name, t in times:
    per_op[name] += t / 1e3 / steps
  total = sum(per_op.values())
  by_part = collections.defaultdict(lambda: collections.Counter())
  by_kind = collections.Counter()
  by_role = collections.defaultdict(lambda: collections.Counter())
  rows = []
  unmatched = 0.0
  for name, ms in per_op.items():
    if name not in instructions:
      unmatched += ms
    ins = instructions.get(name, {"op_name": "", "opcode": "?", "matmul": False})
    part, pas = part_of(ins["op_name"]), pass_of(ins["op_name"])
    kind = "matmul" if ins["matmul"] else "other"
    by_part[part][pas] += ms
    by_kind[kind] += ms
    role = block_role(ins["op_name"])
    if role != "-":
      by_role[part][role] += ms
    rows.append((ms, name, part, pas, kind, ins["op_name"]))
  rows.sort(reverse=True)
  parts = {}
  for part, c in sorted(by_part.items(), key=lambda kv: -sum(kv[1].values())):
    t = sum(c.values())
    parts[part] = {**{k: round(c.get(k, 0.0), 3) for k in ("forward", "backward", "-")},
                   "total": round(t, 3), "share": round(t / total, 4)}
  return {
      "module": module, "steps": steps, "total_ms": round(total, 3),
      "unmatched_ms": round(unmatched, 3), "by_part": parts,
      "by_kind": {k: round(v, 3) for k, v in by_kind.items()},
      "matmul_share": round(by_kind.get("matmul", 0.0) / total, 4),
      "in_blocks": {part: {role: round(ms, 3) for role, ms in c.most_common()}
                    for part, c in sorted(by_role.items(),
                                          key=lambda kv: -sum(kv[1].values()))},
      "top_ops": [{"op": n, "ms": round(ms, 3), "part": p, "pass": s, "kind": k,
                   "op_name": o[-120:]} for ms, n, p, s, k, o in rows[:top]],
  }


def format_table(summary: dict) -> str:
  """The summary as Markdown: one row per part, then the top ops."""
  lines = [f"device time per step: {summary['total_ms']:.1f} ms "
           f"(matmul {100 * summary['matmul_share']:.0f} %)", "",
           "| part | forward ms | backward ms | other ms | share |", "|---|---:|---:|---:|---:|"]
  for part, r in summary["by_part"].items():
    lines.append(f"| {part} | {r['forward']:.1f} | {r['backward']:.1f} | {r['-']:.1f} | "
                 f"{100 * r['share']:.1f} % |")
  roles = ("MLP matmuls", "attention projections", "attention core", "GELU", "LayerNorm",
           "dropout", "rest")
  lines += ["", "inside the transformer blocks, ms per step:", "",
            "| part | " + " | ".join(roles) + " |", "|---|" + "---:|" * len(roles)]
  for part, c in summary.get("in_blocks", {}).items():
    lines.append(f"| {part} | " + " | ".join(f"{c.get(r, 0.0):.1f}" for r in roles) + " |")
  lines += ["", "| op | ms | part | pass | kind |", "|---|---:|---|---|---|"]
  for r in summary["top_ops"]:
    lines.append(f"| {r['op']} | {r['ms']:.1f} | {r['part']} | {r['pass']} | {r['kind']} |")
  return "\n".join(lines)


def main(argv=None):
  """`python benchmarks/profile_summary.py DIR`: summarise a trace `train_step.py --profile
  DIR` wrote (it also saved DIR/hlo.txt and DIR/steps.txt), e.g. one brought back from a
  GPU machine."""
  import argparse  # pylint: disable=import-outside-toplevel
  p = argparse.ArgumentParser(description=main.__doc__.split("\n")[0])
  p.add_argument("trace_dir")
  p.add_argument("--module", default="jit_train_step")
  p.add_argument("--json", action="store_true")
  args = p.parse_args(argv)
  with open(os.path.join(args.trace_dir, "hlo.txt")) as f:
    hlo_text = f.read()
  steps_file = os.path.join(args.trace_dir, "steps.txt")
  steps = int(open(steps_file).read()) if os.path.exists(steps_file) else 1
  summary = summarize(args.trace_dir, hlo_text, args.module, steps)
  print(json.dumps(summary) if args.json else format_table(summary))


if __name__ == "__main__":
  main()
