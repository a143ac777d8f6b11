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
for tool in dciodvfy dsrdump; do  # the DICOM validators (./dev.sh test installs them)
  command -v "$tool" >/dev/null 2>&1 || echo "== $tool is not installed: the DICOM validation tests skip"
done
echo "== tests"
"$VENV/bin/python" -m pytest -q "$@"
