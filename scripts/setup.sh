#!/usr/bin/env bash
# Create .venv (if absent) and install scamort with its test and docs tools into it.
# torch goes first: the CPU build 2.13.0 when no torch is installed yet. For a CUDA
# build, install it into .venv before running this script; it is then kept as is.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q torch==2.13.0
fi
.venv/bin/python -m pip install -q -e ".[test,docs]"
