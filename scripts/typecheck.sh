#!/usr/bin/env bash
# Static check of the TensorRT code against NVIDIA's published Python API: mypy with
# tensorrt-stubs (TensorRT 10.13), since TensorRT itself cannot be installed in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ ! -f "$SITE/tensorrt/__init__.pyi" ] || [ ! -f "$SITE/tensorrt_bindings/tensorrt.pyi" ]; then
  echo "tensorrt-stubs is not installed: ./dev.sh setup (or $VENV/bin/pip install --no-deps tensorrt-stubs)" >&2
  exit 1
fi
# The stubs install as plain tensorrt/*.pyi without a py.typed marker (mypy ignores those in
# site-packages) and, being generated, hold a few lines that are not valid Python (parameters
# named 'in', a required parameter after defaulted ones). Check against a repaired copy.
STUBS=$(mktemp -d)
trap 'rm -rf "$STUBS"' EXIT
cp -r "$SITE/tensorrt" "$SITE/tensorrt_bindings" "$STUBS/"
"$VENV/bin/python" - "$STUBS" <<'PY'
import pathlib, re, sys

def fix_def(line: str) -> str:
    match = re.match(r"^(\s*def \w+\()(.*)(\)\s*->.*:\s*)$", line)
    if not match:
        return line
    head, params, tail = match.groups()
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    seen_default, fixed = False, []
    for part in parts:
        name = part.strip()
        if name.startswith("in:"):
            part = part.replace("in:", "in_:", 1)
        if "=" in name:
            seen_default = True
        elif seen_default and name and not name.startswith("*"):
            part += " = ..."
        fixed.append(part)
    return head + ",".join(fixed) + tail

for path in pathlib.Path(sys.argv[1]).rglob("*.pyi"):
    text = path.read_text()
    path.write_text("\n".join(fix_def(line) for line in text.split("\n")))
PY
echo "== mypy (TensorRT engines and backend, against tensorrt-stubs; serving)"
# follow-imports=silent: report the files named here; the modules they import are read, not judged.
# A fresh cache each run: the copied stubs are new files every time anyway.
MYPYPATH="$STUBS" "$VENV/bin/python" -m mypy --config-file setup.cfg --follow-imports=silent --cache-dir "$STUBS/.cache" \
  src/liverlesion/engines src/liverlesion/backends/tensorrt.py src/liverlesion/backends/tensorrt_rtx.py \
  src/liverlesion/backends/rtx_runtime_cache.py src/liverlesion/machine src/liverlesion/serving
