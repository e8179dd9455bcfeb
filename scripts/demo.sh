#!/usr/bin/env bash
# Set up (first run only) and run the end-to-end demo on embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec searchsvc demo "$@"
