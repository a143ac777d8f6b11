#!/usr/bin/env bash
# The test suite as CI runs it (expects ./dev.sh setup to have run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
echo "== pytest"
"$VENV/bin/python" -m pytest -q "$@"
