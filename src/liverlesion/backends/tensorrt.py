"""The TensorRT backend: runs the package's engine built for this GPU and TensorRT version.

Before anything is deserialised the engine record is checked (TensorRT version,
GPU compute capability, sha256 of the plan): a mismatch is an EngineError that
says to rebuild, never a crash inside TensorRT. The engine is deserialised once;
tensors are bound by name (``set_tensor_address`` / ``set_input_shape`` /
``execute_async_v3``, the API from TensorRT 8.5 through 11.x), device buffers and
pinned host buffers are allocated once for the profile's largest batch, and work
runs on the backend's own CUDA stream, optionally replayed as a CUDA graph.
Before TensorRT starts CUDA, the driver's CUDA version is checked against the one
the installed wheel needs (``machine.cuda_compat``): an old driver is an EngineError
saying what to update, never a crash.

CUDA graphs (``cuda_graph_batch``), as trtexec does them: a graph is captured only
after one plain, synchronised run at the current input shape (TensorRT finishes its
shape-dependent setup there), it is destroyed when the input shape changes (a graph
holds one shape), and a failed capture turns graphs off for the backend's life, with
one warning and the reason in ``backend.cuda_graph``.

Subclassing (e.g. a TensorRT-RTX backend): the tensorrt module, its version, the
distributions to check against the driver, the runtime and the execution context
come from small overridable methods (``_import_runtime`` .. ``_create_context``).

Thread safety: one execution context behind a lock. The model is small and a
Jetson GPU is busy with one slice anyway, while every extra context costs its own
activation memory, which 8 GB Orin modules share with the CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..engine_tags import TENSORRT, TrtVersion
from ..engines.records import EngineRecord, engine_compatibility, engine_records, select_engine
from ..engines.versions import import_tensorrt, installed_tensorrt_version
from ..errors import BackendError, EngineError, InputError, LiverLesionError, install_hint
from ..machine.cuda_compat import cuda_runtime_refusal, runtime_distribution
from ..machine.cuda_memory import CudaMemory, available_implementations, open_cuda_memory
from ..machine.gpu import GpuInfo, detect_gpu
from ..machine.probe import Machine
from ..machine.runtimes import tensorrt_installed
from ..package import Manifest, ModelPackage, load_package
from ..package.accuracy import GPU_INT8_FORM, auto_precisions, precision_files
from ..package.digest import pinned_onnx
from .base import GRAPHS, MODEL_GRID, SLICE, SLICE_FEEDS, Backend
from .choice import Candidates, Choice, Request
from .registry import BACKENDS

#: This backend's registry row (its extra names the install hint).
ROW = BACKENDS["tensorrt"]

if TYPE_CHECKING:
    import tensorrt as trt


@dataclass
class _Tensor:
    """One engine I/O tensor: its pinned host buffer and device buffer, sized for the max batch."""

    name: str
    is_input: bool
    host: np.ndarray
    device: int


#: ``CudaGraphState.status``: not asked for; asked, captured after the next plain run at the graph's batch;
#: a graph is held and replayed; capture failed, so plain execution for the rest of the backend's life.
GRAPH_OFF, GRAPH_WAITING, GRAPH_CAPTURED, GRAPH_FAILED = "off", "waiting", "captured", "failed"


@dataclass(frozen=True)
class CudaGraphState:
    """Whether a TensorRT backend replays a CUDA graph: the batch asked for, the status, and why."""

    batch: int | None
    status: str
    reason: str


def _dims(dims: Any) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def _view(buffer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The first elements of a buffer sized for the largest shapes, as an array of ``shape`` (no copy)."""
    return buffer.reshape(-1)[:math.prod(shape)].reshape(shape)


log = logging.getLogger("liverlesion.backends.tensorrt")

#: Fastest first (TensorRT, as onnxruntime's TensorRT execution provider).
PRECISION_ORDER = ("int8", "fp16", "fp32")
#: Why a pinned load leaves a device-built engine or cache out.
PIN_REFUSAL = ("built on a device after export, outside the pinned digest: not used under expect_digest "
               "(trust_device_builds=True uses it)")


