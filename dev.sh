#!/usr/bin/env bash
# One entry point for a fresh clone: sets up .venv (pinned, CPU torch) and runs a job.
#   ./dev.sh demo [--quick] [--out DIR]   phantoms -> train -> export -> quantize -> predict -> bench
#   ./dev.sh test [pytest args]           the test suite, as CI runs it
#   ./dev.sh setup                        only the set-up
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
EXTRAS="train,onnxruntime,openvino,dicom,nifti,viz,dev"

setup() {
  local stamp="$VENV/.liverlesion-setup"
  local want
  want=$(cat setup.cfg constraints/dev.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  echo "== setting up $VENV (pinned by constraints/dev.txt)"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints/dev.txt -e ".[$EXTRAS]"
  # TensorRT's type stubs declare a dependency on tensorrt itself, which cannot be
  # installed without NVIDIA's binaries: install the stubs alone, for mypy.
  "$VENV/bin/python" -m pip install -q --no-deps -c constraints/dev.txt tensorrt-stubs
  echo "$want" > "$stamp"
}

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) setup ;;
  demo)  setup; exec "$VENV/bin/liverlesion" demo --out "${DEMO_OUT:-demo-out}" "$@" ;;
  test)  setup; exec bash scripts/test.sh "$@" ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
