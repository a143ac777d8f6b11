"""Which backend and precision ``LesionAnalyzer.load`` uses, and why: plain data in, a decision out.

:func:`probe_machine` gathers the facts (GPU, TensorRT, onnxruntime and its execution
providers, OpenVINO and the CPU's capabilities, torch) without loading a model;
:func:`select` turns a manifest and those facts into an ordered list of :class:`Choice`
to try, with a reason for every backend and precision considered. ``select`` is pure,
so it is tested with hand-made machines.

Rules of ``backend="auto"`` (fastest first): TensorRT where the package has an engine
built for this GPU and TensorRT version; else onnxruntime on a GPU (TensorRT or CUDA
execution provider, where installed and a GPU is present); else the fastest CPU backend
installed: OpenVINO, then onnxruntime's CPU provider; else torch (the reference).
Rules of ``precision="auto"``: a reduced precision is chosen only where the package
records the accuracy of the very file (and execution precision) that would run, and
that record meets the export's target (FP16 within 0.1 Dice point of FP32; INT8 and
bf16 within 1 Dice and 1 accuracy point); FP32 always qualifies. Among those, each
backend takes its measured order (``*_PRECISION_ORDER``, docs/benchmarks.md).
Under a pin (``pinned``: the load gave ``expect_digest``), what devices built and the digest
does not cover is not used unless ``trust_device_builds``: TensorRT engines are left out
(``build_engine`` still builds one from the pinned ONNX, calibrating anew), OpenVINO compiles
without its compiled-model cache and onnxruntime's TensorRT provider without its engine
cache. Trusted or not, a pinned load never takes an engine built from an ONNX file the pin
does not cover.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..backends.openvino import CPU_INT8_FORM, INFERENCE_PRECISION
from ..backends.openvino import FILE_PRECISION as OPENVINO_FILE_PRECISION
from ..errors import BackendError, EngineError, MissingDependencyError
from ..package import Manifest
from ..package.digest import pinned_onnx

BACKEND_NAMES = ("tensorrt", "onnxruntime", "openvino", "torch")
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
#: Precisions that are execution modes of the FP32 graph rather than files of their own.
EXECUTION_PRECISIONS = {"bf16": "fp32"}
#: Fastest first on a GPU (TensorRT, or onnxruntime's TensorRT execution provider).
GPU_PRECISION_ORDER = ("int8", "fp16", "fp32")
#: Fastest first on onnxruntime's CUDA provider: it runs Q/DQ INT8 graphs dequantized, slower than FP16.
CUDA_EP_PRECISION_ORDER = ("fp16", "fp32")
#: Fastest first on onnxruntime CPU, as measured (docs/benchmarks.md, x86 with AVX-512 VNNI, onnxruntime
#: 1.32): the CPU-form INT8 (u8s8) first; FP16 runs its convolutions through casts to float, so it only
#: ties FP32; the TensorRT-form INT8 (s8s8), used when the package has no CPU form, is slower than FP32.
CPU_PRECISION_ORDER = ("int8", "fp32", "fp16")
CPU_PRECISION_ORDER_WITHOUT_CPU_INT8 = ("fp32", "fp16", "int8")
#: Fastest first on OpenVINO CPU (docs/benchmarks.md); fp16 only where asked for.
OPENVINO_PRECISION_ORDER = ("int8", "bf16", "fp32")
#: onnxruntime execution providers by the short names users give.
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}
EXTRAS = {"tensorrt": "tensorrt", "onnxruntime": "onnxruntime", "openvino": "openvino", "torch": "train"}
#: Why a pinned load leaves a device-built engine or cache out.
PIN_REFUSAL = ("built on a device after export, outside the pinned digest: not used under expect_digest "
               "(trust_device_builds=True uses it)")


@dataclass(frozen=True)
class Machine:
    """What selection needs to know about this machine; :func:`probe_machine` fills it in."""

    gpu_name: str | None = None
    compute_capability: tuple[int, int] | None = None
    #: Installed TensorRT version, None when absent.
    tensorrt_version: str | None = None
    #: ``TensorRTBackend.availability()``: (usable, why).
    tensorrt_backend: tuple[bool, str] = (False, "TensorRT is not installed: pip install "
                                                 "'liverlesion[tensorrt]'")
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
                "onnxruntime": self.onnxruntime_version, "ort_providers": list(self.ort_providers),
                "openvino": self.openvino_version, "openvino_capabilities": list(self.openvino_capabilities),
                "openvino_error": self.openvino_error,
                "torch": self.torch}


@dataclass(frozen=True)
class Choice:
    """One way to run the package: a backend, a precision, its options, and why it was picked."""

    backend: str
    precision: str
    #: Keyword options for the backend (``provider`` for onnxruntime; ``engine`` or ``build`` for TensorRT).
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "CPU"
    reason: str = ""

    def label(self) -> str:
        extra = f" ({self.options['provider']} provider)" if "provider" in self.options else ""
        return f"{self.backend}{extra} {self.precision} on {self.device}"

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "precision": self.precision, "options": dict(self.options),
                "device": self.device, "reason": self.reason}


@dataclass(frozen=True)
class Selection:
    """The decision: choices to try in order, why each backend / precision was or was not considered.

    ``chosen`` is set by the analyzer once a choice loaded; ``failures`` lists the choices
    that were tried before it and why they failed to load.
    """

    requested: dict[str, Any]
    candidates: tuple[Choice, ...]
    backends: dict[str, str]
    precisions: dict[str, str]
    machine: Machine
    chosen: Choice | None = None
    failures: tuple[tuple[Choice, str], ...] = ()

    @property
    def backend(self) -> str | None:
        return None if self.chosen is None else self.chosen.backend

    @property
    def precision(self) -> str | None:
        return None if self.chosen is None else self.chosen.precision

    def loaded(self, chosen: Choice, failures: tuple[tuple[Choice, str], ...] = ()) -> Selection:
        return replace(self, chosen=chosen, failures=failures)

    def summary(self) -> str:
        """One line for logs: what runs, and why."""
        if self.chosen is None:
            return "nothing chosen yet: " + "; ".join(f"{k}: {v}" for k, v in self.backends.items())
        failed = "".join(f"; {c.label()} failed to load: {why}" for c, why in self.failures)
        return f"{self.chosen.label()}: {self.chosen.reason}{failed}"

    def to_dict(self) -> dict[str, Any]:
        return {"requested": dict(self.requested),
                "chosen": None if self.chosen is None else self.chosen.to_dict(),
                "backends": dict(self.backends), "precisions": dict(self.precisions),
                "candidates": [c.to_dict() for c in self.candidates],
                "failures": [{"choice": c.to_dict(), "error": why} for c, why in self.failures],
                "machine": self.machine.to_dict()}


# -- facts about the machine ------------------------------------------------------------------
def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def probe_machine(backends: tuple[str, ...] = BACKEND_NAMES) -> Machine:
    """Look at this machine for the given backends (imports onnxruntime, never torch, loads nothing)."""
    facts: dict[str, Any] = {}
    if "tensorrt" in backends or "onnxruntime" in backends:
        from ..engines.gpu import detect_gpu
        from ..engines.versions import installed_tensorrt_version

        gpu = detect_gpu()
        if gpu is not None:
            facts.update(gpu_name=gpu.name, compute_capability=tuple(gpu.compute_capability))
        version = installed_tensorrt_version()
        facts["tensorrt_version"] = None if version is None else str(version)
    if "tensorrt" in backends:
        from ..backends.registry import backend_class

        try:
            facts["tensorrt_backend"] = backend_class("tensorrt").availability()  # type: ignore[attr-defined]
        except BackendError as exc:
            facts["tensorrt_backend"] = (False, str(exc))
    if "onnxruntime" in backends and _installed("onnxruntime"):
        try:
            import onnxruntime as ort

            facts.update(onnxruntime_version=str(ort.__version__),
                         ort_providers=tuple(ort.get_available_providers()))
        except ImportError:
            pass
    if "openvino" in backends and _installed("openvino"):
        facts.update(_probe_openvino())
    if "torch" in backends:
        facts["torch"] = _installed("torch") and _installed("safetensors")
    return Machine(**facts)


def _probe_openvino() -> dict[str, Any]:
    """OpenVINO's version and CPU capabilities, or why it cannot run (a broken install, a failed plugin)."""
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