def _engines(manifest: Manifest, pinned: bool, trusted: bool) -> tuple[list[Any], list[tuple[Any, str]]]:
    """The engine records a load may use, and those it may not with why (the pin rule: see ``Request.untrusted``)."""
    records = engine_records(manifest)
    if not pinned:
        return records, []
    if not trusted:
        return [], [(r, PIN_REFUSAL) for r in records]
    covered = pinned_onnx(manifest)
    foreign = [(r, "built from an ONNX file the pinned package does not hold (its plan's onnx_sha256)")
               for r in records if r.plan.get("onnx_sha256") not in covered]
    return [r for r in records if r.plan.get("onnx_sha256") in covered], foreign


@dataclass(frozen=True)
class EngineOffer:
    """What an engine backend offers selection: its name, its records' runtime, and the options of its choices."""

    backend: str
    runtime: str
    title: str
    version: str | None
    load_options: dict[str, Any]
    build_options: dict[str, Any]
    #: Whether ``build_engine=True`` can build here (TensorRT-RTX: this GPU among its targets).
    buildable: bool
    hint: str


def engine_candidates(manifest: Manifest, machine: Machine, request: Request, offer: EngineOffer) -> Candidates:
    """The package's ``offer.runtime`` engines that run on this GPU (or builds, with ``build_engine``), fastest
    first: shared by the TensorRT and TensorRT-RTX backends."""
    device = f"GPU {machine.gpu_name}"
    notes: dict[str, str] = {}
    wanted = list(request.precisions) if request.precisions is not None else auto_precisions(
        manifest, PRECISION_ORDER, notes, GPU_INT8_FORM)
    records, left_out = _engines(manifest, request.pinned, request.trust_device_builds)
    choices, refused = [], []
    for precision in wanted:
        sliced, _ = select_engine(records, precision, offer.version, machine.compute_capability, machine.gpu_name,
                                  runtime=offer.runtime, graph=SLICE)
        if sliced is not None:  # first: the resampling runs on the GPU too (sdk.slice_graph decides under auto)
            why = (f"engine {sliced.file} of the slice graph (resampling on the GPU) was built for this GPU and "
                   f"{offer.title} {sliced.tensorrt} ({sliced.sm})")
            choices.append(Choice(offer.backend, precision, {"engine": sliced.file, "graph": SLICE,
                                                             **offer.load_options}, device, why))
        record, rejected = select_engine(records, precision, offer.version, machine.compute_capability,
                                         machine.gpu_name, runtime=offer.runtime)
        if record is not None:
            why = f"engine {record.file} was built for this GPU and {offer.title} {record.tensorrt} ({record.sm})"
            choices.append(Choice(offer.backend, precision, {"engine": record.file, **offer.load_options}, device,
                                  why))
        elif request.build_engine and offer.buildable and precision in precision_files(manifest):
            why = f"no usable {precision} {offer.title} engine for this GPU, so one is built (build_engine=True)"
            choices.append(Choice(offer.backend, precision, dict(offer.build_options), device, why))
        else:
            rejected = [*((r, w) for r, w in left_out if r.precision == precision and r.runtime == offer.runtime),
                        *rejected]
            reasons = "; ".join(f"{r.file}: {w}" for r, w in rejected)
            refused.append(f"{precision}: {reasons or f'the package has no {precision} {offer.title} engine'}")
    if choices:
        return Candidates(choices, choices[0].reason, notes, gpu=True)
    return Candidates([], f"no {offer.title} engine in the package runs here: "
                          f"{'; '.join(refused) or 'no precision qualifies'}{offer.hint}", notes, gpu=True)


def candidates(manifest: Manifest, machine: Machine, request: Request) -> Candidates:
    """The package's engines that run on this GPU and TensorRT (or builds, with ``build_engine``), fastest first."""
    ok, why = machine.tensorrt_backend
    if not ok:
        return Candidates([], why)
    # a pinned build calibrates anew: calibration caches are device-built like engines
    build = {"build": True} if not request.untrusted else {"build": True, "reuse_calibration_cache": False}
    return engine_candidates(manifest, machine, request, EngineOffer(
        "tensorrt", TENSORRT, "TensorRT", machine.tensorrt_version, {}, build, True,
        " (pass build_engine=True, or run liverlesion build-engine, to build one here)"))


