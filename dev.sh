#!/usr/bin/env bash
# One entry point for a fresh clone: sets up .venv (pinned, CPU torch) and runs a job.
#   ./dev.sh demo [--quick] [--out DIR]   phantoms -> train -> export -> quantize -> predict -> bench
#   ./dev.sh test [pytest args]           the test suite, as CI runs it
#   ./dev.sh setup                        only the set-up
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
VENV=.venv
EXTRAS="train,onnxruntime,openvino,dicom,nifti,viz,dev,remote"

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
  # TensorRT-RTX alone (not its extra's cuda-python, which only a GPU machine uses): NVIDIA's ONNX parser
  # and builder run on a CPU, so the tests and the export gate build every graph with it.
  "$VENV/bin/python" -m pip install -q -c constraints/dev.txt tensorrt-rtx-cu12
  echo "$want" > "$stamp"
}

# The serving environment: `liverlesion serve` runs PyTriton's bundled tritonserver, which pins numpy<2, so it
# gets .venv-serve (constraints/serve.txt) while .venv keeps numpy 2 and the client (the remote extra). The
# serving tests start the server from it (LIVERLESION_SERVE_PYTHON; docs/serving.md).
serve_env() {
  local venv=.venv-serve stamp=.venv-serve/.liverlesion-setup want
  want=$(cat setup.cfg constraints/serve.txt | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  echo "== setting up $venv for liverlesion serve (pinned by constraints/serve.txt)"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -c constraints/serve.txt -e ".[onnxruntime,openvino,serve]"
  echo "$want" > "$stamp"
}

# The DICOM validators the tests run on every SEG and SR they write (tests/sdk/test_trust_outputs.py):
# David Clunie's dciodvfy (dicom3tools) and dcmtk's dsrdump, installed with apt-get where this
# machine allows it (root, or sudo without a password); otherwise said, and those tests skip
# (under CI=true they fail).
validators() {
  if command -v dciodvfy >/dev/null 2>&1 && command -v dsrdump >/dev/null 2>&1; then return 0; fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo="-"; fi
  fi
  if [ "$sudo" = "-" ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "== dciodvfy / dsrdump missing and not installable here (needs apt-get as root): install the" \
         "Debian packages dicom3tools and dcmtk; until then their tests skip (and fail under CI=true)"
    return 0
  fi
  echo "== installing the DICOM validators dciodvfy and dsrdump (apt-get install dicom3tools dcmtk)"
  local log
  log=$(mktemp)
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           dicom3tools dcmtk; } >"$log" 2>&1; then
    tail -n 5 "$log"
    echo "== apt-get could not install dicom3tools / dcmtk: their tests skip (and fail under CI=true)"
  fi
  rm -f "$log"
}

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) setup; serve_env ;;
  demo)  setup; exec "$VENV/bin/liverlesion" demo --out "${DEMO_OUT:-demo-out}" "$@" ;;
  test)  setup; serve_env; validators; exec bash scripts/test.sh "$@" ;;
  *) sed -n '2,6p' "$0"; exit 2 ;;
esac