# -- precisions ---------------------------------------------------------------------------------
def precision_files(manifest: Manifest) -> set[str]:
    """Precisions the package has an ONNX model for."""
    return {f.precision for f in manifest.onnx_files() if f.precision}


def int8_file(manifest: Manifest, form: str) -> Any:
    """The package's INT8 ONNX record of ``form``, None when absent."""
    return manifest.find(role="onnx", precision="int8", form=form)


def accuracy_key(manifest: Manifest, precision: str, form: str | None = None, runtime: str | None = None) -> str:
    """The accuracy record of what would run.

    The INT8 file of ``form`` names its own record (a file that names none falls back to
    ``int8`` for the TensorRT form and to ``int8-<form>`` otherwise, never to another form's
    record). ``runtime``: INT8 measured on that runtime (``int8-u8s8@openvino``), for
    runtimes whose INT8 kernels differ from onnxruntime's, on which the export measures.
    """
    key = precision
    if precision == "int8" and form is not None:
        record = int8_file(manifest, form)
        default = "int8" if form == "qdq-s8s8" else f"int8-{form.removeprefix('qdq-')}"
        key = str(record.extra.get("accuracy") or default) if record is not None else default
    if precision == "int8" and runtime is not None:
        key = f"{key}@{runtime}"
    return key


