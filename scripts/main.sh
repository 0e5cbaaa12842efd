#!/usr/bin/env bash
# Set up, then run the flagship experiment on the simulator with the local results store.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec decent flagship "$@"
