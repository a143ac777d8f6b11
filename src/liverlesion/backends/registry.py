"""Which backends exist: one row each (where the code lives, the extra to install, what it takes).

The CLI, the SDK (selection and loader) and bench read these rows; nothing else lists
backends. Rows are strings, as pydicom registers its pixel decoders, so a missing runtime
costs nothing until it is asked for. Adding a backend: one module (a :class:`Backend`
subclass and a ``candidates`` function, see ``backends.choice``) and one row here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from ..errors import BackendError, install_hint
from ..machine.probe import Machine, probe_facts


@dataclass(frozen=True)
class BackendRow:
    """One backend: its module and class, the extra that installs its runtime, and what it takes."""

    name: str
    module: str
    cls: str
    extra: str
    #: Whether its constructor takes ``threads`` (CPU threads).
    threads: bool = False
    #: Named variants it runs, by the short name users give (onnxruntime: its execution providers).
    variants: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Whether it runs on a GPU (the CLI and bench say so; auto tries GPU backends first).
    gpu: bool = False

    @property
    def install(self) -> str:
        """The command that installs this backend's runtime."""
        return install_hint(self.extra)


#: Backends in the order ``backend="auto"`` considers them on a GPU machine (``select`` reorders on CPU).
ROWS: tuple[BackendRow, ...] = (
    BackendRow("tensorrt", "liverlesion.backends.tensorrt", "TensorRTBackend", "tensorrt", gpu=True),
    BackendRow("onnxruntime", "liverlesion.backends.onnxruntime", "OnnxRuntimeBackend", "onnxruntime",
               threads=True, variants=MappingProxyType({"cpu": "CPUExecutionProvider",
                                                        "cuda": "CUDAExecutionProvider",
                                                        "tensorrt": "TensorrtExecutionProvider"})),
    BackendRow("openvino", "liverlesion.backends.openvino", "OpenVinoBackend", "openvino", threads=True),
    BackendRow("torch", "liverlesion.backends.torch", "TorchBackend", "train", threads=True),
)
BACKENDS: dict[str, BackendRow] = {row.name: row for row in ROWS}
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)


def row(name: str) -> BackendRow:
    """The row registered as ``name``; BackendError naming the accepted ones otherwise."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; accepted: {', '.join(BACKENDS)} or 'auto'")
    return BACKENDS[name]


def backend_module(name: str) -> ModuleType:
    """The module of backend ``name`` (imported now; its runtime is imported only when a model loads)."""
    entry = row(name)
    try:
        return importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        if exc.name == entry.module:
            raise BackendError(f"backend {name!r} is not part of this liverlesion build") from None
        raise


def backend_class(name: str) -> type:
    """The backend class registered as ``name`` (its module imported now)."""
    cls: type = getattr(backend_module(name), row(name).cls)
    return cls


def available_backends() -> dict[str, tuple[bool, str]]:
    """For each registered backend: (usable here, why or why not)."""
    report = {}
    for name in BACKENDS:
        try:
            report[name] = backend_class(name).availability()  # type: ignore[attr-defined]
        except BackendError as exc:
            report[name] = (False, str(exc))
    return report


def probe_machine(backends: tuple[str, ...] = BACKEND_NAMES) -> Machine:
    """This machine's facts for ``backends``, with TensorRT's own verdict on whether it can run here."""
    facts: dict[str, Any] = probe_facts(backends)
    if "tensorrt" in backends:
        try:
            facts["tensorrt_backend"] = backend_class("tensorrt").availability()  # type: ignore[attr-defined]
        except BackendError as exc:
            facts["tensorrt_backend"] = (False, str(exc))
    return Machine(**facts)
