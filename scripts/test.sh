#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite: unit, API, and integration tests
# against SQLite and the PostgreSQL at 127.0.0.1:5432 (override: SEARCHSVC_TEST_POSTGRES).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest "$@"
