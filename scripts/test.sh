#!/usr/bin/env bash
# Set up, then run lint, the type check and the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate

DIRS=(src tests benchmarks)
ROOT=$(pwd -P)

# Read file paths (absolute, or relative to the repo root) on stdin; print
# "N files (src a, tests b, benchmarks c)", so the log shows what each checker covered.
count_files() {
  awk -v root="$ROOT/" -v dirs="${DIRS[*]}" '
    BEGIN { n = split(dirs, d, " ") }
    NF == 0 { next }
    {
      path = $0
      if (index(path, root) == 1) path = substr(path, length(root) + 1)
      sub(/^\.\//, "", path)
      split(path, part, "/")
      total++
      per[part[1]]++
    }
    END {
      out = ""
      for (i = 1; i <= n; i++) out = out (i > 1 ? ", " : "") d[i] " " (per[d[i]] + 0)
      printf "%d files (%s)\n", total, out
    }'
}

# ruff's own list of the files it checks; for mypy, the .py/.pyi files it is given
echo "ruff: checking $(ruff check --show-files "${DIRS[@]}" | count_files)"
ruff check "${DIRS[@]}"
ruff format --check --quiet "${DIRS[@]}"
echo "mypy: checking $(find "${DIRS[@]}" -name __pycache__ -prune -o \( -name '*.py' -o -name '*.pyi' \) -print | count_files)"
mypy "${DIRS[@]}"
exec python -m pytest -n 2 -q "$@"