def build_here(package: ModelPackage, precision: str, *, archive: bool,
               reuse_calibration_cache: bool = True) -> tuple[ModelPackage, str]:
    """Build a TensorRT engine of ``precision`` for this GPU into the package folder; reopen the package.

    Returns the reopened package and the engine's file (the caller's ``package`` is closed).
    """
    from ..engines.build import build_engine
    from ..engines.plan import BuildOptions, plan_build

    trt = import_tensorrt()
    gpu = detect_gpu()
    if gpu is None:
        raise BackendError("build_engine=True needs an NVIDIA GPU, and none was found")
    if archive:  # unpacked into a temporary folder: the engine would vanish with it
        raise BackendError("build_engine=True needs the package folder (the engine is recorded inside it); "
                           "unpack the archive, or run liverlesion build-engine")
    options = BuildOptions(precision=precision, compute_capability=gpu.compute_capability,
                           reuse_calibration_cache=reuse_calibration_cache)
    plan = plan_build(str(trt.__version__), options, package.manifest)
    record = build_engine(package.root, plan, log=lambda line: log.info("build-engine: %s", line))
    root = Path(package.root)
    package.close()
    return load_package(root), record.file


def _rebuild(package: ModelPackage, precision: str) -> str:
    return f"liverlesion build-engine {package.root} --precision {precision}"


