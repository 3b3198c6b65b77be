#!/usr/bin/env bash
# One GPU check (see benchmarks/gpu_check.py): every GPU measurement, into OUT_DIR as
# gpu_check.json and gpu_check.md. Sized for under 8 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh OUT_DIR            # needs scamort and a CUDA build of torch
#   bash benchmarks/gpu_check.sh OUT_DIR --smoke    # the same code on CPU at tiny sizes
#
# PYTHON selects the interpreter (default: .venv/bin/python if present, else python3).
set -euo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR [--smoke] [--skip-tests]}
shift
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$out"
cd "$root"
PYTHONUNBUFFERED=1 exec "$PYTHON" benchmarks/gpu_check.py "$out" "$@"
