"""Real DICOM files shipped by pydicom and pydicom-data, found without downloading."""

from __future__ import annotations

import pytest
from pydicom.data import get_testdata_file


def real(name: str) -> str:
    """Path of a pydicom / pydicom-data file; skips the test where it is not installed."""
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not installed (pydicom-data, in the dev extra)")
    return str(path)
