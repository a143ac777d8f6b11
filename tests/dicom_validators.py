"""The DICOM validators every SEG and SR the SDK writes must pass: dciodvfy (dicom3tools) and dsrdump (dcmtk).

Skipped where a tool is absent, except under CI (CI set), where absence fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def _tool(name: str, package: str) -> str:
    """Path of a validator; skipped where absent, except under CI, where absence fails."""
    path = shutil.which(name)
    if path is None:
        reason = (f"{name} (Debian package {package}) is not installed; ./dev.sh test installs it with "
                  "apt-get where it can")
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set and {reason}")
        pytest.skip(reason)
    return path


def dciodvfy(path: Path) -> None:
    """David Clunie's IOD checker: no 'Error' line (its warnings are printed, not failed on)."""
    run = subprocess.run([_tool("dciodvfy", "dicom3tools"), str(path)], capture_output=True, text=True,
                         timeout=120)
    output = (run.stdout + run.stderr).strip()
    bad = [line for line in output.splitlines() if line.lstrip().startswith("Error")]
    assert not bad, f"dciodvfy {path.name}:\n{output}"


def dsrdump(path: Path) -> None:
    """dcmtk's SR reader (relationship constraints and content items checked): no warning, error or failure."""
    run = subprocess.run([_tool("dsrdump", "dcmtk"), str(path)], capture_output=True, text=True, timeout=120)
    bad = [line for line in run.stderr.splitlines() if line[:2] in ("W:", "E:", "F:")]
    assert run.returncode == 0 and not bad, f"dsrdump {path.name} (exit {run.returncode}):\n{run.stderr}"
