"""The machine a benchmark ran on: CPU, GPU and driver, runtime versions, load; on a Jetson its power state.

Versions come from ``machine.runtimes`` (installed package metadata), so torch, TensorRT and
OpenVINO are not imported just to be named. The GPU is found through ``machine.gpu`` (the CUDA driver via
ctypes), which answers None instead of failing where there is no driver. On a Jetson the runner
adds :mod:`.jetson`'s section (power mode, jetson_clocks, power and temperatures during the run).
"""

from __future__ import annotations

import os
import platform
from typing import Any

from .. import __version__
from ..machine.host import cpu_count, cpu_flags, cpu_model
from ..machine.runtimes import runtime_versions
from .jetson import format_lines as format_jetson


def gpu_info() -> dict[str, Any] | None:
    """The first CUDA GPU (name, compute capability, memory, CUDA driver and NVIDIA driver), or None."""
    from ..machine.gpu import detect_gpu
    from .nvml import driver_version

    gpu = detect_gpu()
    if gpu is None:
        return None
    cuda = gpu.driver_version
    return {"name": gpu.name, "compute_capability": gpu.cc_text,
            "memory_gib": round(gpu.total_memory / 2**30, 1), "integrated": gpu.integrated,
            "cuda_driver": None if cuda is None else f"{cuda // 1000}.{cuda % 1000 // 10}",
            "driver": driver_version()}


def machine_info(jetson: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the benchmark header shows, as JSON-able data; ``jetson`` (see :mod:`.jetson`) only on one."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    info = {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(), "cpus_usable": cpu_count(),
        "load_average": load, "os": platform.platform(), "python": platform.python_version(),
        "gpu": gpu_info(),
        "versions": {"liverlesion": __version__,
                     **runtime_versions()},
    }
    if jetson is not None:  # off a Jetson the result has no such key at all
        info["jetson"] = jetson
    return info


def format_header(info: dict[str, Any]) -> str:
    """A few lines naming the machine, for the top of the table."""
    gpu = info.get("gpu")
    gpu_text = "none" if not gpu else (
        f"{gpu['name']} (compute {gpu['compute_capability']}, {gpu['memory_gib']} GiB, "
        f"driver {gpu.get('driver') or '?'}, CUDA {gpu.get('cuda_driver') or '?'})")
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in info["versions"].items())
    load = info.get("load_average")
    load_text = "" if not load else f"; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    jetson = format_jetson(info["jetson"]) if info.get("jetson") else []
    return "\n".join([
        f"CPU: {info['cpu']} ({' '.join(info.get('cpu_flags') or []) or 'no listed SIMD flags'}), "
        f"{info['cpus_usable']} of {info['cpu_count']} logical CPUs usable{load_text}",
        f"GPU: {gpu_text}",
        *jetson,
        f"{info['os']}, Python {info['python']}; {versions}",
    ])
