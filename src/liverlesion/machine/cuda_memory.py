"""Device memory, pinned host memory, streams and CUDA graphs for TensorRT, through one small API.

Two implementations, whichever is installed: cuda-python (``cuda.bindings.runtime``,
or ``cuda.cudart`` from cuda-python 12 and older), which NVIDIA's current samples
use, and pycuda, present on many JetPack installs. Both work on the CUDA primary
context, the one TensorRT and torch use, so they mix safely with them (a pycuda
``autoinit`` context would not). Pointers and stream handles are plain ints, as
TensorRT's ``set_tensor_address`` and ``execute_async_v3`` take them.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import importlib
import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from ..errors import BackendError, MissingDependencyError, install_hint

IMPLEMENTATIONS = ("cuda-python", "pycuda")
_EXTRAS = {"cuda-python": "tensorrt", "pycuda": "pycuda"}


class CudaMemory(abc.ABC):
    """Allocations on one CUDA device; ``close`` releases everything it made.

    Call the other methods inside ``with memory.activate():`` (pycuda needs its context
    pushed on the calling thread; cuda-python needs the device selected).
    """

    name: ClassVar[str] = "base"
    #: Whether stream capture into CUDA graphs is available.
    supports_graphs: ClassVar[bool] = False

    def __init__(self, device: int = 0) -> None:
        self.device = device

    @contextlib.contextmanager
    def activate(self) -> Iterator[CudaMemory]:
        """Make this device (its primary context) current on the calling thread."""
        yield self

    @abc.abstractmethod
    def device_alloc(self, nbytes: int) -> int:
        """Device memory of ``nbytes``; returns its address."""

    @abc.abstractmethod
    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A page-locked host array (fast, truly asynchronous copies)."""

    @abc.abstractmethod
    def create_stream(self) -> int:
        """A new CUDA stream; returns its handle."""

    @abc.abstractmethod
    def copy_htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        """Copy ``src`` (contiguous, pinned for real asynchrony) to device address ``dst`` on ``stream``."""

    @abc.abstractmethod
    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        """Copy ``dst.nbytes`` from device address ``src`` into ``dst`` on ``stream``."""

    @abc.abstractmethod
    def synchronize(self, stream: int) -> None:
        """Wait until everything queued on ``stream`` has finished."""

    def begin_capture(self, stream: int) -> None:
        """Start capturing the work queued on ``stream`` (nothing runs until the graph is launched)."""
        raise BackendError(f"CUDA graph capture is not available with {self.name}; install cuda-python")

    def end_capture(self, stream: int) -> Any:
        """End capture (always, even when it fails); returns an instantiated graph for :meth:`launch_graph`.

        On failure nothing of the capture is left allocated and the error says why.
        """
        raise BackendError(f"CUDA graph capture is not available with {self.name}; install cuda-python")

    def launch_graph(self, graph: Any, stream: int) -> None:
        """Queue a graph from :meth:`end_capture` on ``stream``."""
        raise BackendError(f"CUDA graph capture is not available with {self.name}; install cuda-python")

    def destroy_graph(self, graph: Any) -> None:
        """Free a graph from :meth:`end_capture` now, rather than at :meth:`free_all`."""
        raise BackendError(f"CUDA graph capture is not available with {self.name}; install cuda-python")

    @abc.abstractmethod
    def free_all(self) -> None:
        """Release every allocation, stream and graph made through this object."""

    def close(self) -> None:
        with self.activate():
            self.free_all()


