"""Calibration batching over the package's slices, cache helpers, and the calibrator's callbacks."""

from __future__ import annotations

import types

import numpy as np
import pytest

from engine_fixtures import GRID, HostOnlyMemory, calibration_slices
from liverlesion.engines.int8_calibrator import (
    CalibrationBatches,
    make_entropy_calibrator,
    read_cache,
    write_cache,
)
from liverlesion.errors import EngineError


def slice_ids(batch: np.ndarray) -> list[int]:
    """Recover which slices a batch holds: slice i has mean HU 10 * i (the ramp averages to 0)."""
    return [round(float(b.mean()) / 10) for b in batch]


def test_full_batches_in_file_order():
    batches = CalibrationBatches(calibration_slices(12), 4)
    assert len(batches) == 3
    assert [slice_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert all(b.shape == (4, 1, *GRID) and b.dtype == np.float32 and b.flags.c_contiguous for b in batches)
    assert batches.batch_shape == (4, 1, *GRID) and batches.batch_nbytes == 4 * GRID[0] * GRID[1] * 4


def test_last_partial_batch_is_padded_from_the_start():
    batches = CalibrationBatches(calibration_slices(10), 4)
    assert len(batches) == 3
    assert [slice_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]
    assert sorted({i for b in batches for i in slice_ids(b)}) == list(range(10))  # every slice seen


def test_last_partial_batch_can_be_dropped():
    batches = CalibrationBatches(calibration_slices(10), 4, partial="drop")
    assert [slice_ids(b) for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_fewer_slices_than_a_batch():
    assert [slice_ids(b) for b in CalibrationBatches(calibration_slices(3), 8)] == [[0, 1, 2, 0, 1, 2, 0, 1]]
    with pytest.raises(EngineError, match="no full batch"):
        CalibrationBatches(calibration_slices(3), 8, partial="drop")


def test_order_is_deterministic():
    batches = CalibrationBatches(calibration_slices(9), 2)
    first = [b.copy() for b in batches]
    second = list(batches)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(IndexError):
        batches.indices(len(batches))


@pytest.mark.parametrize("slices, message", [
    (calibration_slices(4).astype(np.float64), "float32"),
    (calibration_slices(4)[:, 0], "N x 1 x H x W"),
    (np.concatenate([calibration_slices(2)] * 2, axis=1), "N x 1 x H x W"),
    (calibration_slices(4)[:0], "N >= 1"),
    (np.where(np.arange(GRID[1]) == 3, np.nan, calibration_slices(2)).astype(np.float32), "NaN"),
])
def test_bad_slices_are_refused(slices, message):
    with pytest.raises(EngineError, match=message):
        CalibrationBatches(slices, 2)


@pytest.mark.parametrize("size, partial", [(0, "pad"), (2, "wrap")])
def test_bad_batch_options_are_refused(size, partial):
    with pytest.raises(EngineError):
        CalibrationBatches(calibration_slices(4), size, partial=partial)


def test_from_file_checks_the_grid_and_refuses_pickles(tmp_path):
    path = tmp_path / "slices.npy"
    np.save(path, calibration_slices(5), allow_pickle=False)
    assert len(CalibrationBatches.from_file(path, 2, grid_size=GRID)) == 3
    with pytest.raises(EngineError, match="model grid"):
        CalibrationBatches.from_file(path, 2, grid_size=(GRID[1], GRID[0]))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EngineError, match=r"objects.npy"):
        CalibrationBatches.from_file(tmp_path / "objects.npy", 2)
    with pytest.raises(EngineError, match=r"missing.npy"):
        CalibrationBatches.from_file(tmp_path / "missing.npy", 2)


def test_cache_helpers(tmp_path):
    path = tmp_path / "engines" / "joint_sm87_trt8.5.2.calib"
    assert read_cache(path) is None
    write_cache(path, b"TRT-8502-EntropyCalibration2\nhu: 3c010a14\n")
    assert read_cache(path) == b"TRT-8502-EntropyCalibration2\nhu: 3c010a14\n"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    path.write_bytes(b"")
    assert read_cache(path) is None  # empty: calibrate again


class FakeEntropyCalibrator2:
    """Stands in for trt.IInt8EntropyCalibrator2: remembers that its __init__ ran."""

    def __init__(self):
        self.base_initialised = True


def test_entropy_calibrator_feeds_every_batch_then_stops(tmp_path):
    trt = types.SimpleNamespace(IInt8EntropyCalibrator2=FakeEntropyCalibrator2)
    memory = HostOnlyMemory()
    batches = CalibrationBatches(calibration_slices(5), 2)
    messages: list[str] = []
    calibrator = make_entropy_calibrator(trt, batches, tmp_path / "c.calib", memory, input_name="hu",
                                         log=messages.append)
    assert isinstance(calibrator, FakeEntropyCalibrator2) and calibrator.base_initialised
    assert calibrator.get_batch_size() == 1  # explicit batch: the calibration profile sets it
    seen = []
    while (pointers := calibrator.get_batch(["hu"])) is not None:
        (ptr,) = pointers
        seen.append(slice_ids(memory.device_buffers[ptr].view(np.float32).reshape(batches.batch_shape)))
    assert seen == [[0, 1], [2, 3], [4, 0]]
    assert memory.synchronized == 3 and any("3/3" in m for m in messages)
    assert calibrator.get_batch(["other"]) is None


def test_entropy_calibrator_cache_read_and_write(tmp_path):
    trt = types.SimpleNamespace(IInt8EntropyCalibrator2=FakeEntropyCalibrator2)
    cache = tmp_path / "engines" / "x.calib"
    batches = CalibrationBatches(calibration_slices(2), 2)
    fresh = make_entropy_calibrator(trt, batches, cache, HostOnlyMemory(), input_name="hu")
    assert fresh.read_calibration_cache() is None
    fresh.write_calibration_cache(memoryview(b"TRT-8502-EntropyCalibration2\n"))
    assert cache.read_bytes() == b"TRT-8502-EntropyCalibration2\n"
    again = make_entropy_calibrator(trt, batches, cache, HostOnlyMemory(), input_name="hu")
    assert again.read_calibration_cache() == b"TRT-8502-EntropyCalibration2\n"
    stale = make_entropy_calibrator(trt, batches, cache, HostOnlyMemory(), input_name="hu", reuse_cache=False)
    assert stale.read_calibration_cache() is None
