#!/usr/bin/env bash
# The test suite as CI runs it (expects ./dev.sh setup to have run).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
echo "== ruff"
"$VENV/bin/ruff" check src tests examples benchmarks
echo "== static check of the TensorRT code against tensorrt-stubs"
bash scripts/typecheck.sh
echo "== benchmarks, smoke mode (each benchmark once, as a test)"
"$VENV/bin/python" -m pytest -q -p no:cacheprovider benchmarks/ --benchmark-disable
echo "== tests"
"$VENV/bin/python" -m pytest -q "$@"
