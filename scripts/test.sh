#!/usr/bin/env bash
# Lint, format check and the test suite, in the modern runtime that scripts/setup.sh installs.
# Extra arguments go to pytest, for example: bash scripts/test.sh -k loaders
set -euo pipefail

cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "Error: .venv/ is missing. Run: bash scripts/setup.sh --no-run" >&2
  exit 1
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest "$@"
