"""Device and pinned memory for TensorRT (liverlesion.machine.cuda_memory), against fake CUDA libraries."""

from __future__ import annotations

import ctypes
import types

import numpy as np
import pytest

from liverlesion.errors import BackendError, MissingDependencyError
from liverlesion.machine import cuda_memory
from liverlesion.machine.cuda_memory import CudaPythonMemory, PyCudaMemory, open_cuda_memory


def test_neither_memory_library_names_both_extras(monkeypatch):
    monkeypatch.setattr(cuda_memory, "_cuda_python_runtime", lambda: None)
    monkeypatch.setattr(cuda_memory, "_pycuda_driver", lambda: None)
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[tensorrt\].*liverlesion\[pycuda\]"):
        open_cuda_memory()
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[pycuda\]"):
        open_cuda_memory("pycuda")
    with pytest.raises(BackendError, match="accepted"):
        open_cuda_memory("cupy")


class FakeCudaRuntime:
    """cuda-python's calling convention: (error, *results); host memory is real, device memory fails."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    def __init__(self):
        self.keep, self.copies = [], []

    def cudaSetDevice(self, device):
        return (0,)

    def cudaMallocHost(self, size):
        buffer = (ctypes.c_uint8 * size)()
        self.keep.append(buffer)
        return (0, ctypes.addressof(buffer))

    def cudaMalloc(self, size):
        return (2, 0)

    def cudaGetErrorString(self, error):
        return (0, b"out of memory")

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):
        self.copies.append((dst, src, count, kind, stream))
        return (0,)

    def cudaFreeHost(self, ptr):
        return (0,)


def test_cuda_python_memory_pins_host_arrays_and_reports_errors():
    runtime = FakeCudaRuntime()
    memory = CudaPythonMemory(runtime)
    pinned = memory.pinned_empty((4, 1, 3, 5), np.float32)
    assert pinned.shape == (4, 1, 3, 5) and pinned.dtype == np.float32
    assert pinned.ctypes.data == ctypes.addressof(runtime.keep[0])  # the array is the pinned allocation
    pinned[:] = 1.5
    assert np.frombuffer(runtime.keep[0], np.float32).tolist() == [1.5] * 60
    memory.copy_htod_async(0xABC, pinned[:2], 9)
    assert runtime.copies[-1] == (0xABC, pinned.ctypes.data, 2 * 15 * 4, 1, 9)
    memory.copy_dtoh_async(pinned[1:3], 0xDEF, 9)
    assert runtime.copies[-1] == (pinned.ctypes.data + 15 * 4, 0xDEF, 2 * 15 * 4, 2, 9)
    with pytest.raises(BackendError, match="cudaMalloc failed: out of memory"):
        memory.device_alloc(1024)
    memory.close()


def test_pycuda_memory_pushes_and_pops_the_primary_context():
    events = []
    context = types.SimpleNamespace(push=lambda: events.append("push"))
    driver = types.SimpleNamespace(
        init=lambda: events.append("init"),
        Device=lambda index: types.SimpleNamespace(retain_primary_context=lambda: context),
        Context=types.SimpleNamespace(pop=lambda: events.append("pop")))
    memory = PyCudaMemory(driver)
    with pytest.raises(RuntimeError), memory.activate():
        raise RuntimeError("work failed")
    assert events == ["init", "push", "pop"]
    assert not memory.supports_graphs
    with pytest.raises(BackendError, match="cuda-python"):
        memory.begin_capture(0)


class FakeGraphRuntime(FakeCudaRuntime):
    """Adds stream capture: ``instantiate_error`` makes cudaGraphInstantiateWithFlags fail with that code."""

    def __init__(self, instantiate_error=0):
        super().__init__()
        self.instantiate_error, self.calls, self.made = instantiate_error, [], 0

    def cudaStreamEndCapture(self, stream):
        self.made += 1
        self.calls.append(("end", stream))
        return (0, f"graph{self.made}")

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        return (self.instantiate_error, None if self.instantiate_error else f"exec-of-{graph}")

    def cudaGraphDestroy(self, graph):
        self.calls.append(("destroy", graph))
        return (0,)

    def cudaGraphExecDestroy(self, executable):
        self.calls.append(("exec-destroy", executable))
        return (0,)


def test_cuda_python_graph_that_fails_to_instantiate_is_destroyed():
    runtime = FakeGraphRuntime(instantiate_error=2)
    memory = CudaPythonMemory(runtime)
    with pytest.raises(BackendError, match="cudaGraphInstantiateWithFlags failed"):
        memory.end_capture(3)
    assert runtime.calls == [("end", 3), ("destroy", "graph1")]
    memory.close()
    assert runtime.calls.count(("destroy", "graph1")) == 1  # not destroyed a second time at close


def test_cuda_python_destroys_a_graph_once_when_asked():
    runtime = FakeGraphRuntime()
    memory = CudaPythonMemory(runtime)
    first, second = memory.end_capture(3), memory.end_capture(3)
    memory.destroy_graph(first)
    assert runtime.calls[-2:] == [("exec-destroy", "exec-of-graph1"), ("destroy", "graph1")]
    memory.close()  # only the graph still held is destroyed here
    assert runtime.calls[-2:] == [("exec-destroy", second), ("destroy", "graph2")]
    assert runtime.calls.count(("destroy", "graph1")) == 1


def _pycuda_driver(events):
    """A pycuda.driver stand-in whose allocations and primary context record what happens to them."""
    context = types.SimpleNamespace(push=lambda: events.append("push"), detach=lambda: events.append("detach"))

    class Allocation:
        def __int__(self):
            return 0x100

        def free(self):
            events.append("free")

    return types.SimpleNamespace(
        init=lambda: events.append("init"),
        Device=lambda index: types.SimpleNamespace(retain_primary_context=lambda: context),
        Context=types.SimpleNamespace(pop=lambda: events.append("pop")),
        mem_alloc=lambda nbytes: Allocation())


def test_pycuda_close_frees_then_releases_the_primary_context_once():
    events = []
    memory = PyCudaMemory(_pycuda_driver(events))
    with memory.activate():
        memory.device_alloc(64)
    memory.close()
    memory.close()
    assert events == ["init", "push", "pop", "push", "free", "pop", "detach"]
    with pytest.raises(BackendError, match="closed"), memory.activate():
        pass
