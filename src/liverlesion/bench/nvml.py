"""NVIDIA driver version and device memory in use, from NVML through ctypes (no package needed).

Every function answers ``None`` where NVML is absent or fails: machines without an NVIDIA
driver, and Jetsons, whose integrated GPU shares host memory and which ship no NVML.
NVML needs no CUDA context, so reading it never disturbs the backend being measured.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

_SUCCESS = 0


class _Memory(ctypes.Structure):
    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


@functools.cache
def _library() -> Any | None:
    """NVML, initialised once; None when it cannot be loaded or initialised."""
    names = ["nvml.dll"] if sys.platform == "win32" else ["libnvidia-ml.so.1", "libnvidia-ml.so"]
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        try:
            init = getattr(lib, "nvmlInit_v2", None) or lib.nvmlInit
            return lib if init() == _SUCCESS else None
        except (AttributeError, OSError):
            return None
    return None


def driver_version() -> str | None:
    """The NVIDIA driver version (e.g. '550.54.15'), or None."""
    lib = _library()
    if lib is None:
        return None
    buffer = ctypes.create_string_buffer(96)
    try:
        if lib.nvmlSystemGetDriverVersion(buffer, ctypes.c_uint(len(buffer))) != _SUCCESS:
            return None
    except (AttributeError, OSError):
        return None
    return buffer.value.decode(errors="replace") or None


def device_memory_used(index: int = 0) -> int | None:
    """Bytes of device memory in use on GPU ``index`` (all processes), or None."""
    lib = _library()
    if lib is None:
        return None
    handle = ctypes.c_void_p()
    memory = _Memory()
    try:
        get = getattr(lib, "nvmlDeviceGetHandleByIndex_v2", None) or lib.nvmlDeviceGetHandleByIndex
        if get(ctypes.c_uint(index), ctypes.byref(handle)) != _SUCCESS:
            return None
        if lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != _SUCCESS:
            return None
    except (AttributeError, OSError):
        return None
    return int(memory.used)
