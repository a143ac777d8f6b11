"""Find the CUDA GPU without ever crashing a process that has no driver.

Only the CUDA driver library is touched, through ctypes: if ``libcuda`` cannot be
loaded there is no driver and the answer is None; otherwise ``cuInit`` and a few
queries return error codes rather than failing. No CUDA runtime, TensorRT or
cuda-python is imported here. Note that ``cuInit`` initialises the driver in this
process: a program that forks CUDA workers should detect in the workers.
Set ``LIVERLESION_NO_GPU=1`` to skip detection altogether (answer: no GPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..engine_tags import format_compute_capability, sm_tag

_CUDA_SUCCESS = 0
_ATTR_INTEGRATED = 18
_ATTR_CC_MAJOR = 75
_ATTR_CC_MINOR = 76


@dataclass(frozen=True)
class GpuInfo:
    """One CUDA device as the driver reports it."""

    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory: int
    integrated: bool = False
    driver_version: int | None = None

    @property
    def sm(self) -> str:
        return sm_tag(self.compute_capability)

    @property
    def cc_text(self) -> str:
        return format_compute_capability(self.compute_capability)

    def describe(self) -> str:
        kind = "integrated" if self.integrated else "discrete"
        return f"CUDA:{self.index} {self.name} ({self.sm}, {self.total_memory / 2**30:.1f} GiB, {kind})"


def _driver_names() -> list[str]:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    return names + ([found] if found and found not in names else [])


def _load_driver() -> Any | None:
    """The CUDA driver library, or None when this machine has none."""
    for name in _driver_names():
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def _query(lib: Any, index: int) -> GpuInfo | None:
    """Ask an opened driver about device ``index``; None on any error code."""
    if lib.cuInit(ctypes.c_uint(0)) != _CUDA_SUCCESS:
        return None  # e.g. CUDA_ERROR_NO_DEVICE, or a driver/kernel-module mismatch
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != _CUDA_SUCCESS or not 0 <= index < count.value:
        return None
    device = ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(device), ctypes.c_int(index)) != _CUDA_SUCCESS:
        return None
    name = ctypes.create_string_buffer(256)
    if lib.cuDeviceGetName(name, ctypes.c_int(len(name)), device) != _CUDA_SUCCESS:
        return None
    values = {}
    for attribute in (_ATTR_CC_MAJOR, _ATTR_CC_MINOR, _ATTR_INTEGRATED):
        value = ctypes.c_int(0)
        if lib.cuDeviceGetAttribute(ctypes.byref(value), ctypes.c_int(attribute), device) != _CUDA_SUCCESS:
            return None
        values[attribute] = value.value
    memory = ctypes.c_size_t(0)
    total = getattr(lib, "cuDeviceTotalMem_v2", None) or lib.cuDeviceTotalMem
    if total(ctypes.byref(memory), device) != _CUDA_SUCCESS:
        memory = ctypes.c_size_t(0)
    version = ctypes.c_int(0)
    driver = version.value if lib.cuDriverGetVersion(ctypes.byref(version)) == _CUDA_SUCCESS else None
    return GpuInfo(index=index, name=name.value.decode(errors="replace").strip(),
                   compute_capability=(values[_ATTR_CC_MAJOR], values[_ATTR_CC_MINOR]),
                   total_memory=int(memory.value), integrated=bool(values[_ATTR_INTEGRATED]),
                   driver_version=driver)


@functools.cache
def _probe(index: int) -> GpuInfo | None:
    lib = _load_driver()
    if lib is None:
        return None
    try:
        return _query(lib, index)
    except (AttributeError, OSError, ValueError):  # an unexpected libcuda without these symbols
        return None


def detect_gpu(index: int = 0, *, refresh: bool = False) -> GpuInfo | None:
    """The CUDA device ``index`` (name, compute capability, memory), or None when absent."""
    if os.environ.get("LIVERLESION_NO_GPU", "").strip() not in ("", "0"):
        return None
    if refresh:
        _probe.cache_clear()
    return _probe(index)