class CudaPythonMemory(CudaMemory):
    """cuda-python's runtime bindings: every call returns (error, *results)."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self, runtime: Any, device: int = 0) -> None:
        super().__init__(device)
        self._rt = runtime
        self._device_ptrs: list[int] = []
        self._host_ptrs: list[int] = []
        self._streams: dict[int, Any] = {}
        self._graphs: list[tuple[Any, Any]] = []
        self._call("cudaSetDevice", device)

    def _call(self, name: str, *args: Any) -> Any:
        result = getattr(self._rt, name)(*args)
        error, rest = result[0], result[1:]
        if int(error) != 0:
            _, text = self._rt.cudaGetErrorString(error)
            raise BackendError(f"CUDA {name} failed: {text.decode() if isinstance(text, bytes) else text} "
                               f"({int(error)})")
        return rest[0] if len(rest) == 1 else (rest or None)

    @contextlib.contextmanager
    def activate(self) -> Iterator[CudaMemory]:
        self._call("cudaSetDevice", self.device)  # the runtime then uses the device's primary context
        yield self

    def device_alloc(self, nbytes: int) -> int:
        ptr = int(self._call("cudaMalloc", int(nbytes)))
        self._device_ptrs.append(ptr)
        return ptr

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        ptr = int(self._call("cudaMallocHost", nbytes))
        self._host_ptrs.append(ptr)
        raw = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(ptr))
        return raw[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)

    def create_stream(self) -> int:
        stream = self._call("cudaStreamCreate")
        handle = int(stream)
        self._streams[handle] = stream
        return handle

    def copy_htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call("cudaMemcpyAsync", dst, src.ctypes.data, src.nbytes, kind, stream)

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call("cudaMemcpyAsync", dst.ctypes.data, src, dst.nbytes, kind, stream)

    def synchronize(self, stream: int) -> None:
        self._call("cudaStreamSynchronize", stream)

    def begin_capture(self, stream: int) -> None:
        # Thread-local mode: other threads' CUDA work (torch, another model) is not disturbed.
        self._call("cudaStreamBeginCapture", stream,
                   self._rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)

    def end_capture(self, stream: int) -> Any:
        # cudaStreamEndCapture leaves capture mode even when it fails (an invalidated capture).
        graph = self._call("cudaStreamEndCapture", stream)
        try:
            executable = self._call("cudaGraphInstantiateWithFlags", graph, 0)
        except BackendError:
            with contextlib.suppress(BackendError):  # the instantiation error is the one worth reporting
                self._call("cudaGraphDestroy", graph)
            raise
        self._graphs.append((graph, executable))
        return executable

    def launch_graph(self, graph: Any, stream: int) -> None:
        self._call("cudaGraphLaunch", graph, stream)

    def destroy_graph(self, graph: Any) -> None:
        pairs = [pair for pair in self._graphs if pair[1] is graph]
        self._graphs = [pair for pair in self._graphs if pair[1] is not graph]
        errors = []
        for template, executable in pairs:
            for name, item in (("cudaGraphExecDestroy", executable), ("cudaGraphDestroy", template)):
                try:
                    self._call(name, item)
                except BackendError as exc:  # still destroy the other half
                    errors.append(str(exc))
        if errors:
            raise BackendError("; ".join(errors))

    def free_all(self) -> None:
        errors = []
        for name, items in (("cudaGraphExecDestroy", [g[1] for g in self._graphs]),
                            ("cudaGraphDestroy", [g[0] for g in self._graphs]),
                            ("cudaStreamDestroy", list(self._streams.values())),
                            ("cudaFree", self._device_ptrs), ("cudaFreeHost", self._host_ptrs)):
            for item in items:
                try:
                    self._call(name, item)
                except BackendError as exc:  # keep freeing the rest
                    errors.append(str(exc))
        self._graphs, self._streams, self._device_ptrs, self._host_ptrs = [], {}, [], []
        if errors:
            raise BackendError("; ".join(errors))


class PyCudaMemory(CudaMemory):
    """pycuda on the device's retained primary context, pushed only while in use."""

    name = "pycuda"

    def __init__(self, driver: Any, device: int = 0) -> None:
        super().__init__(device)
        self._drv = driver
        driver.init()
        self._context: Any = driver.Device(device).retain_primary_context()
        self._keep: list[Any] = []
        self._streams: dict[int, Any] = {}

    @contextlib.contextmanager
    def activate(self) -> Iterator[CudaMemory]:
        if self._context is None:
            raise BackendError("this pycuda device memory was closed")
        self._context.push()
        try:
            yield self
        finally:
            self._drv.Context.pop()

    def device_alloc(self, nbytes: int) -> int:
        allocation = self._drv.mem_alloc(int(nbytes))
        self._keep.append(allocation)
        return int(allocation)

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        array: np.ndarray = self._drv.pagelocked_empty(shape, dtype)
        self._keep.append(array)
        return array

    def create_stream(self) -> int:
        stream = self._drv.Stream()
        self._streams[int(stream.handle)] = stream
        return int(stream.handle)

    def copy_htod_async(self, dst: int, src: np.ndarray, stream: int) -> None:
        self._drv.memcpy_htod_async(dst, src, self._streams[stream])

    def copy_dtoh_async(self, dst: np.ndarray, src: int, stream: int) -> None:
        self._drv.memcpy_dtoh_async(dst, src, self._streams[stream])

    def synchronize(self, stream: int) -> None:
        self._streams[stream].synchronize()

    def free_all(self) -> None:
        for item in self._keep:
            release = getattr(item, "free", None) or getattr(getattr(item, "base", None), "free", None)
            if callable(release):
                release()
        self._keep, self._streams = [], {}

    def close(self) -> None:
        """Free everything, then release the retained primary context (once; later calls do nothing)."""
        if self._context is None:
            return
        try:
            super().close()
        finally:
            # pycuda's detach pushes the context itself when needed, and must not see it current.
            context, self._context = self._context, None
            context.detach()


def _cuda_python_runtime() -> Any | None:
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError:
        pass
    try:
        with warnings.catch_warnings():  # cuda-python 12.x: cuda.cudart still works, with a FutureWarning
            warnings.simplefilter("ignore", FutureWarning)
            return importlib.import_module("cuda.cudart")
    except ImportError:
        return None


def _pycuda_driver() -> Any | None:
    try:
        return importlib.import_module("pycuda.driver")
    except ImportError:
        return None


def available_implementations() -> list[str]:
    """Which of cuda-python / pycuda can be imported here (no CUDA call is made)."""
    found = []
    if _cuda_python_runtime() is not None:
        found.append("cuda-python")
    if _pycuda_driver() is not None:
        found.append("pycuda")
    return found


def open_cuda_memory(prefer: str | None = None, device: int = 0) -> CudaMemory:
    """CUDA memory through cuda-python, else pycuda (or only ``prefer``); the error names the extras."""
    if prefer is not None and prefer not in IMPLEMENTATIONS:
        raise BackendError(f"unknown CUDA memory implementation {prefer!r}; accepted: "
                           f"{', '.join(IMPLEMENTATIONS)}")
    for name in [prefer] if prefer else IMPLEMENTATIONS:
        if name == "cuda-python":
            runtime = _cuda_python_runtime()
            if runtime is not None:
                return CudaPythonMemory(runtime, device)
        elif name == "pycuda":
            driver = _pycuda_driver()
            if driver is not None:
                return PyCudaMemory(driver, device)
    if prefer:
        raise MissingDependencyError(f"CUDA memory through {prefer} was asked for, and {prefer} is not "
                                     f"installed: {install_hint(_EXTRAS[prefer])}")
    raise MissingDependencyError(
        "TensorRT inference needs cuda-python or pycuda for device memory, and neither is installed: "
        f"{install_hint('tensorrt')} (cuda-python), or {install_hint('pycuda')} (pycuda, which compiles "
        "where a CUDA toolkit is installed, e.g. JetPack)")
