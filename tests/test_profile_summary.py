"""benchmarks/profile_summary.py: a step's trace attributed to model parts, passes and kinds.

A hand-made trace + HLO text pins the arithmetic (self time of nested ops, per-step
division, matmul detection through fusions, device streams preferred over host threads);
a real trace of the tiny train step checks that the parser reads what this jax writes."""
import gzip
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import profile_summary as ps  # noqa: E402  pylint: disable=wrong-import-position

HLO = """HloModule jit_train_step, entry_computation_layout={...}

%fused_dot (p0: f32[8,4], p1: f32[4,4]) -> f32[8,4] {
  %p0 = f32[8,4]{1,0} parameter(0)
  %p1 = f32[4,4]{1,0} parameter(1)
  ROOT %dot.1 = f32[8,4]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_add (p0: f32[8,4]) -> f32[8,4] {
  %p0 = f32[8,4]{1,0} parameter(0)
  ROOT %add.3 = f32[8,4]{1,0} add(%p0, %p0)
}

%body (t: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
  %t = (s32[], f32[8,4]{1,0}) parameter(0)
  ROOT %fusion.7 = f32[8,4]{1,0} fusion(%t), kind=kLoop, calls=%fused_add, metadata={op_name="jit(train_step)/jvp(VisionLanguageModel)/VisionLanguageModel.encode_text/text_encoder/encoder/layer_0/output/LayerNorm/add"}
}

ENTRY %main (a: f32[8,4], b: f32[4,4]) -> f32[8,4] {
  %a = f32[8,4]{1,0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %fusion.1 = f32[8,4]{1,0} fusion(%a, %b), kind=kOutput, calls=%fused_dot, metadata={op_name="jit(train_step)/transpose(jvp(VisionLanguageModel))/VisionLanguageModel.encode_image/image_encoder/encoder/layer_3/intermediate/dense/dot_general"}
  %while.2 = (s32[], f32[8,4]{1,0}) while(%a), condition=%cond, body=%body, metadata={op_name="jit(train_step)/jvp(VisionLanguageModel)/VisionLanguageModel.encode_text/text_encoder/while"}
  %multiply.4 = f32[8,4]{1,0} multiply(%a, %a), metadata={op_name="jit(train_step)/update/mul"}
  %custom-call.6 = (bf16[8,4]{1,0}, s8[0]{0}) custom-call(%a, %b), custom_call_target="__cublas$gemm", metadata={op_name="jit(train_step)/jvp(VisionLanguageModel)/tag_decoder/layer0/linear1/dot_general"}
  %custom-call.8 = f32[8,4]{1,0} custom-call(%a), custom_call_target="Sharding"
  ROOT %divide.5 = f32[8,4]{1,0} divide(%a, %a), metadata={op_name="jit(train_step)/jvp(objective)/div"}
}
"""


def _op(name, ts, dur, tid=1, pid=1, module="jit_train_step"):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": ts, "dur": dur, "name": name,
          "args": {"hlo_op": name, "hlo_module": module}}


