"""onnxruntime backend: CPU, or CUDA / TensorRT execution providers where installed.

Thread safety: ``InferenceSession.run`` is thread-safe (onnxruntime documents concurrent
``Run`` calls on one session), so one session serves every thread without a lock;
concurrent calls share the session's intra-op thread pool.

Spinning is off by default (``session.intra_op.allow_spinning=0``, onnxruntime's own default is on): idle
pool threads that busy-wait take the CPU from the other callers and from the series pipeline's reader and
writer threads. Measured on 2 cores (demo package, INT8 u8s8, 512 x 512): two threads calling
``predict_batch`` 185 -> 226..233 slices/s, ``predict_series`` 110..117 -> 130 slices/s, one caller alone
181 -> 167..174 (docs/sdk.md, "Threads").
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendError, InputError, require
from ..machine.host import cache_root, threads_or_all
from ..machine.probe import Machine
from ..package import FileRecord, Manifest, ModelPackage
from ..package.accuracy import CPU_INT8_FORM, GPU_INT8_FORM, auto_precisions, int8_file, int8_form, precision_files
from ..package.manifest import SLICE_ROLE
from .base import GRAPHS, MODEL_GRID, SLICE, SLICE_FEEDS, Backend
from .choice import Candidates, Choice, Request
from .registry import BACKENDS

#: This backend's registry row (its extra names the install hint).
ROW = BACKENDS["onnxruntime"]

#: execution provider names, by the short name users give (the registry row's variants).
PROVIDERS = BACKENDS["onnxruntime"].variants
#: Fastest first on onnxruntime's TensorRT execution provider (as TensorRT itself).
TENSORRT_EP_PRECISION_ORDER = ("int8", "fp16", "fp32")
#: Fastest first on onnxruntime's CUDA provider: it runs Q/DQ INT8 graphs dequantized, slower than FP16.
CUDA_EP_PRECISION_ORDER = ("fp16", "fp32")
#: Fastest first on onnxruntime CPU, as measured (docs/benchmarks.md, x86 with AVX-512 VNNI, onnxruntime
#: 1.32): the CPU-form INT8 (u8s8) first; FP16 runs its convolutions through casts to float, so it only
#: ties FP32; the TensorRT-form INT8 (s8s8), used when the package has no CPU form, is slower than FP32.
CPU_PRECISION_ORDER = ("int8", "fp32", "fp16")
CPU_PRECISION_ORDER_WITHOUT_CPU_INT8 = ("fp32", "fp16", "int8")


def _unknown_provider(provider: str) -> BackendError:
    return BackendError(f"unknown onnxruntime provider {provider!r}; accepted: {', '.join(PROVIDERS)}")


def _missing_provider(provider: str, available: Any) -> str:
    return (f"onnxruntime here has no {PROVIDERS[provider]} (it has {', '.join(available)}); install "
            "onnxruntime-gpu for CUDA/TensorRT, or use provider='cpu'")


def provider_for(machine: Machine, provider: str | None) -> tuple[str | None, str]:
    """The execution provider to use (None: none usable) and why: the one asked for, else the fastest here."""
    available = machine.ort_providers
    if provider is not None:
        if provider not in PROVIDERS:
            raise _unknown_provider(provider)
        if PROVIDERS[provider] not in available:
            return None, _missing_provider(provider, available)
        return provider, f"the {provider} provider was asked for"
    if machine.has_gpu and PROVIDERS["tensorrt"] in available and machine.tensorrt_version is not None:
        return "tensorrt", (f"a GPU ({machine.gpu_name}) and onnxruntime's TensorRT provider with TensorRT "
                            "installed")
    if machine.has_gpu and PROVIDERS["cuda"] in available:
        return "cuda", f"a GPU ({machine.gpu_name}) and onnxruntime's CUDA provider"
    gpu = "no GPU" if not machine.has_gpu else "no CUDA/TensorRT provider in this onnxruntime"
    return "cpu", f"CPU provider ({gpu})"


def candidates(manifest: Manifest, machine: Machine, request: Request) -> Candidates:
    """The package's ONNX files onnxruntime runs here, on the provider of :func:`provider_for`, fastest first."""
    if machine.onnxruntime_version is None:
        return Candidates([], f"onnxruntime is not installed: {ROW.install}")
    chosen, why = provider_for(machine, request.provider)
    if chosen is None:
        return Candidates([], why)
    have = precision_files(manifest)
    if chosen == "cpu":
        cpu_form = int8_file(manifest, CPU_INT8_FORM) is not None
        order = CPU_PRECISION_ORDER if cpu_form else CPU_PRECISION_ORDER_WITHOUT_CPU_INT8
        form = CPU_INT8_FORM if cpu_form else GPU_INT8_FORM
    else:
        order = TENSORRT_EP_PRECISION_ORDER if chosen == "tensorrt" else CUDA_EP_PRECISION_ORDER
        form = int8_form(on_cpu=False)
    notes: dict[str, str] = {}
    if request.precisions is None:
        wanted = auto_precisions(manifest, order, notes, form)
    else:
        wanted = [p for p in request.precisions if p in have]
    on_gpu = chosen != "cpu"
    if not wanted:
        have_text = ", ".join(sorted(have))
        return Candidates([], f"no ONNX model of a usable precision in the package for onnxruntime (it has "
                              f"{have_text})", notes, on_gpu)
    device = f"GPU {machine.gpu_name}" if on_gpu else "CPU"
    runtime = f"onnxruntime {machine.onnxruntime_version}, {why}"
    options: dict[str, Any] = {"provider": chosen}
    if request.untrusted and chosen == "tensorrt":  # the provider's engine cache is device-built, never verified
        options["engine_cache"] = False
        runtime += "; without the TensorRT provider's engine cache (pinned package)"
    choices = [Choice("onnxruntime", p, dict(options), device,
                      f"{runtime}; {notes.get(p, 'precision asked for')}") for p in wanted]
    return Candidates(choices, choices[0].reason, notes, on_gpu)


