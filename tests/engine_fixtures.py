"""Shared by the engine tests: a small fake model package (manifest + dummy files) on a non-square grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from liverlesion.grid import ModelGrid
from liverlesion.labels import LESION_CLASSES, TARGET_LABELS
from liverlesion.machine.cuda_memory import CudaMemory
from liverlesion.package import SCHEMA_NAME, SCHEMA_VERSION, write_manifest
from liverlesion.package.store import file_record
from liverlesion.preprocessing import Preprocessing
from sdk_fixtures import threshold_graph

GRID = (48, 64)  # rows x cols: a swap of H and W shows in every shape


def calibration_slices(count: int = 10, grid: tuple[int, int] = GRID) -> np.ndarray:
    """Distinct, recognisable slices: slice i is filled with HU value 10 * i (plus a ramp)."""
    ramp = np.linspace(-100.0, 100.0, grid[0] * grid[1], dtype=np.float32).reshape(grid)
    return np.stack([np.float32(10 * i) + ramp for i in range(count)])[:, None].astype(np.float32)


def make_engine_package(root: Path, *, fp16: bool = True, int8: bool = True, calibration: bool = True,
                        slices: int = 10, arch: str = "joint") -> Path:
    """A package with the files the engine planner looks for; ONNX files are dummies."""
    root.mkdir(parents=True, exist_ok=True)
    files = []
    stub = {"grid": ModelGrid(GRID, (2.5, 2.5))}  # stand-in graphs carrying the manifest's binding
    threshold_graph(root / "model_fp32.onnx", **stub, doc="fp32")
    files.append(file_record(root, "model_fp32.onnx", "onnx", "fp32", opset=17, form="float"))
    if fp16:
        threshold_graph(root / "model_fp16.onnx", **stub, doc="fp16")
        files.append(file_record(root, "model_fp16.onnx", "onnx", "fp16", opset=17, form="float",
                                 io_dtype="float32"))
    if int8:
        threshold_graph(root / "model_int8_qdq_s8s8.onnx", **stub, doc="int8")
        files.append(file_record(root, "model_int8_qdq_s8s8.onnx", "onnx", "int8", opset=17, form="qdq-s8s8"))
    if calibration:
        (root / "calibration").mkdir(exist_ok=True)
        np.save(root / "calibration" / "slices.npy", calibration_slices(slices), allow_pickle=False)
        files.append(file_record(root, "calibration/slices.npy", "calibration"))
    write_manifest(root, {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION,
        "model": {"name": "test", "version": "0", "arch": arch, "config": {}},
        "input": {"name": "hu", "units": "HU", "dtype": "float32", "shape": ["N", 1, *GRID],
                  "grid": ModelGrid(GRID, (2.5, 2.5)).to_dict()},
        "outputs": {"labels": {"dtype": "int32", "shape": ["N", *GRID]},
                    "probabilities": {"dtype": "float32", "shape": ["N", 5, *GRID]}},
        "preprocessing": Preprocessing().to_dict(),
        "labels": list(TARGET_LABELS), "lesion_classes": list(LESION_CLASSES),
        "files": [f.to_dict() for f in files],
        "engines": [],
    })
    return root


class HostOnlyMemory(CudaMemory):
    """A CudaMemory whose 'device' is a dict of numpy buffers: enough to follow the calibrator's copies."""

    name = "fake"

    def __init__(self):
        super().__init__(0)
        self.device_buffers: dict[int, np.ndarray] = {}
        self.synchronized = 0

    def device_alloc(self, nbytes):
        ptr = 0x1000 * (len(self.device_buffers) + 1)
        self.device_buffers[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def pinned_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def create_stream(self):
        return 7

    def copy_htod_async(self, dst, src, stream):
        self.device_buffers[dst][: src.nbytes] = np.ascontiguousarray(src).reshape(-1).view(np.uint8)

    def copy_dtoh_async(self, dst, src, stream):
        dst.reshape(-1).view(np.uint8)[:] = self.device_buffers[src][: dst.nbytes]

    def synchronize(self, stream):
        self.synchronized += 1

    def free_all(self):
        self.device_buffers.clear()
