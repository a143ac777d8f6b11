"""onnxruntime backend: CPU, or CUDA / TensorRT execution providers where installed.

Thread safety: ``InferenceSession.run`` is thread-safe (onnxruntime documents concurrent
``Run`` calls on one session), so one session serves every thread without a lock;
concurrent calls share the session's intra-op thread pool.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendError, require
from ..package import FileRecord, ModelPackage
from .base import Backend
from .host import cache_root, threads_or_all

#: execution provider names, by the short name users give.
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def select_onnx_file(package: ModelPackage, precision: str, provider: str) -> FileRecord:
    """The package's ONNX file for a precision; for INT8, the form this provider runs best."""
    manifest = package.manifest
    candidates = [f for f in manifest.onnx_files() if f.precision == precision]
    if not candidates:
        have = sorted({f.precision for f in manifest.onnx_files() if f.precision})
        raise BackendError(f"the package has no {precision} ONNX model; it has: {', '.join(have)}")
    # The CPU form (uint8 activations) runs fast on the CPU provider only; TensorRT needs the symmetric
    # one, and the CUDA provider's Q/DQ support is written for it too.
    preferred = "qdq-u8s8" if provider == "cpu" else "qdq-s8s8"
    for record in candidates:
        if record.extra.get("form") == preferred:
            return record
    return candidates[0]


class OnnxRuntimeBackend(Backend):
    """Runs the fused ONNX graph with onnxruntime (see the module docstring for thread safety)."""

    name: ClassVar[str] = "onnxruntime"
    extra: ClassVar[str] = "onnxruntime"

    def __init__(self, package: ModelPackage, precision: str = "fp32", *, provider: str = "cpu",
                 threads: int | None = None, device_id: int = 0, engine_cache: bool = True) -> None:
        """``threads``: intra-op threads (default, and at most: every CPU this process may use);
        ``engine_cache``: let the TensorRT provider reuse the engines it cached (False: build in memory)."""
        super().__init__(package, precision)
        ort = require("onnxruntime", "onnxruntime", "the onnxruntime backend")
        if provider not in PROVIDERS:
            raise BackendError(f"unknown onnxruntime provider {provider!r}; accepted: {', '.join(PROVIDERS)}")
        if PROVIDERS[provider] not in ort.get_available_providers():
            raise BackendError(
                f"onnxruntime here has no {PROVIDERS[provider]} (it has "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu for CUDA/TensorRT, "
                "or use provider='cpu'"
            )
        threads = threads_or_all(threads)
        self.threads = threads
        self.provider = provider
        self.device_id = device_id
        self.engine_cache = bool(engine_cache)
        self.record = select_onnx_file(package, precision, provider)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
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
        if self._input != expected:
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
            return False, "onnxruntime is not installed: pip install 'liverlesion[onnxruntime]'"
        return True, f"onnxruntime {ort.__version__} with {', '.join(ort.get_available_providers())}"

    @property
    def device(self) -> str:
        return {"cpu": "CPU", "cuda": f"CUDA:{self.device_id}",
                "tensorrt": f"CUDA:{self.device_id} (TensorRT EP)"}[self.provider]

    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        session = self._session
        if session is None:
            raise BackendError("the onnxruntime backend was closed; load the model again")
        try:
            values = session.run(self._outputs, {self._input: hu})
        except Exception as exc:  # onnxruntime's Fail / InvalidArgument / RuntimeException are untyped here
            raise BackendError(f"onnxruntime failed running {self.record.path}: {exc}") from exc
        return dict(zip(self._outputs, values, strict=True))

    def _release(self) -> None:
        self._session = None
