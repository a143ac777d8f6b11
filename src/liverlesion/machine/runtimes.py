"""Which inference runtimes are installed here, and their versions, importing as little as possible.

TensorRT is looked for without importing it; onnxruntime and OpenVINO are imported
(their providers and CPU capabilities are only known that way); torch never is.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Any


def installed(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def tensorrt_installed() -> bool:
    """Whether NVIDIA's TensorRT Python package is importable, without importing it.

    A ``tensorrt`` folder holding only type stubs (tensorrt-stubs) imports as an empty
    namespace package, so the module must have a real ``__init__.py``.
    """
    loaded = sys.modules.get("tensorrt")
    if loaded is not None:
        return isinstance(getattr(loaded, "__version__", None), str)
    try:
        spec = importlib.util.find_spec("tensorrt")
    except (ImportError, ValueError):
        return False
    return bool(spec and spec.origin and spec.origin.endswith(("__init__.py", ".so", ".pyd")))


def tensorrt_version() -> str | None:
    """The installed TensorRT's version, None when absent or when ``tensorrt`` is not NVIDIA's package."""
    if not tensorrt_installed():
        return None
    try:
        module = importlib.import_module("tensorrt")
    except ImportError:
        return None
    version = getattr(module, "__version__", None)
    return version if isinstance(version, str) and hasattr(module, "Builder") else None


def onnxruntime_facts() -> dict[str, Any]:
    """onnxruntime's version and execution providers; empty when it is absent."""
    if not installed("onnxruntime"):
        return {}
    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    return {"onnxruntime_version": str(ort.__version__), "ort_providers": tuple(ort.get_available_providers())}


def openvino_facts() -> dict[str, Any]:
    """OpenVINO's version and CPU capabilities, or why it cannot run (a broken install, a failed plugin)."""
    if not installed("openvino"):
        return {}
    try:
        import openvino as ov
    except ImportError as exc:  # found but not importable: a broken install, not a missing one
        return {"openvino_error": f"import openvino failed: {exc}"}
    try:
        capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own untyped errors
        return {"openvino_version": str(ov.get_version()), "openvino_error": str(exc)}
    return {"openvino_version": str(ov.get_version()),
            "openvino_capabilities": tuple(str(c) for c in capabilities)}


def torch_installed() -> bool:
    """Whether the torch reference can run: torch and safetensors both found (neither imported)."""
    return installed("torch") and installed("safetensors")
