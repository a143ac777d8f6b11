"""The SDK's host-side stages on their own: preprocessing, postprocessing, DICOM decoding.

Preprocessing is ``load_slice`` (validation, float32 copy) plus ``on_model_grid``
(resampling); postprocessing is the ``Postprocessor`` (label map back to the input grid,
lesion components and measurements); DICOM decoding is ``load_slice(path)`` on pydicom's
own test files (uncompressed CT_small.dcm and JPEG 2000 693_J2KI.dcm): reading, decoding,
rescaling to HU.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from liverlesion.bench.configs import BenchConfig
from liverlesion.bench.data import BenchData
from liverlesion.bench.runner import Opened
from liverlesion.package import ModelPackage
from liverlesion.sdk import load_slice
from liverlesion.sdk.postprocess import Postprocessor

#: pydicom test files, and the plugin module each needs to decode.
DICOM_FILES = {"CT_small.dcm": None, "693_J2KI.dcm": "openjpeg"}


def test_preprocess(benchmark: Any, package: ModelPackage, bench_data: BenchData) -> None:
    """One 512 x 512 HU array to the model grid: load_slice + on_model_grid."""
    grid = package.manifest.grid
    item = bench_data.slices[0]
    benchmark.group = "stages"
    on_grid = benchmark(lambda: load_slice(item.hu, spacing=item.spacing_mm).on_model_grid(grid))
    assert on_grid.shape == grid.size and on_grid.dtype == np.float32
    # Resampling interpolates: it never leaves the input's HU range.
    low, high = float(item.hu.min()) - 1e-3, float(item.hu.max()) + 1e-3
    assert low <= float(on_grid.min()) <= float(on_grid.max()) <= high


def test_postprocess(benchmark: Any, package: ModelPackage, runtime: Callable[[BenchConfig], Opened],
                     bench_data: BenchData) -> None:
    """The fused graph's outputs for one slice to a Prediction on the slice's own grid."""
    opened = runtime(BenchConfig("onnxruntime", "fp32"))
    item = bench_data.slices[0]
    slice_ = load_slice(item.hu, spacing=item.spacing_mm)
    outputs = opened.backend.infer(slice_.on_model_grid(package.manifest.grid)[None, None])
    post = Postprocessor.from_manifest(package.manifest)
    benchmark.group = "stages"
    prediction = benchmark(lambda: post(outputs, slice_))
    assert prediction.label_map.shape == item.hu.shape
    assert int(prediction.lesion_components.max()) == len(prediction.lesions)
    assert sum(lesion.pixels for lesion in prediction.lesions) == int((prediction.label_map >= 2).sum())


@pytest.mark.parametrize("name", list(DICOM_FILES))
def test_dicom_decode(benchmark: Any, name: str) -> None:
    """Read, decode and rescale one DICOM file to HU."""
    pydicom_data = pytest.importorskip("pydicom.data")
    plugin = DICOM_FILES[name]
    if plugin is not None and importlib.util.find_spec(plugin) is None:
        pytest.skip(f"{name} needs the {plugin} decoder: pip install 'liverlesion[dicom]'")
    path = pydicom_data.get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed here")
    benchmark.group = "dicom decode"
    slice_ = benchmark(lambda: load_slice(path))
    rows, cols = slice_.shape
    assert rows >= 64 and cols >= 64 and slice_.hu.dtype == np.float32
    assert all(0.1 < s < 5.0 for s in slice_.spacing_mm)
    # CT in HU: air (or padding, down to -4096) below zero, tissue and bone above, nothing beyond 12-bit CT.
    assert -4096.0 <= float(slice_.hu.min()) < -500.0 < 0.0 < float(slice_.hu.max()) < 4096.0