def accuracy_verdict(manifest: Manifest, precision: str, key: str | None = None) -> tuple[bool, str]:
    """(may ``precision="auto"`` choose it, why), from the accuracy the export recorded under ``key``."""
    if precision == "fp32":
        return True, "FP32 is the reference precision"
    key = key or precision
    records = manifest.raw.get("accuracy") or {}
    record = records.get(key) if isinstance(records, Mapping) else None
    if not isinstance(record, Mapping):
        return False, (f"the package records no {precision.upper()} accuracy, so auto does not trade "
                       f"accuracy it cannot vouch for (ask for precision='{precision}' to use it anyway)")
    dice = record.get("lesion_dice")
    measured = f"lesion Dice {dice:.4f}" if isinstance(dice, (int, float)) else "accuracy"
    if "meets_target" in record:
        if record["meets_target"]:
            return True, f"recorded {measured} meets the export target against FP32"
        misses = "; ".join(str(m) for m in record.get("target_misses") or []) or "see the manifest"
        return False, f"recorded {precision.upper()} accuracy misses the export target ({misses})"
    limits, fp32 = record.get("target_max_loss"), records.get("fp32")
    if isinstance(limits, Mapping) and isinstance(fp32, Mapping):
        numbers = (int, float)
        lost = [metric for metric, limit in limits.items()
                if isinstance(record.get(metric), numbers) and isinstance(fp32.get(metric), numbers)
                and float(fp32[metric]) - float(record[metric]) > float(limit) + 1e-12]
        if lost:
            return False, (f"recorded {precision.upper()} accuracy loses more than the target on "
                           f"{', '.join(lost)}")
        return True, f"recorded {measured} is within the target loss against FP32"
    return False, f"the package records {precision.upper()} accuracy but no target verdict for it"


