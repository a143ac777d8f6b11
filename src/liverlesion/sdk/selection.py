"""Which backend and precision ``LesionAnalyzer.load`` uses, and why: plain data in, a decision out.

``backends.registry.probe_machine`` gathers the facts (GPU, TensorRT, onnxruntime and its execution
providers, OpenVINO and the CPU's capabilities, torch) without loading a model;
:func:`select` turns a manifest and those facts into an ordered list of :class:`Choice`
to try, with a reason for every backend and precision considered. Each backend's own
rules (which precisions and files it runs here, in what order) are its module's
``candidates`` function; ``select`` only checks the request, orders backends and
explains. It is pure, so it is tested with hand-made machines.

Rules of ``backend="auto"`` (fastest first): TensorRT where the package has an engine
built for this GPU and TensorRT version; else onnxruntime on a GPU (TensorRT or CUDA
execution provider, where installed and a GPU is present); else the fastest CPU backend
installed (the rows' ``cpu_rank``): OpenVINO, then onnxruntime's CPU provider; else torch (the reference).
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
from ..backends.registry import BACKEND_NAMES, BACKENDS, ROWS, backend_module, row
from ..errors import BackendError, MissingDependencyError
from ..machine.probe import Machine
from ..package import Manifest
from ..package.accuracy import EXECUTION_PRECISIONS, precision_files

__all__ = ["PRECISIONS", "Choice", "Machine", "Selection", "select"]


def select(manifest: Manifest, machine: Machine, backend: str = "auto", precision: str = "auto", *,
           provider: str | None = None, build_engine: bool = False, pinned: bool = False,
           trust_device_builds: bool = False) -> Selection:
    """The choices to try, in order, for a request; raises when an explicit request cannot be met.

    ``pinned``: the package was loaded against an expected digest; then what devices built is
    used only with ``trust_device_builds`` (see the module docstring).
    """
    if backend != "auto":
        row(backend)  # refuses an unknown name
    if precision != "auto" and precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; accepted: auto, {', '.join(PRECISIONS)}")
    names = BACKEND_NAMES if backend == "auto" else (backend,)
    if provider is not None:  # a provider is a variant: only backends with variants take one
        takers = tuple(r.name for r in ROWS if r.variants)
        if backend not in ("auto", *takers):
            raise BackendError(f"provider={provider!r} applies to the {' or '.join(takers)} backend, not "
                               f"{backend!r}")
        names = takers if backend == "auto" else names
    if precision != "auto":
        _check_precision(manifest, precision, names, backend)
    request = Request(None if precision == "auto" else (precision,), provider, build_engine, pinned,
                      trust_device_builds)
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


def _check_precision(manifest: Manifest, precision: str, names: tuple[str, ...], backend: str) -> None:
    """Refuse an explicit precision no considered backend has a file for (before any backend is asked)."""
    files = precision_files(manifest)
    # some backends run a precision as an execution precision of another file's graph (OpenVINO's bf16)
    through = {BACKENDS[n].execution_precisions[precision] for n in names
               if precision in BACKENDS[n].execution_precisions}
    if precision in EXECUTION_PRECISIONS and not through:
        runners = [r for r in ROWS if precision in r.execution_precisions]
        graph = EXECUTION_PRECISIONS[precision].upper()
        raise BackendError(f"{precision} runs on {' or '.join(r.display for r in runners)} only (the {graph} "
                           f"graph at {precision} execution precision); ask for "
                           f"{' or '.join(f'backend={r.name!r}' for r in runners)} or 'auto', not {backend!r}")
    if precision not in files and not through & files:
        have = ", ".join(sorted(files))
        raise BackendError(f"the package has no {precision} model; it has: {have} (see liverlesion quantize "
                           "for int8)")


def _auto_order(found: dict[str, Candidates]) -> tuple[str, ...]:
    """GPU-only backends first; then the others as registered where one of them runs on a GPU here, else
    by their rows' ``reference`` and ``cpu_rank`` (the fastest CPU backend first, the reference last)."""
    gpu_only = tuple(name for name in found if BACKENDS[name].gpu)
    rest = tuple(name for name in found if not BACKENDS[name].gpu)
    if any(found[name].gpu for name in rest):
        return gpu_only + rest
    return gpu_only + tuple(sorted(rest, key=lambda name: (BACKENDS[name].reference, BACKENDS[name].cpu_rank)))


def _refusal(backend: str, names: tuple[str, ...], reasons: dict[str, str]) -> Exception:
    """The error for a request nothing can serve: a missing runtime names its extra."""
    text = "; ".join(f"{name}: {reasons[name].removeprefix('not used: ')}" for name in names)
    if backend == "auto":
        suggested = next(r for r in ROWS if r.suggested)
        return BackendError(f"no backend can run this package here ({text}); install one: {suggested.install}")
    if "not installed" in reasons[backend]:
        return MissingDependencyError(f"the {backend} backend cannot be used: {text}")
    return BACKENDS[backend].refusal(f"the {backend} backend cannot be used: {text}")