def _write_trace(tmp_path, events):
  d = tmp_path / "plugins" / "profile" / "run"
  d.mkdir(parents=True)
  with gzip.open(d / "perfetto_trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  return str(tmp_path)


def test_parse_hlo_finds_matmuls_inside_fusions_and_reads_the_name_stack():
  ins = ps.parse_hlo(HLO)
  assert ins["fusion.1"]["matmul"] and ins["dot.1"]["matmul"]
  assert not ins["fusion.7"]["matmul"] and not ins["multiply.4"]["matmul"]
  assert ins["custom-call.6"]["matmul"] and not ins["custom-call.8"]["matmul"]   # GPU GEMM
  assert ins["fusion.1"]["op_name"].endswith("layer_3/intermediate/dense/dot_general")
  assert ps.part_of(ins["fusion.1"]["op_name"]) == "image tower"
  assert ps.pass_of(ins["fusion.1"]["op_name"]) == "backward"
  assert ps.block_role(ins["fusion.1"]["op_name"]) == "MLP matmuls"
  assert ps.block_role(ins["fusion.7"]["op_name"]) == "LayerNorm"
  assert ps.part_of(ins["multiply.4"]["op_name"]) == "update (AdamW + NaN guard)"
  assert ps.part_of(ins["divide.5"]["op_name"]) == "losses"
  assert ps.pass_of(ins["divide.5"]["op_name"]) == "forward"


@pytest.mark.parametrize("op_name,role", [
    ("a/image_encoder/encoder/layer_0/attention/attention/query/dot_general",
     "attention projections"),
    ("a/image_encoder/encoder/layer_0/attention/output/dense/dot_general",
     "attention projections"),
    ("a/image_encoder/encoder/layer_0/attention/attention/bhqd,bhkd->bhqk", "attention core"),
    ("a/text_encoder/encoder/layer_2/attention/self/Dropout_0/mul", "dropout"),
    ("a/image_encoder/encoder/layer_0/output/dense/dot_general", "MLP matmuls"),
    ("a/image_encoder/encoder/layer_0/intermediate/erfc", "GELU"),
    ("a/image_encoder/encoder/layer_0/layernorm_before/mul", "LayerNorm"),
    ("a/image_encoder/encoder/layer_0/add_any", "rest"),
    ("a/image_global_head/dot_general", "-"),
    ("a/tag_decoder/layer0/linear1/dot_general", "MLP matmuls"),     # the tag decoder's names
    ("a/tag_decoder/layer0/norm2/reduce_sum", "LayerNorm"),
    ("a/tag_decoder/layer0/cross_attn/query/dot_general", "attention projections"),
])
def test_block_roles(op_name, role):
  assert ps.block_role(op_name) == role


def test_summary_counts_self_time_per_step(tmp_path):
  # two steps; each: a 10 µs matmul on thread 1, a while loop (100 µs) holding a 30 µs and a
  # 20 µs body op on thread 2, a 5 µs update op; plus another module's op (ignored)
  events = []
  for step, t0 in enumerate((0.0, 1000.0)):
    events += [_op("fusion.1", t0, 10.0),
               _op("while.2", t0, 100.0, tid=2),
               _op("fusion.7", t0 + 10, 30.0, tid=2),
               _op("fusion.7", t0 + 50, 20.0, tid=2),
               _op("multiply.4", t0 + 200, 5.0),
               _op("unknown.9", t0 + 300, 1.0),
               _op("fusion.1", t0 + 400, 999.0, module="jit_other")]
    events.append({"ph": "X", "pid": 1, "tid": 1, "ts": t0, "dur": 500.0, "name": "python"})
  summary = ps.summarize(_write_trace(tmp_path, events), HLO, "jit_train_step", steps=2)
  # per step: matmul 10, while self 100 - 50 = 50, body 50, update 5, unknown 1  (µs)
  assert summary["total_ms"] == pytest.approx(0.116)
  assert summary["unmatched_ms"] == pytest.approx(0.001)
  assert summary["by_kind"]["matmul"] == pytest.approx(0.010)
  assert summary["by_part"]["image tower"]["backward"] == pytest.approx(0.010)
  assert summary["by_part"]["text tower"]["forward"] == pytest.approx(0.100)
  assert summary["by_part"]["update (AdamW + NaN guard)"]["-"] == pytest.approx(0.005)
  assert summary["in_blocks"]["text tower"]["LayerNorm"] == pytest.approx(0.050)
  assert summary["top_ops"][0]["op"] in ("while.2", "fusion.7")
  assert "| image tower |" in ps.format_table(summary)


def test_device_streams_are_preferred_over_host_threads(tmp_path):
  events = [{"ph": "M", "pid": 7, "name": "process_name", "args": {"name": "/device:GPU:0"}},
            {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/host:CPU"}},
            _op("fusion.1", 0.0, 4.0, pid=7), _op("fusion.1", 0.0, 50.0, pid=1)]
  summary = ps.summarize(_write_trace(tmp_path, events), HLO, "jit_train_step", steps=1)
  assert summary["total_ms"] == pytest.approx(0.004)


def test_a_trace_without_the_module_is_an_error(tmp_path):
  with pytest.raises(ValueError, match="jit_train_step"):
    ps.summarize(_write_trace(tmp_path, [_op("x", 0, 1, module="jit_f")]), HLO,
                 "jit_train_step", steps=1)
  with pytest.raises(FileNotFoundError, match="perfetto"):
    ps.summarize(str(tmp_path / "nothing"), HLO, "jit_train_step", steps=1)


@pytest.mark.slow
def test_the_tiny_train_step_profile_names_its_parts(tmp_path):
  """A real trace from this jax: nearly every op event is found in the compiled HLO, and
  the parts the tiny ASG step runs all appear, forward and backward."""
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  from benchmarks import train_step  # pylint: disable=import-outside-toplevel
  runner = train_step.Runner(train_step.make_config(size="tiny"), batch=4)
  summary = runner.profile(str(tmp_path), steps=2)
  assert summary["unmatched_ms"] < 0.05 * summary["total_ms"], summary["unmatched_ms"]
  parts = summary["by_part"]
  for part in ("image tower", "text tower", "tag decoder", "heads"):
    assert parts[part]["forward"] > 0 and parts[part]["backward"] > 0, (part, parts[part])
  assert parts["update (AdamW + NaN guard)"]["-"] > 0
  assert parts["losses"]["forward"] > 0
  assert 0 < summary["matmul_share"] < 1
  assert sum(p["total"] for p in parts.values()) == pytest.approx(summary["total_ms"], rel=1e-3)
  assert {"MLP matmuls", "attention core"} <= set(summary["in_blocks"]["image tower"])
  # the CLI reads back what profile() saved
  assert ps.summarize(str(tmp_path), open(tmp_path / "hlo.txt").read(), "jit_train_step",
                      2)["total_ms"] == pytest.approx(summary["total_ms"])
