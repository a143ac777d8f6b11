"""Which backends exist: one row each (where the code lives, the extra to install, what it takes).

The CLI, the SDK (selection and loader) and bench read these rows; nothing else lists
backends. Rows are strings, as pydicom registers its pixel decoders, so a missing runtime
costs nothing until it is asked for. The rows also carry what ``select`` orders and
explains by (CPU rank, the reference, execution precisions, the refusal's type), so adding
a backend is one module (a :class:`Backend` subclass and a ``candidates`` function, see
``backends.choice``) and one row here. This module imports nothing heavy (no numpy).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, ModuleType
from typing import Any

from ..errors import BackendError, EngineError, LiverLesionError, install_hint
from ..machine.probe import Machine, probe_facts


@dataclass(frozen=True)
class BackendRow:
    """One backend: its module and class, the extra that installs its runtime, and what it takes."""

    name: str
    module: str
    cls: str
    extra: str
    #: The runtime's name in messages ("OpenVINO"); the row's name when empty.
    title: str = ""
    #: Whether its constructor takes ``threads`` (CPU threads).
    threads: bool = False
    #: Named variants it runs, by the short name users give (onnxruntime: its execution providers);
    #: a backend with variants is the one a ``provider`` request goes to.
    variants: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Precisions of the package's files it runs (each from the file of that precision).
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    #: Precisions it runs as an execution precision of another file's graph (OpenVINO: bf16 of the FP32 graph).
    execution_precisions: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: Whether it runs only on a GPU (auto tries such backends first).
    gpu: bool = False
    #: Where auto puts it among the CPU backends on a machine where none runs on a GPU (lower first).
    cpu_rank: int = 10
    #: The FP32 reference: auto tries it after every other backend.
    reference: bool = False
    #: The runtime suggested when no backend can run a package (one row).
    suggested: bool = False
    #: The error an explicit request for this backend raises when it cannot be served.
    refusal: type[LiverLesionError] = BackendError

    @property
    def install(self) -> str:
        """The command that installs this backend's runtime."""
        return install_hint(self.extra)

    def runs(self, precision: str) -> bool:
        """Whether it can run ``precision`` at all (from a file of its own or as an execution precision)."""
        return precision in self.precisions or precision in self.execution_precisions

    @property
    def display(self) -> str:
        """The runtime's name in messages."""
        return self.title or self.name


#: Backends in the order ``backend="auto"`` considers them on a GPU machine (``select`` reorders on CPU:
#: by ``reference``, then ``cpu_rank``, the fastest CPU backend first, docs/benchmarks.md).
ROWS: tuple[BackendRow, ...] = (
    BackendRow("tensorrt", "liverlesion.backends.tensorrt", "TensorRTBackend", "tensorrt", title="TensorRT",
               gpu=True, refusal=EngineError),
    # After TensorRT: on an RTX GPU, auto takes a matching TensorRT-RTX engine when no TensorRT one runs.
    BackendRow("tensorrt-rtx", "liverlesion.backends.tensorrt_rtx", "TensorRTRtxBackend", "tensorrt-rtx",
               title="TensorRT-RTX", gpu=True, refusal=EngineError),
    BackendRow("onnxruntime", "liverlesion.backends.onnxruntime", "OnnxRuntimeBackend", "onnxruntime",
               threads=True, variants=MappingProxyType({"cpu": "CPUExecutionProvider",
                                                        "cuda": "CUDAExecutionProvider",
                                                        "tensorrt": "TensorrtExecutionProvider"}),
               cpu_rank=1, suggested=True),
    BackendRow("openvino", "liverlesion.backends.openvino", "OpenVinoBackend", "openvino", title="OpenVINO",
               threads=True, execution_precisions=MappingProxyType({"bf16": "fp32", "fp16": "fp32"}), cpu_rank=0),
    BackendRow("torch", "liverlesion.backends.torch", "TorchBackend", "train", title="PyTorch", threads=True,
               precisions=("fp32",), reference=True),
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
    for name in ("tensorrt", "tensorrt-rtx"):  # whether they can run is the backends' own rule
        if name in backends:
            key = f"{name.replace('-', '_')}_backend"
            try:
                facts[key] = backend_class(name).availability()  # type: ignore[attr-defined]
            except BackendError as exc:
                facts[key] = (False, str(exc))
    return Machine(**facts)