def _auto_precisions(manifest: Manifest, order: tuple[str, ...], have: set[str],
                     notes: dict[str, str], int8_form: str | None = None, runtime: str | None = None) -> list[str]:
    """Precisions of ``order`` that the package has and whose recorded accuracy qualifies.

    ``int8_form`` and ``runtime``: the INT8 file this backend would run, and where, whose
    own record is consulted (:func:`accuracy_key`). ``notes`` gets this backend's verdicts.
    """
    chosen = []
    for precision in order:
        if EXECUTION_PRECISIONS.get(precision, precision) not in have:
            notes.setdefault(precision, f"the package has no {precision.upper()} model")
            continue
        ok, why = accuracy_verdict(manifest, precision, accuracy_key(manifest, precision, int8_form, runtime))
        notes.setdefault(precision, why)
        if ok:
            chosen.append(precision)
    return chosen


def _merge_notes(notes: dict[str, str], backend: str, mine: dict[str, str]) -> None:
    """Record one backend's precision verdicts: under "backend precision", and as the precision's first."""
    for precision, why in mine.items():
        notes[f"{backend} {precision}"] = why
        notes.setdefault(precision, why)


# -- backends -----------------------------------------------------------------------------------
def _engines(manifest: Manifest, pinned: bool, trusted: bool) -> tuple[list[Any], list[tuple[Any, str]]]:
    """The engine records a load may use, and those it may not with why (the pin rule of the module doc)."""
    from ..engines.records import engine_records

    records = engine_records(manifest)
    if not pinned:
        return records, []
    if not trusted:
        return [], [(r, PIN_REFUSAL) for r in records]
    covered = pinned_onnx(manifest)
    foreign = [(r, "built from an ONNX file the pinned package does not hold (its plan's onnx_sha256)")
               for r in records if r.plan.get("onnx_sha256") not in covered]
    return [r for r in records if r.plan.get("onnx_sha256") in covered], foreign


def _tensorrt(manifest: Manifest, machine: Machine, precisions: list[str] | None, build: bool,
              notes: dict[str, str], pinned: bool = False, trusted: bool = False) -> tuple[list[Choice], str]:
    ok, why = machine.tensorrt_backend
    if not ok:
        return [], why
    from ..engines.records import select_engine

    device = f"GPU {machine.gpu_name}"
    mine: dict[str, str] = {}
    wanted = precisions if precisions is not None else _auto_precisions(
        manifest, GPU_PRECISION_ORDER, precision_files(manifest), mine, "qdq-s8s8")
    _merge_notes(notes, "tensorrt", mine)
    records, left_out = _engines(manifest, pinned, trusted)
    # a pinned build calibrates anew: calibration caches are device-built like engines
    build_options = {"build": True} if not pinned or trusted else {"build": True, "reuse_calibration_cache": False}
    choices, refused = [], []
    for precision in wanted:
        record, rejected = select_engine(records, precision, machine.tensorrt_version,
                                         machine.compute_capability, machine.gpu_name)
        if record is not None:
            why = f"engine {record.file} was built for this GPU and TensorRT {record.tensorrt}"
            choices.append(Choice("tensorrt", precision, {"engine": record.file}, device, why))
        elif build and precision in precision_files(manifest):
            why = f"no usable {precision} engine for this GPU, so one is built (build_engine=True)"
            choices.append(Choice("tensorrt", precision, dict(build_options), device, why))
        else:
            rejected = [*((r, w) for r, w in left_out if r.precision == precision), *rejected]
            reasons = "; ".join(f"{r.file}: {w}" for r, w in rejected)
            refused.append(f"{precision}: {reasons or f'the package has no {precision} engine'}")
    if choices:
        return choices, choices[0].reason
    hint = " (pass build_engine=True, or run liverlesion build-engine, to build one here)"
    return [], f"no engine in the package runs here: {'; '.join(refused) or 'no precision qualifies'}{hint}"


