"""The example scripts start (their --help runs without a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_script_runs_its_help():
    script = ROOT / "examples" / "jetson_build_verify_bench.py"
    result = subprocess.run([sys.executable, str(script), "--help"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Jetson" in result.stdout


def test_gpu_check_reports_rather_than_crashes_without_a_gpu(tmp_path):
    script = ROOT / "examples" / "gpu_check.py"
    out = tmp_path / "report.json"
    env = {**os.environ, "LIVERLESION_NO_GPU": "1"}
    result = subprocess.run([sys.executable, str(script), "--out", str(out)], check=False, capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["gpu"] == {"ran": False, "why": "no CUDA GPU found"} and set(report) == {"gpu"}