class TensorRTBackend(Backend):
    """Runs a TensorRT plan from the package (see the module docstring for the guarantees)."""

    name: ClassVar[str] = "tensorrt"
    runs_slice_graph: ClassVar[bool] = True
    #: The runtime's name in messages, and the ``runtime`` of the engine records it runs.
    title: ClassVar[str] = "TensorRT"
    engine_runtime: ClassVar[str] = TENSORRT
    #: Python modules of the TensorRT wheels whose distribution names the CUDA major they need.
    runtime_modules: ClassVar[tuple[str, ...]] = ("tensorrt", "tensorrt_libs", "tensorrt_bindings")

    # -- what a subclass for another NVIDIA runtime (TensorRT-RTX) overrides ----------------
    @classmethod
    def _runtime_installed(cls) -> bool:
        """Whether the runtime's Python package is installed (found without importing it)."""
        return tensorrt_installed()

    @classmethod
    def _import_runtime(cls) -> ModuleType:
        """The runtime's Python module, or MissingDependencyError naming the extra."""
        return import_tensorrt()

    @classmethod
    def _installed_version(cls) -> TrtVersion | None:
        """The installed runtime's version, as engine records name it."""
        return installed_tensorrt_version()

    @classmethod
    def cuda_refusal(cls, gpu: GpuInfo) -> str | None:
        """Why the installed runtime cannot start CUDA with this GPU's driver, or None (also when unknown)."""
        return cuda_runtime_refusal(gpu.driver_version, runtime_distribution(*cls.runtime_modules))

    def _create_runtime(self, trt: Any, logger: Any) -> Any:
        """The runtime object that deserialises plans (TensorRT: ``trt.Runtime(logger)``)."""
        return trt.Runtime(logger)

    def _create_context(self, engine: Any) -> Any:
        """An execution context (TensorRT-RTX passes its runtime config here)."""
        return engine.create_execution_context()

    @classmethod
    def _not_installed(cls) -> str:
        return f"TensorRT is not installed: {ROW.install} (on Jetson: JetPack's python3-libnvinfer)"

    def _check_plan(self, runtime: Any, plan: bytes) -> None:
        """A last check of the plan's bytes by the runtime itself, before deserialising (TensorRT: none)."""

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not cls._runtime_installed():
            return False, cls._not_installed()
        memories = available_implementations()
        if not memories:
            return False, (f"neither cuda-python nor pycuda is installed: {BACKENDS[cls.name].install} "
                           f"or {install_hint('pycuda')}")
        gpu = detect_gpu()
        if gpu is None:
            return False, "no CUDA GPU found (no NVIDIA driver, or no device)"
        refusal = cls.cuda_refusal(gpu)
        if refusal is not None:  # TensorRT would fail starting CUDA, and may crash the process doing so
            return False, refusal
        return True, f"{cls.title} with {gpu.describe()}, device memory through {memories[0]}"

    @classmethod
    def engine_for(cls, package: ModelPackage, precision: str, *, device: int = 0,
                   dla: bool | None = None) -> tuple[EngineRecord | None, str]:
        """The package's engine of ``precision`` that runs on this machine, or None and why not."""
        records = engine_records(package.manifest)
        if not any(r.precision == precision for r in records):
            return None, (f"the package has no {precision} TensorRT engine; build one: "
                          f"{_rebuild(package, precision)}")
        gpu = detect_gpu(device)
        record, refused = select_engine(records, precision, cls._installed_version(),
                                        None if gpu is None else gpu.compute_capability,
                                        None if gpu is None else gpu.name, dla=dla, runtime=cls.engine_runtime)
        if record is not None:
            return record, "runs here"
        return None, "; ".join(f"{r.file}: {why}" for r, why in refused) or f"no {precision} engine fits"

    def __init__(self, package: ModelPackage, precision: str, *, engine: str | None = None, device: int = 0,
                 cuda_graph_batch: int | None = None, memory: str | None = None, graph: str = MODEL_GRID) -> None:
        """Load ``engine`` (a file in the package), else the package's ``precision`` engine that fits here.

        ``cuda_graph_batch``: capture and replay a CUDA graph for that batch size (needs
        cuda-python; see ``cuda_graph`` for whether it is in use). ``memory``: force 'cuda-python' or 'pycuda'.
        ``graph``: the engines of the fused graph ("model-grid") or of its slice graph ("slice").
        """
        super().__init__(package, precision)
        if graph not in GRAPHS:
            raise InputError(f"graph={graph!r:.40} is not accepted: give one of {', '.join(GRAPHS)}")
        self.graph = graph
        self._lock = threading.Lock()
        self._memory: CudaMemory | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._tensors: dict[str, _Tensor] = {}
        self._stream = 0
        self._shapes: dict[str, tuple[int, ...]] = {}  # the input shapes the context is set to
        self._graph: Any = None
        self._graph_batch = cuda_graph_batch
        self._graph_failure: str | None = None  # set once: capture failed, graphs are off for good
        self._warm = False  # a plain run at the current input shape has finished (capture needs one)
        self._min_batch = 1
        self._max_batch: int | None = None
        self._trt = self._import_runtime()
        self.trt_version = TrtVersion.parse(self._trt.__version__)
        found = detect_gpu(device)
        if found is None:
            raise EngineError(f"the {self.title} backend needs an NVIDIA GPU, and none was found (no driver, or "
                              "no device); use the onnxruntime backend on this machine")
        self.gpu: GpuInfo = found
        refusal = self.cuda_refusal(found)
        if refusal is not None:  # before any call into TensorRT: with an old driver those can crash
            raise EngineError(f"{self.title} cannot start CUDA here: {refusal}")
        self.record = self._choose(engine)
        self._verify(self.record)
        low, high = self.record.min_batch, self.record.max_batch
        if cuda_graph_batch is not None and not low <= cuda_graph_batch <= high:
            raise EngineError(f"CUDA graph batch {cuda_graph_batch} is outside the engine's batch range "
                              f"{self.record.min_batch}..{self.record.max_batch}")
        self._memory = open_cuda_memory(memory, device)
        if cuda_graph_batch is not None and not self._memory.supports_graphs:
            raise EngineError("CUDA graphs need cuda-python; device memory here is through "
                              f"{self._memory.name}")
        try:
            with self._memory.activate():
                self._load()
        except BaseException:
            self._release()
            raise

    # -- choosing and checking the engine, before TensorRT sees it ---------------
    def _choose(self, engine: str | None) -> EngineRecord:
        records = engine_records(self.package.manifest)
        if engine is not None:
            chosen = [r for r in records if r.file == engine]
            if not chosen:
                raise EngineError(f"the package records no engine {engine!r}; it has: "
                                  f"{', '.join(r.file for r in records) or 'none'}")
            if chosen[0].runtime != self.engine_runtime:
                raise EngineError(f"engine {engine} is a {chosen[0].runtime_title} engine; the {self.name} backend "
                                  f"runs {self.title} engines (backend={chosen[0].runtime!r} runs it)")
            if chosen[0].precision != self.precision:
                raise EngineError(f"engine {engine} is {chosen[0].precision}, "
                                  f"and {self.precision} was asked for")
            if chosen[0].graph != self.graph:
                raise EngineError(f"engine {engine} was built from the {chosen[0].graph} graph, and the "
                                  f"{self.graph} graph was asked for (graph={chosen[0].graph!r} runs it)")
            ok, reason = engine_compatibility(chosen[0], self.trt_version, self.gpu.compute_capability,
                                              self.gpu.name)
            if not ok:
                raise EngineError(f"engine {engine} cannot run here: {reason}")
            return chosen[0]
        if not any(r.precision == self.precision for r in records):
            raise EngineError(f"the package has no {self.precision} TensorRT engine; build one on this "
                              f"machine: {_rebuild(self.package, self.precision)}")
        record, refused = select_engine(records, self.precision, self.trt_version,
                                        self.gpu.compute_capability, self.gpu.name, runtime=self.engine_runtime,
                                        graph=self.graph)
        if record is None:
            why = "; ".join(f"{r.file}: {reason}" for r, reason in refused)
            raise EngineError(f"no {self.precision} engine in the package runs on this machine ({why})")
        return record

    def _verify(self, record: EngineRecord) -> None:
        try:
            self.package.verify([record.file_record()])
        except LiverLesionError as exc:
            raise EngineError(f"engine {record.file} does not match its record ({exc}); rebuild it: "
                              f"{_rebuild(self.package, record.precision)}") from None

    # -- loading -----------------------------------------------------------------
    def _load(self) -> None:
        if TYPE_CHECKING:  # checked against TensorRT's API; at run time the module a subclass imports
            import tensorrt as trt
        else:
            trt = self._trt

        assert self._memory is not None
        record, memory = self.record, self._memory
        logger = trt.Logger(trt.Logger.WARNING)
        try:
            runtime: trt.Runtime | None = self._create_runtime(trt, logger)
        except (TypeError, RuntimeError) as exc:  # pybind's answer to a null runtime from TensorRT
            runtime, failure = None, f": {exc}"
        else:
            failure = ""
        if runtime is None:
            raise EngineError(f"TensorRT could not create its runtime{failure} (see its log above). Usually CUDA "
                              "did not start: cudaError 35 means the NVIDIA driver is older than the CUDA this "
                              "TensorRT was built for; update the NVIDIA driver or install the tensorrt-cuXX "
                              "wheel matching it")
        self._runtime = runtime
        if record.version_compatible:
            runtime.engine_host_code_allowed = True  # the plan carries a lean runtime; its sha256 was checked
        plan = self.package.path(record.file).read_bytes()
        if hashlib.sha256(plan).hexdigest() != record.sha256:  # the bytes handed over, not the file checked before
            raise EngineError(f"engine {record.file} changed while it was being loaded; rebuild it: "
                              f"{_rebuild(self.package, record.precision)}")
        self._check_plan(runtime, plan)
        self._engine = engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise EngineError(f"{self.title} could not deserialise {record.file} (see its log above); rebuild "
                              f"it: {_rebuild(self.package, record.precision)}")
        self._context = context = self._create_context(engine)
        if context is None:
            raise EngineError(f"{self.title} could not create an execution context for {record.file} (see its "
                              "log above; out of GPU memory?): free the GPU memory other processes hold, or "
                              "build an engine with a smaller maximum batch (build-engine --max-batch)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        highs = self._check_inputs(engine, inputs)
        for name, high in highs.items():  # every buffer sized for the largest shapes the profile admits
            if not context.set_input_shape(name, high):
                raise EngineError(f"{self.title} refused input shape {high} of {name!r} for {record.file}")
        self._shapes = highs
        self._stream = memory.create_stream()
        for name in names:
            shape = _dims(context.get_tensor_shape(name))
            if any(d < 0 for d in shape) or shape[0] != self._max_batch:
                raise EngineError(f"engine output {name!r} has shape {shape}; outputs must be batch-first "
                                  "with static dimensions")
            host = memory.pinned_empty(shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            device = memory.device_alloc(max(host.nbytes, 1))
            if not context.set_tensor_address(name, device):
                raise EngineError(f"{self.title} refused the address of tensor {name!r}")
            self._tensors[name] = _Tensor(name, name in inputs, host, device)

    def _check_inputs(self, engine: Any, inputs: list[str]) -> dict[str, tuple[int, ...]]:
        """The largest shape of each input, once the engine's inputs are checked against the graph asked for."""
        record = self.record
        if self.graph == SLICE:
            if sorted(inputs) != sorted(SLICE_FEEDS):
                raise EngineError(f"engine {record.file} takes inputs {inputs}; a slice-graph engine takes "
                                  f"{sorted(SLICE_FEEDS)}")
        else:
            spec = self.input_metadata()
            if inputs != [spec.name]:
                raise EngineError(f"engine {record.file} takes inputs {inputs}, the package's graph takes "
                                  f"[{spec.name!r}]")
        profiles = {name: [_dims(s) for s in engine.get_tensor_profile_shape(name, 0)] for name in inputs}
        main = "pixels" if self.graph == SLICE else self.input_metadata().name
        low, _, high = profiles[main]
        if self.graph != SLICE and high[1:] != self.input_metadata().shape[1:]:
            raise EngineError(f"engine {record.file} was built for input {high[1:]}, the package's grid is "
                              f"{self.input_metadata().shape[1:]}; rebuild it: "
                              f"{_rebuild(self.package, record.precision)}")
        if any(p[0][0] != low[0] or p[2][0] != high[0] for p in profiles.values()):
            raise EngineError(f"engine {record.file}'s inputs have different batch ranges; rebuild it")
        self._min_batch, self._max_batch = low[0], high[0]
        return {name: p[2] for name, p in profiles.items()}

    @property
    def device(self) -> str:
        dla = f", DLA core {self.record.dla_core}" if self.record.dla_core is not None else ""
        return f"{self.gpu.describe()}, {self.title} {self.trt_version}{dla}"

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    @property
    def cuda_graph(self) -> CudaGraphState:
        """Whether CUDA graphs are in use, and why (or why not)."""
        batch = self._graph_batch
        if batch is None:
            return CudaGraphState(None, GRAPH_OFF, "not asked for (cuda_graph_batch=None)")
        if self._graph_failure is not None:
            return CudaGraphState(batch, GRAPH_FAILED, f"plain execution from now on: {self._graph_failure}")
        if self._graph is not None:
            return CudaGraphState(batch, GRAPH_CAPTURED, f"a graph is replayed for batches of {batch}")
        return CudaGraphState(batch, GRAPH_WAITING, f"captured after the next plain run of a batch of {batch}")

    # -- running -------------------------------------------------------------------
    def _enqueue(self, batch: int) -> bool:
        """Queue the network on the stream, through the CUDA graph when there is one; True when run plainly."""
        context, memory = self._context, self._memory
        assert context is not None and memory is not None
        # trtexec's order: capture only after a plain, synchronised run at this shape (see _run).
        if self._graph is None and self._warm and batch == self._graph_batch and self._graph_failure is None:
            self._graph = self._capture()
        if self._graph is not None:
            memory.launch_graph(self._graph, self._stream)
            return False
        if not context.execute_async_v3(self._stream):
            raise EngineError(f"{self.title} failed to enqueue the engine (see its log above)")
        return True

    def _capture(self) -> Any:
        """One enqueue captured as a CUDA graph; None when that fails, which turns graphs off for good."""
        context, memory, stream = self._context, self._memory, self._stream
        assert context is not None and memory is not None
        try:
            memory.begin_capture(stream)
        except Exception as exc:  # noqa: BLE001 - any capture failure means: run plainly
            self._graphs_off(f"the stream capture did not start: {exc}")
            return None
        failure = None
        try:
            if not context.execute_async_v3(stream):
                failure = "TensorRT's enqueue failed while being captured (see its log above)"
        except Exception as exc:  # noqa: BLE001
            failure = f"TensorRT's enqueue raised while being captured: {exc}"
        except BaseException:
            with contextlib.suppress(Exception):  # leave capture mode, then let the interrupt through
                memory.destroy_graph(memory.end_capture(stream))
            raise
        try:
            graph = memory.end_capture(stream)  # always: the stream must leave capture mode
        except Exception as exc:  # noqa: BLE001
            self._graphs_off(failure or f"the captured graph could not be made: {exc}")
            return None
        if failure is not None:
            with contextlib.suppress(Exception):  # the enqueue's failure is the reason worth keeping
                memory.destroy_graph(graph)
            self._graphs_off(failure)
            return None
        return graph

    def _graphs_off(self, reason: str) -> None:
        """Run plainly for the rest of the backend's life, and say so (once: nothing captures after this)."""
        self._graph_failure = reason
        log.warning("CUDA graph capture failed for %s: %s; running without CUDA graphs from now on",
                    self.record.file, reason)

    def _drop_graph(self) -> None:
        """Destroy the captured graph: it holds one input shape."""
        graph, self._graph = self._graph, None
        if graph is not None and self._memory is not None:
            self._memory.destroy_graph(graph)

    def model_file(self) -> tuple[str, int]:
        return self.record.file, self.package.path(self.record.file).stat().st_size

    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        return self._execute({self.input_metadata().name: hu})

    def _run_slices(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._execute(feeds)

    def _execute(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on ``feeds`` (input name -> batch-first array, one batch size), its outputs by name."""
        count = next(iter(feeds.values())).shape[0]
        batch = max(count, self._min_batch)  # static (e.g. DLA) profiles: pad up to the profile's batch
        shapes = {name: (batch, *value.shape[1:]) for name, value in feeds.items()}
        with self._lock:
            context, memory = self._context, self._memory
            if context is None or memory is None:
                raise EngineError(f"the {self.title} backend was released")
            with memory.activate():
                if shapes != self._shapes:  # a captured graph holds one set of shapes
                    self._warm = False
                    self._drop_graph()
                    for name, shape in shapes.items():
                        if not context.set_input_shape(name, shape):
                            raise EngineError(f"{self.title} refused input {name!r} of shape {shape} (batch "
                                              f"{batch}); the engine's profile bounds it")
                    self._shapes = shapes
                for name, value in feeds.items():
                    tensor = self._tensors[name]
                    staged = _view(tensor.host, shapes[name])
                    staged[:count] = value
                    staged[count:] = 0
                    memory.copy_htod_async(tensor.device, staged, self._stream)
                ran_plainly = self._enqueue(batch)
                outputs = [t for t in self._tensors.values() if not t.is_input]
                results = {t.name: _view(t.host, _dims(context.get_tensor_shape(t.name))) for t in outputs}
                for tensor in outputs:
                    memory.copy_dtoh_async(results[tensor.name], tensor.device, self._stream)
                memory.synchronize(self._stream)
                self._warm = self._warm or ran_plainly
                # Copies: the pinned buffers are reused by the next call.
                return {name: staged[:count].copy() for name, staged in results.items()}

    def _release(self) -> None:
        with self._lock:
            self._context = None  # context before engine before runtime, as TensorRT requires
            self._engine = None
            self._runtime = None
            self._tensors = {}
            self._graph = None
            memory, self._memory = self._memory, None
            if memory is not None:
                memory.close()