def _ort_provider(machine: Machine, provider: str | None) -> tuple[str | None, str]:
    """The execution provider to use (None: none usable) and why."""
    available = machine.ort_providers
    if provider is not None:
        if provider not in ORT_PROVIDERS:
            raise BackendError(f"unknown onnxruntime provider {provider!r}; accepted: "
                               f"{', '.join(ORT_PROVIDERS)}")
        if ORT_PROVIDERS[provider] not in available:
            return None, (f"onnxruntime here has no {ORT_PROVIDERS[provider]} (it has "
                          f"{', '.join(available)}); install onnxruntime-gpu for CUDA/TensorRT, or use "
                          "provider='cpu'")
        return provider, f"the {provider} provider was asked for"
    if machine.has_gpu and ORT_PROVIDERS["tensorrt"] in available and machine.tensorrt_version is not None:
        return "tensorrt", (f"a GPU ({machine.gpu_name}) and onnxruntime's TensorRT provider with TensorRT "
                            "installed")
    if machine.has_gpu and ORT_PROVIDERS["cuda"] in available:
        return "cuda", f"a GPU ({machine.gpu_name}) and onnxruntime's CUDA provider"
    gpu = "no GPU" if not machine.has_gpu else "no CUDA/TensorRT provider in this onnxruntime"
    return "cpu", f"CPU provider ({gpu})"


def _onnxruntime(manifest: Manifest, machine: Machine, precisions: list[str] | None, provider: str | None,
                 notes: dict[str, str], untrusted: bool = False) -> tuple[list[Choice], str]:
    if machine.onnxruntime_version is None:
        return [], "onnxruntime is not installed: pip install 'liverlesion[onnxruntime]'"
    chosen, why = _ort_provider(machine, provider)
    if chosen is None:
        return [], why
    have = precision_files(manifest)
    if chosen == "cpu":
        cpu_form = int8_file(manifest, CPU_INT8_FORM) is not None
        order = CPU_PRECISION_ORDER if cpu_form else CPU_PRECISION_ORDER_WITHOUT_CPU_INT8
        form = CPU_INT8_FORM if cpu_form else "qdq-s8s8"
    else:
        order = GPU_PRECISION_ORDER if chosen == "tensorrt" else CUDA_EP_PRECISION_ORDER
        form = "qdq-s8s8"
    mine: dict[str, str] = {}
    if precisions is None:
        wanted = _auto_precisions(manifest, order, have, mine, form)
        _merge_notes(notes, "onnxruntime", mine)
    else:
        wanted = [p for p in precisions if p in have]
    if not wanted:
        have_text = ", ".join(sorted(have))
        return [], f"no ONNX model of a usable precision in the package for onnxruntime (it has {have_text})"
    device = "CPU" if chosen == "cpu" else f"GPU {machine.gpu_name}"
    runtime = f"onnxruntime {machine.onnxruntime_version}, {why}"
    options: dict[str, Any] = {"provider": chosen}
    if untrusted and chosen == "tensorrt":  # the provider's engine cache is device-built and never verified
        options["engine_cache"] = False
        runtime += "; without the TensorRT provider's engine cache (pinned package)"
    choices = [Choice("onnxruntime", p, dict(options), device,
                      f"{runtime}; {mine.get(p, 'precision asked for')}") for p in wanted]
    return choices, choices[0].reason


