"""The TensorRT backend: runs the package's engine built for this GPU and TensorRT version.

Before anything is deserialised the engine record is checked (TensorRT version,
GPU compute capability, sha256 of the plan): a mismatch is an EngineError that
says to rebuild, never a crash inside TensorRT. The engine is deserialised once;
tensors are bound by name (``set_tensor_address`` / ``set_input_shape`` /
``execute_async_v3``, the API from TensorRT 8.5 through 11.x), device buffers and
pinned host buffers are allocated once for the profile's largest batch, and work
runs on the backend's own CUDA stream, optionally replayed as a CUDA graph.

Thread safety: one execution context behind a lock. The model is small and a
Jetson GPU is busy with one slice anyway, while every extra context costs its own
activation memory, which 8 GB Orin modules share with the CPU.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..engine_tags import TrtVersion
from ..engines.records import EngineRecord, engine_compatibility, engine_records, select_engine
from ..engines.versions import import_tensorrt, installed_tensorrt_version
from ..errors import BackendError, EngineError, LiverLesionError, install_hint
from ..machine.cuda_memory import CudaMemory, available_implementations, open_cuda_memory
from ..machine.gpu import GpuInfo, detect_gpu
from ..machine.probe import Machine
from ..machine.runtimes import tensorrt_installed
from ..package import Manifest, ModelPackage, load_package
from ..package.accuracy import GPU_INT8_FORM, auto_precisions, precision_files
from ..package.digest import pinned_onnx
from .base import Backend
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


def _dims(dims: Any) -> tuple[int, ...]:
    """A TensorRT Dims as a tuple of ints."""
    return tuple(int(dims[i]) for i in range(len(dims)))


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


def candidates(manifest: Manifest, machine: Machine, request: Request) -> Candidates:
    """The package's engines that run on this GPU and TensorRT (or builds, with ``build_engine``), fastest first."""
    ok, why = machine.tensorrt_backend
    if not ok:
        return Candidates([], why)
    device = f"GPU {machine.gpu_name}"
    notes: dict[str, str] = {}
    wanted = list(request.precisions) if request.precisions is not None else auto_precisions(
        manifest, PRECISION_ORDER, notes, GPU_INT8_FORM)
    records, left_out = _engines(manifest, request.pinned, request.trust_device_builds)
    # a pinned build calibrates anew: calibration caches are device-built like engines
    build_options = {"build": True} if not request.untrusted else {"build": True, "reuse_calibration_cache": False}
    choices, refused = [], []
    for precision in wanted:
        record, rejected = select_engine(records, precision, machine.tensorrt_version,
                                         machine.compute_capability, machine.gpu_name)
        if record is not None:
            why = f"engine {record.file} was built for this GPU and TensorRT {record.tensorrt}"
            choices.append(Choice("tensorrt", precision, {"engine": record.file}, device, why))
        elif request.build_engine and precision in precision_files(manifest):
            why = f"no usable {precision} engine for this GPU, so one is built (build_engine=True)"
            choices.append(Choice("tensorrt", precision, dict(build_options), device, why))
        else:
            rejected = [*((r, w) for r, w in left_out if r.precision == precision), *rejected]
            reasons = "; ".join(f"{r.file}: {w}" for r, w in rejected)
            refused.append(f"{precision}: {reasons or f'the package has no {precision} engine'}")
    if choices:
        return Candidates(choices, choices[0].reason, notes, gpu=True)
    hint = " (pass build_engine=True, or run liverlesion build-engine, to build one here)"
    return Candidates([], f"no engine in the package runs here: {'; '.join(refused) or 'no precision qualifies'}"
                      f"{hint}", notes, gpu=True)


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

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        if not tensorrt_installed():
            return False, (f"TensorRT is not installed: {ROW.install} (on Jetson: "
                           "JetPack's python3-libnvinfer)")
        memories = available_implementations()
        if not memories:
            return False, (f"neither cuda-python nor pycuda is installed: {ROW.install} "
                           f"or {install_hint('pycuda')}")
        gpu = detect_gpu()
        if gpu is None:
            return False, "no CUDA GPU found (no NVIDIA driver, or no device)"
        return True, f"TensorRT with {gpu.describe()}, device memory through {memories[0]}"

    @classmethod
    def engine_for(cls, package: ModelPackage, precision: str, *, device: int = 0,
                   dla: bool | None = None) -> tuple[EngineRecord | None, str]:
        """The package's engine of ``precision`` that runs on this machine, or None and why not."""
        records = engine_records(package.manifest)
        if not any(r.precision == precision for r in records):
            return None, (f"the package has no {precision} TensorRT engine; build one: "
                          f"{_rebuild(package, precision)}")
        gpu = detect_gpu(device)
        record, refused = select_engine(records, precision, installed_tensorrt_version(),
                                        None if gpu is None else gpu.compute_capability,
                                        None if gpu is None else gpu.name, dla=dla)
        if record is not None:
            return record, "runs here"
        return None, "; ".join(f"{r.file}: {why}" for r, why in refused) or f"no {precision} engine fits"

    def __init__(self, package: ModelPackage, precision: str, *, engine: str | None = None, device: int = 0,
                 cuda_graph_batch: int | None = None, memory: str | None = None) -> None:
        """Load ``engine`` (a file in the package), else the package's ``precision`` engine that fits here.

        ``cuda_graph_batch``: capture and replay a CUDA graph for that batch size (needs
        cuda-python). ``memory``: force 'cuda-python' or 'pycuda'.
        """
        super().__init__(package, precision)
        self._lock = threading.Lock()
        self._memory: CudaMemory | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._tensors: dict[str, _Tensor] = {}
        self._stream = 0
        self._batch = 0
        self._graph: Any = None
        self._graph_batch = cuda_graph_batch
        self._min_batch = 1
        self._max_batch: int | None = None
        import_tensorrt()
        import tensorrt as trt

        self.trt_version = TrtVersion.parse(trt.__version__)
        found = detect_gpu(device)
        if found is None:
            raise EngineError("the TensorRT backend needs an NVIDIA GPU, and none was found (no driver, or "
                              "no device); use the onnxruntime backend on this machine")
        self.gpu: GpuInfo = found
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
            if chosen[0].precision != self.precision:
                raise EngineError(f"engine {engine} is {chosen[0].precision}, "
                                  f"and {self.precision} was asked for")
            ok, reason = engine_compatibility(chosen[0], self.trt_version, self.gpu.compute_capability,
                                              self.gpu.name)
            if not ok:
                raise EngineError(f"engine {engine} cannot run here: {reason}")
            return chosen[0]
        if not any(r.precision == self.precision for r in records):
            raise EngineError(f"the package has no {self.precision} TensorRT engine; build one on this "
                              f"machine: {_rebuild(self.package, self.precision)}")
        record, refused = select_engine(records, self.precision, self.trt_version,
                                        self.gpu.compute_capability, self.gpu.name)
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
        import tensorrt as trt

        assert self._memory is not None
        record, memory = self.record, self._memory
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = runtime = trt.Runtime(logger)
        if record.version_compatible:
            runtime.engine_host_code_allowed = True  # the plan carries a lean runtime; its sha256 was checked
        self._engine = engine = runtime.deserialize_cuda_engine(self.package.path(record.file).read_bytes())
        if engine is None:
            raise EngineError(f"TensorRT could not deserialise {record.file} (see its log above); rebuild "
                              f"it: {_rebuild(self.package, record.precision)}")
        self._context = context = engine.create_execution_context()
        if context is None:
            raise EngineError(f"TensorRT could not create an execution context for {record.file} "
                              "(out of GPU memory?)")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        spec = self.input_metadata()
        if inputs != [spec.name]:
            raise EngineError(f"engine {record.file} takes inputs {inputs}, the package's graph takes "
                              f"[{spec.name!r}]")
        low, _, high = (_dims(s) for s in engine.get_tensor_profile_shape(spec.name, 0))
        if high[1:] != spec.shape[1:]:
            raise EngineError(f"engine {record.file} was built for input {high[1:]}, the package's grid is "
                              f"{spec.shape[1:]}; rebuild it: {_rebuild(self.package, record.precision)}")
        self._min_batch, self._max_batch = low[0], high[0]
        if not context.set_input_shape(spec.name, high):
            raise EngineError(f"TensorRT refused input shape {high} for {record.file}")
        self._batch = high[0]
        self._stream = memory.create_stream()
        for name in names:
            shape = _dims(context.get_tensor_shape(name))
            if any(d < 0 for d in shape) or shape[0] != high[0]:
                raise EngineError(f"engine output {name!r} has shape {shape}; outputs must be batch-first "
                                  "with static dimensions")
            host = memory.pinned_empty(shape, np.dtype(trt.nptype(engine.get_tensor_dtype(name))))
            device = memory.device_alloc(max(host.nbytes, 1))
            if not context.set_tensor_address(name, device):
                raise EngineError(f"TensorRT refused the address of tensor {name!r}")
            self._tensors[name] = _Tensor(name, name in inputs, host, device)

    @property
    def device(self) -> str:
        dla = f", DLA core {self.record.dla_core}" if self.record.dla_core is not None else ""
        return f"{self.gpu.describe()}, TensorRT {self.trt_version}{dla}"

    @property
    def max_batch(self) -> int | None:
        return self._max_batch

    # -- running -------------------------------------------------------------------
    def _enqueue(self, batch: int, shape_changed: bool) -> None:
        """Queue the network on the stream: plainly, or through the captured CUDA graph."""
        context, memory = self._context, self._memory
        assert context is not None and memory is not None
        # After a shape change TensorRT must run once uncaptured before a graph can replay it.
        if self._graph_batch != batch or shape_changed:
            if not context.execute_async_v3(self._stream):
                raise EngineError("TensorRT failed to enqueue the engine (see its log above)")
            return
        if self._graph is None:
            memory.begin_capture(self._stream)
            try:
                ok = context.execute_async_v3(self._stream)
            finally:
                graph = memory.end_capture(self._stream)
            if not ok:
                raise EngineError("TensorRT failed to enqueue the engine while capturing a CUDA graph")
            self._graph = graph
        memory.launch_graph(self._graph, self._stream)

    def model_file(self) -> tuple[str, int]:
        return self.record.file, self.package.path(self.record.file).stat().st_size

    def _run(self, hu: np.ndarray) -> dict[str, np.ndarray]:
        count = hu.shape[0]
        batch = max(count, self._min_batch)  # static (e.g. DLA) profiles: pad up to the profile's batch
        with self._lock:
            context, memory = self._context, self._memory
            if context is None or memory is None:
                raise EngineError("the TensorRT backend was released")
            spec_name = self.input_metadata().name
            with memory.activate():
                shape_changed = batch != self._batch
                if shape_changed:
                    if not context.set_input_shape(spec_name, (batch, *hu.shape[1:])):
                        raise EngineError(f"TensorRT refused a batch of {batch}")
                    self._batch = batch
                staged = self._tensors[spec_name].host[:batch]
                staged[:count] = hu
                staged[count:] = 0.0
                memory.copy_htod_async(self._tensors[spec_name].device, staged, self._stream)
                self._enqueue(batch, shape_changed)
                outputs = [t for t in self._tensors.values() if not t.is_input]
                for tensor in outputs:
                    memory.copy_dtoh_async(tensor.host[:batch], tensor.device, self._stream)
                memory.synchronize(self._stream)
                # Copies: the pinned buffers are reused by the next call.
                return {t.name: t.host[:count].copy() for t in outputs}

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
