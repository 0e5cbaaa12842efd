#!/usr/bin/env bash
# Create (or reuse) .venv and install decent with its test tools.
# torch is installed first and pinned through constraints.txt: an unpinned torch would pull
# gigabytes of CUDA wheels. To keep your own torch build instead, install it into the venv
# first and run with DECENT_KEEP_TORCH=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ "${DECENT_KEEP_TORCH:-0}" != "1" ] && ! python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  python -m pip install -q -c constraints.txt "torch==2.13.0"
fi
if [ "${DECENT_KEEP_TORCH:-0}" = "1" ]; then
  python -m pip install -q -e ".[dev]"
else
  python -m pip install -q -c constraints.txt -e ".[dev]"
fi
