#!/usr/bin/env bash
# Create ./.venv (once) and install searchsvc with its test extras into it.
# torch goes in first, pinned to the CPU build this machine kind ships, so that nothing
# later pulls a multi-gigabyte CUDA build; the project's range (<2.15) keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[dev]"
echo "searchsvc installed in $(pwd)/.venv" >&2
