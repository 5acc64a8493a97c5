#!/usr/bin/env bash
# GPU check of the SAGE student: PyTorch CUDA fp32/fp16 (+ channels_last, torch.compile), TensorRT
# where installed, ONNX Runtime CPU as a baseline; latency at 640x480 and 1024x768 and PSNR vs fp32.
#
#   scripts/device_check.sh                      # on the GPU machine (repo root or anywhere)
#   scripts/device_check.sh --device cpu --sizes 64x48 --runs 2 --no-compile   # quick local check
#
# Needs PyTorch (and ../shared/sage_official beside the repository for the released weights and a
# real image pair). Installs nothing: when sage_ros is not installed it runs from this checkout
# through PYTHONPATH. Extra arguments go to benchmarks/device_check.py. Results are also written
# as JSON to $OUT/device_check.json when $OUT is set (else /tmp/device_check.json).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import torch' 2>/dev/null; then
    PY=.venv/bin/python
  else
    PY=python3
  fi
fi
# One interpreter start for both checks (importing torch takes seconds).
state="$("$PY" - <<'PYEOF' 2>/dev/null || echo missing-torch
import importlib.util
import numpy, torch  # noqa: F401
print("installed" if importlib.util.find_spec("sage_ros") else "checkout")
PYEOF
)"
if [[ "$state" == missing-torch ]]; then
  echo "device_check: $PY has no PyTorch/numpy; set PYTHON=/path/to/python" >&2
  exit 1
fi
if [[ "$state" == checkout ]]; then
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader || true
fi
JSON="${OUT:-/tmp}/device_check.json"
# The whole check is meant to finish in under 3 minutes; the Python side also skips optional
# variants (torch.compile) once its own budget is nearly spent.
exec timeout "${DEVICE_CHECK_TIMEOUT_S:-240}" "$PY" benchmarks/device_check.py --json "$JSON" "$@"
