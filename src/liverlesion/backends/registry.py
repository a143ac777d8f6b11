"""Which backends exist, where their code lives, and which of them can run here."""

from __future__ import annotations

import importlib

from ..errors import BackendError

#: name -> (module, class). ``sdk.selection`` decides the order ``backend="auto"`` tries them in.
BACKENDS: dict[str, tuple[str, str]] = {
    "tensorrt": ("liverlesion.backends.tensorrt", "TensorRTBackend"),
    "onnxruntime": ("liverlesion.backends.onnxruntime", "OnnxRuntimeBackend"),
    "openvino": ("liverlesion.backends.openvino", "OpenVinoBackend"),
    "torch": ("liverlesion.backends.torch", "TorchBackend"),
}


def backend_class(name: str) -> type:
    """The backend class registered as ``name`` (its module imported now)."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; accepted: {', '.join(BACKENDS)} or 'auto'")
    module, cls = BACKENDS[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            raise BackendError(f"backend {name!r} is not part of this liverlesion build") from None
        raise


def available_backends() -> dict[str, tuple[bool, str]]:
    """For each registered backend: (usable here, why or why not)."""
    report = {}
    for name in BACKENDS:
        try:
            report[name] = backend_class(name).availability()
        except BackendError as exc:
            report[name] = (False, str(exc))
    return report