def select_onnx_file(package: ModelPackage, precision: str, provider: str, graph: str = MODEL_GRID) -> FileRecord:
    """The package's ONNX file for a precision and graph; for INT8, the form this provider runs best."""
    manifest = package.manifest
    role = SLICE_ROLE if graph == SLICE else "onnx"
    candidates = [f for f in manifest.onnx_files(role) if f.precision == precision]
    if not candidates:
        have = sorted({f.precision for f in manifest.onnx_files(role) if f.precision})
        what = "slice graph" if graph == SLICE else "ONNX model"
        hint = " (add slice graphs with liverlesion slice-graphs)" if graph == SLICE else ""
        raise BackendError(f"the package has no {precision} {what}{hint}; it has: {', '.join(have) or 'none'}")
    # The CPU form (uint8 activations) runs fast on the CPU provider only; TensorRT needs the symmetric
    # one, and the CUDA provider's Q/DQ support is written for it too.
    preferred = int8_form(on_cpu=provider == "cpu")
    for record in candidates:
        if record.extra.get("form") == preferred:
            return record
    return candidates[0]


class OnnxRuntimeBackend(Backend):
    """Runs the fused ONNX graph with onnxruntime (see the module docstring for thread safety)."""

    name: ClassVar[str] = "onnxruntime"
    runs_slice_graph: ClassVar[bool] = True

    def __init__(self, package: ModelPackage, precision: str = "fp32", *, provider: str = "cpu",
                 threads: int | None = None, device_id: int = 0, engine_cache: bool = True,
                 graph: str = MODEL_GRID, spinning: bool = False) -> None:
        """``threads``: intra-op threads (default, and at most: every CPU this process may use);
        ``spinning``: let idle intra-op threads busy-wait for work (onnxruntime's default; off here: module docstring);
        ``engine_cache``: let the TensorRT provider reuse the engines it cached (False: build in memory);
        ``graph``: "model-grid" (the fused graph) or "slice" (its slice graph, resampling inside)."""
        super().__init__(package, precision)
        if graph not in GRAPHS:
            raise InputError(f"graph={graph!r:.40} is not accepted: give one of {', '.join(GRAPHS)}")
        self.graph = graph
        ort = require("onnxruntime", ROW.extra, "the onnxruntime backend")
        if provider not in PROVIDERS:
            raise _unknown_provider(provider)
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise BackendError(_missing_provider(provider, ort.get_available_providers()))
        threads = threads_or_all(threads)
        self.threads = threads
        self.provider = provider
        self.device_id = device_id
        self.engine_cache = bool(engine_cache)
        self.record = select_onnx_file(package, precision, provider, graph)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        self.spinning = bool(spinning)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "1" if spinning else "0")
        options.log_severity_level = 3  # warnings from the CPU EP about fp16 nodes are expected
        providers: list[Any] = [(PROVIDERS[provider], self._provider_options(provider))]
        if provider != "cpu":
            providers.append("CPUExecutionProvider")
        try:
            session = ort.InferenceSession(str(package.path(self.record)), sess_options=options,
                                           providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise BackendError(f"onnxruntime could not load {self.record.path}: {exc}") from exc
        # onnxruntime falls back to CPU silently when a GPU provider cannot start (missing CUDA/cuDNN or
        # TensorRT libraries): refuse, so that 'auto' moves on and nobody benchmarks the CPU unawares.
        if PROVIDERS[provider] not in session.get_providers():
            raise BackendError(f"onnxruntime could not start its {PROVIDERS[provider]} (the CUDA, cuDNN or "
                               "TensorRT libraries it needs are missing or do not match); it would run on "
                               f"{', '.join(session.get_providers())}. Fix the GPU libraries or use "
                               "provider='cpu'")
        self._session: Any = session
        self._input = session.get_inputs()[0].name
        self._outputs = [o.name for o in session.get_outputs()]
        expected = package.manifest.input_name
        if graph == SLICE:
            names = sorted(i.name for i in session.get_inputs())
            if names != sorted(SLICE_FEEDS):
                raise BackendError(f"{self.record.path} takes inputs {names}; a slice graph takes "
                                   f"{sorted(SLICE_FEEDS)}")
        elif self._input != expected:
            raise BackendError(f"{self.record.path} takes input {self._input!r}, the manifest says "
                               f"{expected!r}")

    def _provider_options(self, provider: str) -> dict[str, Any]:
        if provider == "tensorrt":
            cache = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(self._trt_cache())} \
                if self.engine_cache else {"trt_engine_cache_enable": False}
            return {"device_id": self.device_id, **cache,
                    "trt_fp16_enable": self.precision == "fp16", "trt_int8_enable": self.precision == "int8"}
        if provider == "cuda":
            return {"device_id": self.device_id}
        return {}

    def _trt_cache(self) -> Path:
        """Where the TensorRT provider caches engines: in the package if writable, else the user's cache."""
        cache = self.package.root / "engines" / "onnxruntime-trt-cache"
        try:
            cache.mkdir(parents=True, exist_ok=True)
            if os.access(cache, os.W_OK):
                return cache
        except OSError:
            pass
        fallback = cache_root() / "onnxruntime-trt" / self.record.sha256[:16]
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        try:
            import onnxruntime as ort
        except ImportError:
            return False, f"onnxruntime is not installed: {ROW.install}"
        return True, f"onnxruntime {ort.__version__} with {', '.join(ort.get_available_providers())}"

    @property
    def device(self) -> str:
        return {"cpu": "CPU", "cuda": f"CUDA:{self.device_id}",
                "tensorrt": f"CUDA:{self.device_id} (TensorRT EP)"}[self.provider]

    def model_file(self) -> tuple[str, int]:
        return self.record.path, int(self.record.size)

    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        return self._session_run({self._input: hu})

    def _run_slices(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._session_run(feeds)

    def _session_run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise BackendError("the onnxruntime backend was closed; load the model again")
        try:
            values = session.run(self._outputs, feeds)
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException are untyped here
            raise BackendError(f"onnxruntime failed running {self.record.path}: {exc}") from exc
        return dict(zip(self._outputs, values, strict=True))

    def _release(self) -> None:
        self._session = None
