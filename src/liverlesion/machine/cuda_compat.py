"""Whether the NVIDIA driver is new enough for the CUDA runtime a TensorRT wheel was built with.

A TensorRT wheel built for CUDA 12 on a driver that only knows CUDA 11 fails inside
TensorRT (cudaError 35, "CUDA driver version is insufficient for CUDA runtime version"),
and the calls after that can crash the process, while the driver query in
``machine.gpu`` still succeeds. The check here needs no CUDA call: the driver's CUDA
version (``cuDriverGetVersion``, e.g. 12040 for 12.4) against the CUDA major in the
wheel's distribution name (``tensorrt-cu12``, ``tensorrt-rtx-cu12`` ...). Within one
major, CUDA's minor-version compatibility lets an older driver run a newer runtime.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re

#: 'tensorrt-cu12', 'tensorrt-rtx-cu12', and their '-bindings' / '-libs' parts: (family, CUDA major).
_CUDA_SUFFIX = re.compile(r"^(tensorrt(?:-rtx)?)-cu(\d+)(?:-|$)")


def _normalise(distribution: str) -> str:
    """A distribution name as pip compares them: 'tensorrt_rtx_cu12' -> 'tensorrt-rtx-cu12'."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def cuda_major_needed(distribution: str | None) -> int | None:
    """The CUDA major a TensorRT distribution was built for (``tensorrt-cu12`` -> 12), None when unknown.

    A plain ``tensorrt`` (a meta package, or an old wheel), ``tensorrt-lean`` or JetPack's
    python3-libnvinfer (no CUDA in the name; JetPack ships driver and CUDA together) is unknown.
    """
    if not distribution:
        return None
    match = _CUDA_SUFFIX.match(_normalise(distribution))
    return int(match.group(2)) if match else None


def format_cuda_version(version: int) -> str:
    """cuDriverGetVersion's number as CUDA writes it: 12040 -> '12.4'."""
    return f"{version // 1000}.{version % 1000 // 10}"


def cuda_runtime_refusal(driver_version: int | None, distribution: str | None) -> str | None:
    """Why a TensorRT from ``distribution`` cannot start CUDA with this driver, or None when it can (or is unknown).

    ``driver_version``: ``GpuInfo.driver_version`` (cuDriverGetVersion, e.g. 12040); None: unknown, no check.
    """
    needed = cuda_major_needed(distribution)
    if needed is None or driver_version is None or driver_version <= 0:
        return None
    if driver_version // 1000 >= needed:
        return None
    name = _normalise(distribution or "")
    family = name[: name.index(f"-cu{needed}")]
    return (f"the NVIDIA driver supports CUDA {format_cuda_version(driver_version)}, and the installed "
            f"{family}-cu{needed} needs CUDA {needed} (TensorRT would fail with cudaError 35, 'CUDA driver "
            f"version is insufficient for CUDA runtime version'): update the NVIDIA driver or install the "
            f"{family}-cu{driver_version // 1000} wheel matching it")


@functools.cache  # reading every distribution's metadata takes 0.2-0.4 s, and installs do not change mid-run
def runtime_distribution(*modules: str) -> str | None:
    """The installed distribution that provides one of Python ``modules`` and names a CUDA major, else None.

    None also when distributions with different CUDA majors provide them (which one's files
    won is unknown then) or when the modules come from no distribution (JetPack's packages).
    """
    try:
        found = importlib.metadata.packages_distributions()
    except Exception:  # noqa: BLE001 - broken metadata must not stop inference: no check then
        return None
    providers = [p for module in modules for p in found.get(module, [])]
    known = sorted({_normalise(p) for p in providers if cuda_major_needed(p) is not None})
    majors = {cuda_major_needed(p) for p in known}
    return known[0] if len(majors) == 1 else None
