"""The TensorRT-RTX backend: runs the package's TensorRT-RTX engine on an RTX workstation or desktop GPU.

TensorRT-RTX engines are built ahead of time on any machine for a set of GPU families
(``build-engine --runtime tensorrt-rtx``); their kernels are compiled for the actual GPU at the
first load (JIT). The contract is the TensorRT backend's, whose loading and running code this
reuses; what differs:

- before deserialising: the manifest's sha256 of the plan, the exact TensorRT-RTX release, the GPU
  among the plan's targets, and TensorRT-RTX's own ``Runtime.get_engine_validity`` on the bytes
  (invalid: a typed error naming its diagnostics; suboptimal: a warning);
- the JIT kernels are kept in a runtime cache per GPU and engine under the per-user cache folder
  (:mod:`.rtx_runtime_cache`, verified before use, skipped for pinned packages), so the second load
  on the same GPU skips compilation;
- CUDA graphs come from TensorRT-RTX's own ``cuda_graph_strategy`` (whole-graph capture), not
  from a hand capture.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from ..engine_tags import TENSORRT_RTX, TrtVersion
from ..engines.versions import (
    RTX_COMPUTE_CAPABILITIES,
    import_tensorrt_rtx,
    installed_tensorrt_rtx_version,
)
from ..errors import BackendError, EngineError
from ..machine.host import cache_disabled, cache_root
from ..machine.probe import Machine
from ..machine.runtimes import tensorrt_rtx_installed
from ..package import Manifest, ModelPackage, load_package
from .choice import Candidates, Request
from .registry import BACKENDS
from .rtx_runtime_cache import RuntimeCacheKey, cache_folder, read_cache, write_cache
from .tensorrt import GRAPH_CAPTURED, GRAPH_OFF, CudaGraphState, EngineOffer, TensorRTBackend, engine_candidates

ROW = BACKENDS["tensorrt-rtx"]
log = logging.getLogger("liverlesion.backends.tensorrt_rtx")


def candidates(manifest: Manifest, machine: Machine, request: Request) -> Candidates:
    """The package's TensorRT-RTX engines that target this GPU (or one built here), fastest first."""
    ok, why = machine.tensorrt_rtx_backend
    if not ok:
        return Candidates([], why)
    cache = {} if not request.untrusted else {"runtime_cache": False}  # a pinned load JITs without the cache
    return engine_candidates(manifest, machine, request, EngineOffer(
        "tensorrt-rtx", TENSORRT_RTX, "TensorRT-RTX", machine.tensorrt_rtx_version, cache, {"build": True, **cache},
        machine.compute_capability in RTX_COMPUTE_CAPABILITIES,
        " (liverlesion build-engine --runtime tensorrt-rtx builds one, on any machine)"))


def build_here(package: ModelPackage, precision: str, *, archive: bool,
               reuse_calibration_cache: bool = True) -> tuple[ModelPackage, str]:
    """Build a TensorRT-RTX engine of ``precision`` for this GPU's family into the package; reopen it."""
    from ..engines.build import build_engine
    from ..engines.plan import BuildOptions, plan_build
    from ..machine.gpu import detect_gpu

    trt = import_tensorrt_rtx()
    gpu = detect_gpu()
    if gpu is None:
        raise BackendError("build_engine=True builds for the GPU found here, and none was found; build for named "
                           "GPUs on any machine with liverlesion build-engine --runtime tensorrt-rtx")
    if archive:
        raise BackendError("build_engine=True needs the package folder (the engine is recorded inside it); "
                           "unpack the archive, or run liverlesion build-engine --runtime tensorrt-rtx")
    options = BuildOptions(precision=precision, runtime=TENSORRT_RTX, compute_capabilities=(gpu.compute_capability,))
    plan = plan_build(str(trt.__version__), options, package.manifest)
    record = build_engine(package.root, plan, log=lambda line: log.info("build-engine: %s", line))
    root = Path(package.root)
    package.close()
    return load_package(root), record.file


def _diagnostics(trt: Any, flags: int) -> str:
    """TensorRT-RTX's EngineInvalidityDiagnostics bits, in words."""
    names = [name.lower().replace("_", " ") for name, member in trt.EngineInvalidityDiagnostics.__members__.items()
             if flags & int(member)]
    return ", ".join(names) or "no diagnostics given"


