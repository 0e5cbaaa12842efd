#!/usr/bin/env bash
# Set up, then run lint, the type check and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check src tests benchmarks
mypy src
exec python -m pytest -n 2 -q "$@"
