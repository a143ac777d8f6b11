"""The machine a benchmark ran on: CPU, GPU and driver, runtime versions, load.

Versions come from installed package metadata, so torch, TensorRT and OpenVINO are not
imported just to be named. The GPU is found through ``engines.gpu`` (the CUDA driver via
ctypes), which answers None instead of failing where there is no driver.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

from .. import __version__
from ..backends.host import cpu_count

#: Runtimes whose versions the header names, each with the distributions that may provide it.
RUNTIMES: dict[str, tuple[str, ...]] = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-lean"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "torch": ("torch",),
    "openvino": ("openvino",),
    "numpy": ("numpy",),
}


def installed_version(distributions: tuple[str, ...]) -> str | None:
    """The version of the first of ``distributions`` that is installed, or None."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def cpu_model() -> str:
    """The CPU's marketing name (/proc/cpuinfo on Linux, sysctl on macOS), else the platform's word."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    if sys.platform == "darwin":
        import subprocess

        try:
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return platform.processor() or platform.machine() or "unknown"


#: CPU features that decide which kernels (FP32 / INT8 / BF16 / FP16) runtimes pick.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8",
             "amx_bf16", "amx_fp16", "asimd", "asimddp")


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS` this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found |= set(value.split())
    return [flag for flag in CPU_FLAGS if flag in found]


def gpu_info() -> dict[str, Any] | None:
    """The first CUDA GPU (name, compute capability, memory, CUDA driver and NVIDIA driver), or None."""
    from ..engines.gpu import detect_gpu
    from .nvml import driver_version

    gpu = detect_gpu()
    if gpu is None:
        return None
    cuda = gpu.driver_version
    return {"name": gpu.name, "compute_capability": gpu.cc_text,
            "memory_gib": round(gpu.total_memory / 2**30, 1), "integrated": gpu.integrated,
            "cuda_driver": None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
            "driver": driver_version()}


def machine_info() -> dict[str, Any]:
    """Everything the benchmark header shows, as JSON-able data."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(), "cpus_usable": cpu_count(),
        "load_average": load, "os": platform.platform(), "python": platform.python_version(),
        "gpu": gpu_info(),
        "versions": {"liverlesion": __version__,
                     **{name: installed_version(dists) for name, dists in RUNTIMES.items()}},
    }


def format_header(info: dict[str, Any]) -> str:
    """A few lines naming the machine, for the top of the table."""
    gpu = info.get("gpu")
    gpu_text = "none" if not gpu else (
        f"{gpu['name']} (compute {gpu['compute_capability']}, {gpu['memory_gib']} GiB, "
        f"driver {gpu.get('driver') or '?'}, CUDA {gpu.get('cuda_driver') or '?'})")
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["versions"].items())
    load = info.get("load_average")
    load_text = "" if not load else f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    return "\n".join([
        f"CPU: {info['cpu']} ({' '.join(info.get('cpu_flags') or []) or 'no listed SIMD flags'}), "
        f"{info['cpus_usable']} of {info['cpu_count']} logical CPUs usable{load_text}",
        f"GPU: {gpu_text}",
        f"{info['os']}, Python {info['python']}; {versions}",
    ])
