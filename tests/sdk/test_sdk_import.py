"""The runtime imports and runs where torch cannot be imported."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import sys
sys.modules["torch"] = None  # any 'import torch' now raises ImportError
import numpy as np
import liverlesion.sdk as sdk
from liverlesion.grid import ModelGrid
from liverlesion.sdk.outputs import dicom, overlay  # noqa: F401

grid = ModelGrid(size=(16, 16), spacing_mm=(2.0, 2.0))
slice_ = sdk.load_slice(np.full((20, 20), -1000, np.int16), spacing=(1.5, 1.5))
labels = np.zeros((1, 16, 16), np.int32)
labels[0, 4:12, 4:12] = 1
labels[0, 6:8, 6:8] = 4
probs = np.full((1, 5, 16, 16), 0.2, np.float32)
prediction = sdk.Postprocessor(grid)({"labels": labels, "probabilities": probs}, slice_)
assert prediction.slice_class == "metastasis", prediction
loaded = sorted(m for m in sys.modules if m.startswith(("liverlesion.training", "liverlesion.model", "torch")))
assert loaded == ["torch"] and sys.modules["torch"] is None, loaded
print("ok")
"""


def test_the_sdk_imports_and_runs_without_torch():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
