"""The facts selection decides on, as plain data: :class:`Machine`, filled by :func:`probe_facts`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import install_hint
from . import gpu as gpu_module
from . import runtimes


@dataclass(frozen=True)
class Machine:
    """What selection needs to know about this machine (hand-made in tests, probed otherwise)."""

    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    #: Installed TensorRT version, None when absent.
    tensorrt_version: str | None = None
    #: ``TensorRTBackend.availability()``: (usable, why).
    tensorrt_backend: tuple[bool, str] = (False, f"TensorRT is not installed: {install_hint('tensorrt')}")
    #: Installed TensorRT-RTX version (its own 1.x numbering), None when absent.
    tensorrt_rtx_version: str | None = None
    #: ``TensorRTRtxBackend.availability()``: (usable, why).
    tensorrt_rtx_backend: tuple[bool, str] = (False, f"TensorRT-RTX is not installed: {install_hint('tensorrt-rtx')}")
    #: Installed onnxruntime version, None when absent, and its execution providers.
    onnxruntime_version: str | None = None
    ort_providers: tuple[str, ...] = ()
    #: Installed OpenVINO version, None when absent, and its CPU plugin's OPTIMIZATION_CAPABILITIES.
    openvino_version: str | None = None
    openvino_capabilities: tuple[str, ...] = ()
    #: Why an installed OpenVINO cannot run (its CPU plugin failed to start), None when it can.
    openvino_error: str | None = None
    torch: bool = False

    @property
    def has_gpu(self) -> bool:
        return self.compute_capability is not None

    def to_dict(self) -> dict[str, Any]:
        return {"gpu": self.gpu_name, "compute_capability": self.compute_capability,
                "tensorrt": self.tensorrt_version, "tensorrt_backend": list(self.tensorrt_backend),
                "tensorrt_rtx": self.tensorrt_rtx_version, "tensorrt_rtx_backend": list(self.tensorrt_rtx_backend),
                "onnxruntime": self.onnxruntime_version, "ort_providers": list(self.ort_providers),
                "openvino": self.openvino_version, "openvino_capabilities": list(self.openvino_capabilities),
                "openvino_error": self.openvino_error,
                "torch": self.torch}


def probe_facts(backends: tuple[str, ...]) -> dict[str, Any]:
    """Machine facts for the given backends (imports onnxruntime / OpenVINO, never torch, loads nothing).

    Whether a backend can run is the backend's own rule: ``backends.registry.probe_machine``
    adds it to these facts.
    """
    facts: dict[str, Any] = {}
    if {"tensorrt", "tensorrt-rtx", "onnxruntime"} & set(backends):
        gpu = gpu_module.detect_gpu()  # looked up when called: tests stand a fake GPU in
        if gpu is not None:
            facts.update(gpu_name=gpu.name, compute_capability=tuple(gpu.compute_capability))
        facts["tensorrt_version"] = runtimes.tensorrt_version()
    if "tensorrt-rtx" in backends:
        facts["tensorrt_rtx_version"] = runtimes.tensorrt_rtx_version()
    if "onnxruntime" in backends:
        facts.update(runtimes.onnxruntime_facts())
    if "openvino" in backends:
        facts.update(runtimes.openvino_facts())
    if "torch" in backends:
        facts["torch"] = runtimes.torch_installed()
    return facts
