"""Which inference runtimes are installed here, and their versions, importing as little as possible.

TensorRT is looked for without importing it; onnxruntime and OpenVINO are imported
(their providers and CPU capabilities are only known that way); torch never is.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from typing import Any

from ..engine_tags import TrtVersion

#: Runtimes a report names, each with the distributions that may provide it (read from metadata, no import).
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-lean"),
    "tensorrt-rtx": ("tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx"),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml"),
    "torch": ("torch",),
    "openvino": ("openvino",),
    "numpy": ("numpy",),
}


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
    if not isinstance(version, str) or not hasattr(module, "Builder"):
        return None
    return str(TrtVersion.parse(version))  # "10.3" -> "10.3.0", as engine records name it


def tensorrt_rtx_installed() -> bool:
    """Whether NVIDIA's TensorRT-RTX Python package (module ``tensorrt_rtx``) can be found, without importing it."""
    if "tensorrt_rtx" in sys.modules:
        return isinstance(getattr(sys.modules["tensorrt_rtx"], "__version__", None), str)
    return installed("tensorrt_rtx")


def tensorrt_rtx_version() -> str | None:
    """The installed TensorRT-RTX's version (e.g. "1.7.1.116"), None when absent or not NVIDIA's package.

    Its own numbering (1.x), never compared with TensorRT's (8.5 .. 11.x).
    """
    if not tensorrt_rtx_installed():
        return None
    try:
        module = importlib.import_module("tensorrt_rtx")
    except (ImportError, OSError):  # a wheel whose shared libraries are missing
        return None
    version = getattr(module, "__version__", None)
    if not isinstance(version, str) or not hasattr(module, "Builder"):
        return None
    return str(TrtVersion.parse(version))


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


#: What the torch reference needs (the train extra's runtime part).
TORCH_MODULES = ("torch", "safetensors")


def torch_installed() -> bool:
    """Whether the torch reference can run: torch and safetensors both found (neither imported)."""
    return torch_missing() is None


def torch_missing() -> str | None:
    """The first module of :data:`TORCH_MODULES` that is not found, None when all are (none imported)."""
    return next((module for module in TORCH_MODULES if not installed(module)), None)


def installed_version(distributions: tuple[str, ...]) -> str | None:
    """The version of the first of ``distributions`` that is installed (package metadata, no import), or None."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def runtime_versions() -> dict[str, str | None]:
    """Each runtime of :data:`DISTRIBUTIONS` and its installed version (None: absent), importing none."""
    return {name: installed_version(dists) for name, dists in DISTRIBUTIONS.items()}
