"""Which backend and precision ``LesionAnalyzer.load`` uses, and why: plain data in, a decision out.

:func:`probe_machine` gathers the facts (GPU, TensorRT, onnxruntime and its execution
providers, OpenVINO and the CPU's capabilities, torch) without loading a model;
:func:`select` turns a manifest and those facts into an ordered list of :class:`Choice`
to try, with a reason for every backend and precision considered. Each backend's own
rules (which precisions and files it runs here, in what order) are its module's
``candidates`` function; ``select`` only checks the request, orders backends and
explains. It is pure, so it is tested with hand-made machines.

Rules of ``backend="auto"`` (fastest first): TensorRT where the package has an engine
built for this GPU and TensorRT version; else onnxruntime on a GPU (TensorRT or CUDA
execution provider, where installed and a GPU is present); else the fastest CPU backend
installed: OpenVINO, then onnxruntime's CPU provider; else torch (the reference).
Rules of ``precision="auto"``: a reduced precision is chosen only where the package
records the accuracy of the very file (and execution precision) that would run, and
that record meets the export's target (FP16 within 0.1 Dice point of FP32; INT8 and
bf16 within 1 Dice and 1 accuracy point); FP32 always qualifies. Among those, each
backend takes its measured order (its module's ``*PRECISION_ORDER``, docs/benchmarks.md).
Under a pin (``pinned``: the load gave ``expect_digest``), what devices built and the digest
does not cover is not used unless ``trust_device_builds``: TensorRT engines are left out
(``build_engine`` still builds one from the pinned ONNX, calibrating anew), OpenVINO compiles
without its compiled-model cache and onnxruntime's TensorRT provider without its engine
cache. Trusted or not, a pinned load never takes an engine built from an ONNX file the pin
does not cover.
"""

from __future__ import annotations

from ..backends.choice import PRECISIONS, Candidates, Choice, Request, Selection
from ..backends.onnxruntime import (
    CPU_PRECISION_ORDER,
    CPU_PRECISION_ORDER_WITHOUT_CPU_INT8,
    CUDA_EP_PRECISION_ORDER,
)
from ..backends.registry import BACKEND_NAMES, BACKENDS, backend_module, probe_machine
from ..backends.tensorrt import PIN_REFUSAL
from ..backends.tensorrt import PRECISION_ORDER as GPU_PRECISION_ORDER
from ..errors import BackendError, EngineError, MissingDependencyError, install_hint
from ..machine.probe import Machine
from ..package import Manifest
from ..package.accuracy import accuracy_key, accuracy_verdict, precision_files

__all__ = ["BACKEND_NAMES", "CPU_PRECISION_ORDER", "CPU_PRECISION_ORDER_WITHOUT_CPU_INT8",
           "CUDA_EP_PRECISION_ORDER", "GPU_PRECISION_ORDER", "PIN_REFUSAL", "PRECISIONS", "Choice", "Machine",
           "Selection", "accuracy_key", "accuracy_verdict", "probe_machine", "select"]

#: On a machine where no CPU-and-GPU backend runs on a GPU: the fastest CPU backend first (docs/benchmarks.md).
CPU_ORDER = ("openvino", "onnxruntime", "torch")


def select(manifest: Manifest, machine: Machine, backend: str = "auto", precision: str = "auto", *,
           provider: str | None = None, build_engine: bool = False, pinned: bool = False,
           trust_device_builds: bool = False) -> Selection:
    """The choices to try, in order, for a request; raises when an explicit request cannot be met.

    ``pinned``: the package was loaded against an expected digest; then what devices built is
    used only with ``trust_device_builds`` (see the module docstring).
    """
    if backend != "auto" and backend not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {backend!r}; accepted: auto, {', '.join(BACKEND_NAMES)}")
    if precision != "auto" and precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; accepted: auto, {', '.join(PRECISIONS)}")
    if provider is not None and backend not in ("auto", "onnxruntime"):
        raise BackendError(f"provider={provider!r} applies to the onnxruntime backend, not {backend!r}")
    files = precision_files(manifest)
    # bf16 and fp16 are also OpenVINO execution precisions of the FP32 graph: no file of their own needed there
    openvino_runs = backend in ("auto", "openvino") and provider is None and precision in ("bf16", "fp16")
    if precision == "bf16" and not openvino_runs:
        raise BackendError(f"bf16 runs on OpenVINO only (the FP32 graph at bf16 execution precision); ask for "
                           f"backend='openvino' or 'auto', not {backend!r}")
    if precision != "auto" and precision not in files and not (openvino_runs and "fp32" in files):
        have = ", ".join(sorted(files))
        raise BackendError(f"the package has no {precision} model; it has: {have} (see liverlesion quantize "
                           "for int8)")
    request = Request(None if precision == "auto" else (precision,), provider, build_engine, pinned,
                      trust_device_builds)
    names = BACKEND_NAMES if backend == "auto" else (backend,)
    if provider is not None:
        names = ("onnxruntime",)
    found: dict[str, Candidates] = {name: backend_module(name).candidates(manifest, machine, request)
                                    for name in names}
    if backend == "auto" and provider is None:
        names = _auto_order(found)
    notes: dict[str, str] = {}
    reasons: dict[str, str] = {}
    candidates: list[Choice] = []
    for name in names:
        result = found[name]
        for p, why in result.notes.items():  # under "backend precision", and as the precision's first verdict
            notes[f"{name} {p}"] = why
            notes.setdefault(p, why)
        reasons[name] = ("usable: " if result.choices else "not used: ") + result.why
        candidates += result.choices
    requested = {"backend": backend, "precision": precision, "provider": provider,
                 "build_engine": build_engine, "pinned": pinned, "trust_device_builds": trust_device_builds}
    if not candidates:
        raise _refusal(backend, names, reasons)
    return Selection(requested, tuple(candidates), reasons, notes, machine)


def _auto_order(found: dict[str, Candidates]) -> tuple[str, ...]:
    """GPU-only backends first; then the others as registered where one of them runs on a GPU here, else
    the fastest CPU backend first (:data:`CPU_ORDER`)."""
    gpu_only = tuple(name for name in found if BACKENDS[name].gpu)
    rest = tuple(name for name in found if not BACKENDS[name].gpu)
    if any(found[name].gpu for name in rest):
        return gpu_only + rest
    return gpu_only + tuple(sorted(rest, key=lambda name: CPU_ORDER.index(name) if name in CPU_ORDER
                                   else len(CPU_ORDER)))


def _refusal(backend: str, names: tuple[str, ...], reasons: dict[str, str]) -> Exception:
    """The error for a request nothing can serve: a missing runtime names its extra."""
    text = "; ".join(f"{name}: {reasons[name].removeprefix('not used: ')}" for name in names)
    if backend == "auto":
        return BackendError(f"no backend can run this package here ({text}); install one: "
                            f"{install_hint('onnxruntime')}")
    why = reasons[backend]
    if "not installed" in why:
        return MissingDependencyError(f"the {backend} backend cannot be used: {text}")
    if backend == "tensorrt":
        return EngineError(f"the {backend} backend cannot be used: {text}")
    return BackendError(f"the {backend} backend cannot be used: {text}")