def _openvino(manifest: Manifest, machine: Machine, precisions: list[str] | None,
              notes: dict[str, str], untrusted: bool = False) -> tuple[list[Choice], str]:
    if machine.openvino_error is not None:
        return [], f"OpenVINO is installed but its CPU plugin did not start: {machine.openvino_error}"
    if machine.openvino_version is None:
        return [], "OpenVINO is not installed: pip install 'liverlesion[openvino]'"
    have = precision_files(manifest)
    cpu_form = int8_file(manifest, CPU_INT8_FORM) is not None
    usable, refused = [], []
    for precision in precisions if precisions is not None else OPENVINO_PRECISION_ORDER:
        capability = INFERENCE_PRECISION[precision][1]
        if capability not in machine.openvino_capabilities:
            refused.append(f"{precision}: this CPU lacks {capability}")
        elif precision == "int8" and not cpu_form:
            refused.append("int8: the package has no CPU-form INT8 model (qdq-u8s8), and OpenVINO cannot "
                           "compile the TensorRT form")
        elif OPENVINO_FILE_PRECISION[precision] in have:
            usable.append(precision)
    mine: dict[str, str] = {}
    if precisions is None:
        # INT8 on OpenVINO is vouched for by a measurement on OpenVINO (its kernels are not onnxruntime's)
        usable = _auto_precisions(manifest, tuple(usable), have, mine, CPU_INT8_FORM, "openvino")
        _merge_notes(notes, "openvino", mine)
    if not usable:
        return [], "no precision runs on OpenVINO here: " + ("; ".join(refused) or "none qualifies")
    runtime = f"OpenVINO {machine.openvino_version} on CPU"
    options: dict[str, Any] = {}
    if untrusted:  # a compiled-model cache is device-built: compile from the pinned file instead
        options["cache_dir"] = False
        runtime += ", compiled without the compiled-model cache (pinned package)"
    choices = [Choice("openvino", p, dict(options), "CPU", f"{runtime}; {mine.get(p, 'precision asked for')}")
               for p in usable]
    return choices, choices[0].reason


def _torch(manifest: Manifest, machine: Machine, precisions: list[str] | None) -> tuple[list[Choice], str]:
    if not machine.torch:
        return [], "torch (or safetensors) is not installed: pip install 'liverlesion[train]'"
    if manifest.find(role="weights", format="safetensors") is None:
        return [], "the package has no weights (role 'weights', model.safetensors) for the torch reference"
    if precisions is not None and "fp32" not in precisions:
        return [], "the torch backend is the FP32 reference; it runs fp32 only"
    choice = Choice("torch", "fp32", {}, "CPU", "the PyTorch FP32 reference on CPU")
    return [choice], "the PyTorch FP32 reference"


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
    fixed = None if precision == "auto" else [precision]
    notes: dict[str, str] = {}
    reasons: dict[str, str] = {}
    candidates: list[Choice] = []
    names = BACKEND_NAMES if backend == "auto" else (backend,)
    if provider is not None:
        names = ("onnxruntime",)
    elif backend == "auto" and _ort_provider(machine, None)[0] == "cpu":
        names = ("tensorrt", "openvino", "onnxruntime", "torch")  # no GPU runtime: the fastest CPU one first
    untrusted = pinned and not trust_device_builds
    for name in names:
        if name == "tensorrt":
            found, why = _tensorrt(manifest, machine, fixed, build_engine, notes, pinned, trust_device_builds)
        elif name == "onnxruntime":
            found, why = _onnxruntime(manifest, machine, fixed, provider, notes, untrusted)
        elif name == "openvino":
            found, why = _openvino(manifest, machine, fixed, notes, untrusted)
        else:
            found, why = _torch(manifest, machine, fixed)
        reasons[name] = ("usable: " if found else "not used: ") + why
        candidates += found
    requested = {"backend": backend, "precision": precision, "provider": provider,
                 "build_engine": build_engine, "pinned": pinned, "trust_device_builds": trust_device_builds}
    if not candidates:
        raise _refusal(backend, names, reasons)
    return Selection(requested, tuple(candidates), reasons, notes, machine)


def _refusal(backend: str, names: tuple[str, ...], reasons: dict[str, str]) -> Exception:
    """The error for a request nothing can serve: a missing runtime names its extra."""
    text = "; ".join(f"{name}: {reasons[name].removeprefix('not used: ')}" for name in names)
    if backend == "auto":
        return BackendError(f"no backend can run this package here ({text}); install one: "
                            "pip install 'liverlesion[onnxruntime]'")
    why = reasons[backend]
    if "not installed" in why:
        return MissingDependencyError(f"the {backend} backend cannot be used: {text}")
    if backend == "tensorrt":
        return EngineError(f"the tensorrt backend cannot be used: {text}")
    return BackendError(f"the {backend} backend cannot be used: {text}")
