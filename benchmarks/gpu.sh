#!/usr/bin/env bash
# The GPU benchmark in one command (≤ 5 minutes on one H100/H200):
#
#     bash benchmarks/gpu.sh            # JSON lines to $OUT/gpu.jsonl (default ./gpu_out/)
#
# Stages, each under `timeout` so one hang cannot eat the others' time:
#   versions      python, jax, jaxlib, devices, torch, nvidia-smi
#   matmul        bf16 8192² matmul FLOP/s (the measured peak)
#   asg_full      ASG ViT-B/16 + BERT-6 + tag decoder, bf16, batch 288, 20 steps
#                 (compile seconds, memory_analysis, median/p90 step, pairs/s, MFU; then 3
#                 traced steps: where the kernels' time goes, "profile" in its JSON line,
#                 benchmarks/profile_summary.py; the trace itself stays in /tmp there)
#   asg_fused     the same with attention_impl=cudnn (fused attention; BERT attention
#                 dropout 0)
#   asg_ira       the IRA ablation (no tag decoder, no local heads)
#   torch         the PyTorch reference (benchmarks/torch_reference.py), 10 steps, bf16 autocast
# The benchmark path imports neither TensorFlow nor tfds. Python packages the machine lacks
# (ml_collections, on the lent H200) travel as wheels in ./.whl, installed into /tmp/site
# first. Make them on a machine with PyPI:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 -d .whl ml_collections==1.1.0
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
LOG=$OUT/gpu.jsonl
: > "$LOG"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

stage() {   # stage NAME SECONDS COMMAND...: one JSON line per stage (its own or an error)
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS out rc
  out=$(timeout "$limit" "$@" 2> "$OUT/$name.stderr")
  rc=$?
  local last
  last=$(printf '%s\n' "$out" | grep '^{' | tail -1)
  if [[ $rc -eq 0 && -n $last ]]; then
    printf '{"stage": "%s", "seconds": %d, "result": %s}\n' "$name" $((SECONDS - t0)) "$last" | tee -a "$LOG"
  else
    printf '{"stage": "%s", "seconds": %d, "rc": %d, "error": %s}\n' "$name" $((SECONDS - t0)) $rc \
      "$("$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()[-800:]))' < "$OUT/$name.stderr")" | tee -a "$LOG"
  fi
}

stage versions 30 "$PY" -c '
import json, platform, subprocess
import jax, jaxlib
out = {"python": platform.python_version(), "jax": jax.__version__, "jaxlib": jaxlib.__version__,
       "backend": jax.default_backend(), "devices": [d.device_kind for d in jax.devices()]}
try:
  import torch; out["torch"] = torch.__version__; out["cuda"] = torch.version.cuda
except Exception as e: out["torch"] = repr(e)
try:
  out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
      "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
except Exception as e: out["nvidia_smi"] = repr(e)
print(json.dumps(out))'

stage matmul 40 "$PY" -c '
import json, sys; sys.path.insert(0, ".")
from benchmarks import train_step as b
print(json.dumps({"bf16_tflops": b.matmul_flops_per_second("bfloat16") / 1e12,
                  "f32_tflops": b.matmul_flops_per_second("float32") / 1e12}))'

B=${BATCH:-288}
S=${SIZE:-base}   # SIZE=tiny BATCH=8: a smoke run on a CPU
stage asg_full 140 "$PY" benchmarks/train_step.py --size "$S" --batch "$B" --dtype bfloat16 --steps 20 --json \
    --profile /tmp/asg_full_profile
stage asg_fused 80 "$PY" benchmarks/train_step.py --size "$S" --batch "$B" --dtype bfloat16 --steps 20 --attention cudnn --json
stage asg_ira 70 "$PY" benchmarks/train_step.py --size "$S" --batch "$B" --dtype bfloat16 --steps 20 --ablation ira --json
stage torch 60 "$PY" benchmarks/compare_torch.py --size "$S" --batch "$B" --dtype bfloat16 --only torch_eager --steps 10 --rounds 1
echo "wrote $LOG"
