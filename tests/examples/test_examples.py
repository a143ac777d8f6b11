"""The example scripts start (their --help runs without a GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_example_script_runs_its_help():
    script = ROOT / "examples" / "jetson_build_verify_bench.py"
    result = subprocess.run([sys.executable, str(script), "--help"],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Jetson" in result.stdout
