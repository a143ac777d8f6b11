"""``liverlesion inspect``: a readable summary with re-verified checksums, without torch."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from liverlesion.cli import main

pytestmark = pytest.mark.slow


def test_inspect_summarises_a_real_package_without_importing_torch(export_world):
    code = ("import sys; from liverlesion.cli import main; rc = main(['inspect', sys.argv[1]]); "
            "assert 'torch' not in sys.modules and 'onnx' not in sys.modules, 'imported torch or onnx'; "
            "sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code, str(export_world.packages["ynet"])], check=False,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for expected in ("liverlesion-ynet", "model_fp32.onnx", "model_fp16.onnx", "model_int8_qdq_s8s8.onnx",
                     "calibration/slices.npy", "sha256 and size verified", "int8", "class_probabilities"):
        assert expected in out, expected
    # each accuracy record shows the verdict the manifest holds, whatever this CPU's tiny training reached
    import json

    manifest = json.loads((export_world.packages["ynet"] / "manifest.json").read_text())
    lines = out.splitlines()
    for name, record in manifest["accuracy"].items():
        line = next(line for line in lines if line.split()[:1] == [name])
        if "meets_target" not in record:
            assert "target" not in line.lower(), line
        else:
            verdict = "target met" if record["meets_target"] else "TARGET MISSED"
            assert line.rstrip().endswith(verdict), line


def test_inspect_refuses_a_tampered_package(export_world, tmp_path, capsys):
    root = shutil.copytree(export_world.packages["joint"], tmp_path / "pkg")
    data = bytearray((root / "model_int8_qdq_s8s8.onnx").read_bytes())
    data[-10] ^= 0xFF
    (root / "model_int8_qdq_s8s8.onnx").write_bytes(bytes(data))
    assert main(["inspect", str(root)]) == 2
    assert "model_int8_qdq_s8s8.onnx" in capsys.readouterr().err


def test_inspect_json_is_the_manifest(export_world, capsys):
    import json

    assert main(["inspect", str(export_world.packages["joint"]), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    stored = json.loads((export_world.packages["joint"] / "manifest.json").read_text())
    assert shown["files"] == stored["files"] and shown["accuracy"] == stored["accuracy"]