class TensorRTRtxBackend(TensorRTBackend):
    """Runs a TensorRT-RTX plan from the package (see the module docstring for what it checks)."""

    name: ClassVar[str] = "tensorrt-rtx"
    title: ClassVar[str] = "TensorRT-RTX"
    engine_runtime: ClassVar[str] = TENSORRT_RTX
    runtime_modules: ClassVar[tuple[str, ...]] = ("tensorrt_rtx", "tensorrt_rtx_libs", "tensorrt_rtx_bindings")

    @classmethod
    def _runtime_installed(cls) -> bool:
        return tensorrt_rtx_installed()

    @classmethod
    def _import_runtime(cls) -> ModuleType:
        return import_tensorrt_rtx()

    @classmethod
    def _installed_version(cls) -> TrtVersion | None:
        return installed_tensorrt_rtx_version()

    @classmethod
    def _not_installed(cls) -> str:
        return f"TensorRT-RTX is not installed: {ROW.install}"

    def __init__(self, package: ModelPackage, precision: str, *, engine: str | None = None, device: int = 0,
                 cuda_graphs: bool = False, runtime_cache: bool | str | Path | None = None,
                 memory: str | None = None, graph: str = "model-grid") -> None:
        """Load ``engine`` (a file in the package), else the package's TensorRT-RTX ``precision`` engine.

        ``cuda_graphs``: let TensorRT-RTX capture and replay the whole network (``cuda_graph_strategy``).
        ``runtime_cache``: the cache folder's root (default: the per-user cache; False: JIT on every load).
        ``memory``: force 'cuda-python' or 'pycuda'. ``graph``: "model-grid" or "slice" (see TensorRTBackend).
        """
        self._cuda_graphs = bool(cuda_graphs)
        self._cache_root: Path | None = None
        if runtime_cache is not False and not cache_disabled():
            self._cache_root = cache_root() if runtime_cache in (None, True) else Path(str(runtime_cache))
        self._cache_key: RuntimeCacheKey | None = None
        self._cache_folder: Path | None = None
        self._runtime_config: Any = None
        self._runtime_cache: Any = None
        self._cache_loaded = False  # a verified cache was accepted by TensorRT-RTX: this load skipped JIT
        self._saved_digest: str | None = None
        self._cached_shapes: set[tuple[Any, ...]] = set()  # input shapes whose kernels the cache holds
        self._cache_lock = threading.Lock()
        super().__init__(package, precision, engine=engine, device=device, cuda_graph_batch=None, memory=memory,
                         graph=graph)

    # -- the hooks of TensorRTBackend -------------------------------------------------------
    def _check_plan(self, runtime: Any, plan: bytes) -> None:
        trt = self._trt
        validity, flags = runtime.get_engine_validity(plan)
        if validity == trt.EngineValidity.INVALID:
            raise EngineError(f"TensorRT-RTX says engine {self.record.file} cannot run here "
                              f"({_diagnostics(trt, int(flags))}); rebuild it: liverlesion build-engine PACKAGE "
                              f"--runtime tensorrt-rtx --precision {self.record.precision} --compute-capability "
                              f"{self.gpu.cc_text}")
        if validity == trt.EngineValidity.SUBOPTIMAL:
            log.warning("TensorRT-RTX: engine %s runs here but not at its best (%s); rebuild it for %s",
                        self.record.file, _diagnostics(trt, int(flags)), self.gpu.cc_text)

    def _create_context(self, engine: Any) -> Any:
        trt = self._trt
        self._runtime_config = config = engine.create_runtime_config()
        if self._cuda_graphs:
            config.cuda_graph_strategy = trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE
        self._open_runtime_cache(config)
        return engine.create_execution_context(config)

    # -- the runtime cache -----------------------------------------------------------------------
    def _open_runtime_cache(self, config: Any) -> None:
        """Attach a runtime cache to ``config``, filled from the verified cache file when there is one."""
        if self._cache_root is None:
            return
        self._cache_key = key = RuntimeCacheKey(
            engine_sha256=self.record.sha256, tensorrt_rtx=str(self.trt_version), gpu_name=self.gpu.name,
            compute_capability=self.gpu.cc_text, driver_version=self.gpu.driver_version)
        self._cache_folder = cache_folder(self._cache_root, key)
        cache = config.create_runtime_cache()
        if self._cache_folder is not None:
            blob = read_cache(self._cache_folder, key)
            if blob is not None:
                self._cache_loaded = bool(cache.deserialize(blob))
                if self._cache_loaded:
                    self._saved_digest = hashlib.sha256(blob).hexdigest()
                else:
                    log.warning("TensorRT-RTX refused the runtime cache of %s for this environment; compiling "
                                "the kernels anew", self.record.file)
        if not config.set_runtime_cache(cache):
            log.warning("TensorRT-RTX did not take a runtime cache for %s; kernels compile on every load",
                        self.record.file)
            return
        self._runtime_cache = cache

    def _save_runtime_cache(self) -> None:
        """Write the cache back when TensorRT-RTX compiled kernels it did not hold (first run, new shapes)."""
        if self._runtime_cache is None or self._cache_folder is None or self._cache_key is None:
            return
        try:
            blob = bytes(memoryview(self._runtime_cache.serialize()))
        except (RuntimeError, TypeError) as exc:
            log.warning("TensorRT-RTX could not serialise its runtime cache (%s)", exc)
            return
        digest = hashlib.sha256(blob).hexdigest()
        if blob and digest != self._saved_digest and write_cache(self._cache_folder, self._cache_key, blob):
            self._saved_digest = digest

    @property
    def runtime_cache(self) -> dict[str, Any]:
        """Where the JIT kernels are kept and whether this load started from them."""
        return {"folder": None if self._cache_folder is None else str(self._cache_folder),
                "loaded": self._cache_loaded, "enabled": self._runtime_cache is not None}

    @property
    def cuda_graph(self) -> CudaGraphState:
        if not self._cuda_graphs:
            return CudaGraphState(None, GRAPH_OFF, "not asked for (cuda_graphs=False)")
        return CudaGraphState(None, GRAPH_CAPTURED, "TensorRT-RTX captures and replays the whole network "
                                                    "(cuda_graph_strategy WHOLE_GRAPH_CAPTURE)")

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = super()._execute(feeds)
        batch = max(next(iter(feeds.values())).shape[0], self._min_batch)
        shapes = tuple((name, (batch, *value.shape[1:])) for name, value in sorted(feeds.items()))
        if shapes not in self._cached_shapes:  # JIT compiles per shape: save after each first run of one
            with self._cache_lock:
                if shapes not in self._cached_shapes:
                    self._save_runtime_cache()
                    self._cached_shapes.add(shapes)
        return outputs

    def _release(self) -> None:
        with self._lock:  # the runtime cache must outlive the context that JIT-compiles into it (NVIDIA's rule)
            self._context = None
            self._runtime_cache = None
            self._runtime_config = None
        super()._release()
