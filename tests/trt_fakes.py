"""A fake GPU and a fake TensorRT that computes something checkable, recording what it was asked to do.

Shared by the TensorRT backend's own tests and the backend contract (tests/backends/test_backend_contract.py).
"""

from __future__ import annotations

import enum
import types
from pathlib import Path

import numpy as np

from engine_fixtures import GRID
from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.engines.records import add_engine_record, make_record
from liverlesion.errors import BackendError
from liverlesion.machine.cuda_memory import CudaMemory
from liverlesion.machine.gpu import GpuInfo
from liverlesion.package.store import read_manifest

ORIN = GpuInfo(0, "Orin", (8, 7), 8 * 2**30, integrated=True)
H, W = GRID


class FakeDevice:
    """Device memory as numpy byte buffers, plus a record of stream captures and graph launches.

    ``events`` lists, in order: 'enqueue', 'begin-capture', 'end-capture', 'launch', 'sync', 'destroy-graph'.
    ``fail``: where a capture goes wrong ('begin', 'enqueue' (TensorRT returns False while captured),
    'enqueue-invalidates' (that, and ending the capture fails too, as CUDA does for an invalidated
    capture), 'end' (the capture cannot be ended into a graph)), or None.
    """

    def __init__(self):
        self.buffers: dict[int, np.ndarray] = {}
        self.capturing: list | None = None
        self.captures = self.launches = self.enqueues = 0
        self.freed = False
        self.events: list[str] = []
        self.fail: str | None = None
        self.graphs: list[FakeGraph] = []  # every graph made, destroyed or not


class FakeGraph:
    """A captured list of operations, replayable until destroyed."""

    def __init__(self, ops):
        self.ops, self.alive = ops, True


class FakeMemory(CudaMemory):
    name = "fake"
    supports_graphs = True

    def __init__(self, device: FakeDevice):
        super().__init__(0)
        self.dev = device

    def device_alloc(self, nbytes):
        ptr = 0x10000 * (len(self.dev.buffers) + 1)
        self.dev.buffers[ptr] = np.zeros(nbytes, np.uint8)
        return ptr

    def pinned_empty(self, shape, dtype):
        return np.full(shape, 77, dtype)  # stale garbage, as real pinned memory may hold

    def create_stream(self):
        return 5

    def copy_htod_async(self, dst, src, stream):
        assert src.flags.c_contiguous
        self.dev.buffers[dst][: src.nbytes] = src.reshape(-1).view(np.uint8)

    def copy_dtoh_async(self, dst, src, stream):
        assert dst.flags.c_contiguous
        dst.reshape(-1).view(np.uint8)[:] = self.dev.buffers[src][: dst.nbytes]

    def synchronize(self, stream):
        self.dev.events.append("sync")

    def begin_capture(self, stream):
        self.dev.events.append("begin-capture")
        if self.dev.fail == "begin":
            raise BackendError("CUDA cudaStreamBeginCapture failed: operation not supported (801)")
        self.dev.capturing = []

    def end_capture(self, stream):
        self.dev.events.append("end-capture")
        ops, self.dev.capturing = self.dev.capturing, None  # capture mode ends, whatever follows
        if self.dev.fail in ("end", "enqueue-invalidates"):
            raise BackendError("CUDA cudaStreamEndCapture failed: operation failed due to a previous error "
                               "during capture (901)")
        self.dev.captures += 1
        graph = FakeGraph(ops)
        self.dev.graphs.append(graph)
        return graph

    def launch_graph(self, graph, stream):
        assert graph.alive, "a destroyed graph was launched"
        self.dev.events.append("launch")
        self.dev.launches += 1
        for op in graph.ops:
            op()

    def destroy_graph(self, graph):
        assert graph.alive, "a graph was destroyed twice"
        self.dev.events.append("destroy-graph")
        graph.alive = False

    def free_all(self):
        self.dev.freed = True


def reference(hu: np.ndarray) -> dict[str, np.ndarray]:
    """What the fake engine computes, written independently of it."""
    labels = (hu[:, 0] > 0).astype(np.int32) + 2 * (hu[:, 0] > 50).astype(np.int32)
    probabilities = np.stack([hu[:, 0] * (c + 1) for c in range(5)], axis=1).astype(np.float32)
    return {"labels": labels, "probabilities": probabilities}


class FakeContext:
    def __init__(self, engine):
        self.engine, self.batch, self.addresses, self.shape_calls = engine, None, {}, []

    def set_input_shape(self, name, shape):
        self.shape_calls.append(tuple(shape))
        in_profile = self.engine.low <= shape[0] <= self.engine.high
        if name != "hu" or not in_profile or tuple(shape[1:]) != (1, H, W):
            return False
        self.batch = shape[0]
        return True

    def get_tensor_shape(self, name):
        return {"hu": [self.batch, 1, H, W], "labels": [self.batch, H, W],
                "probabilities": [self.batch, 5, H, W]}[name]

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream):
        dev = self.engine.dev
        dev.enqueues += 1
        dev.events.append("enqueue")
        if dev.capturing is not None and dev.fail in ("enqueue", "enqueue-invalidates"):
            return False
        n = self.batch  # shapes are fixed when the work is queued (or captured)

        def compute():
            buffers = dev.buffers
            hu = buffers[self.addresses["hu"]][: n * H * W * 4].view(np.float32).reshape(n, 1, H, W)
            for name, value in reference(hu).items():
                buffers[self.addresses[name]][: value.nbytes] = value.reshape(-1).view(np.uint8)

        if dev.capturing is not None:
            dev.capturing.append(compute)
        else:
            compute()
        return True


class FakeEngine:
    num_io_tensors = 3

    def __init__(self, dev, low, high):
        self.dev, self.low, self.high = dev, low, high

    def get_tensor_name(self, index):
        return ["hu", "labels", "probabilities"][index]

    def get_tensor_mode(self, name):
        return "input" if name == "hu" else "output"

    def get_tensor_dtype(self, name):
        return np.int32 if name == "labels" else np.float32

    def get_tensor_profile_shape(self, name, profile):
        assert (name, profile) == ("hu", 0)
        return [[self.low, 1, H, W], [self.low, 1, H, W], [self.high, 1, H, W]]

    def create_execution_context(self):
        self.context = FakeContext(self)
        return self.context


def fake_tensorrt(dev: FakeDevice, version="10.3.0.30", profile=(1, 8)) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Builder = object
    trt.TensorIOMode = types.SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = lambda dtype: dtype

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False

        def deserialize_cuda_engine(self, data):
            if not bytes(data).startswith(b"FAKEPLAN"):
                return None
            dev.engine = FakeEngine(dev, *profile)
            return dev.engine

    trt.Logger, trt.Runtime = Logger, Runtime
    return trt


def add_fake_engine(root, trt="10.3.0.30", precision="fp16", cc=(8, 7), payload=b"FAKEPLAN", **options):
    options = BuildOptions(precision=precision, compute_capability=cc, **options)
    plan = plan_build(trt, options, read_manifest(root))
    path = root / plan.engine_file
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload + b"\0" * 64)
    record = make_record(root, plan.engine_file, plan.to_dict(), gpu_name="Orin", build_seconds=1.0)
    add_engine_record(root, record)
    return record


def hu_batch(n, seed=0):
    return np.random.default_rng(seed).uniform(-200, 200, (n, 1, H, W)).astype(np.float32)


def stand_in_orin(monkeypatch, device: FakeDevice) -> None:
    """This machine becomes an Orin with TensorRT 10.3.0.30 and fake device memory."""
    import sys

    from liverlesion.backends import tensorrt as trt_backend

    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(device))
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: ORIN)
    monkeypatch.setattr(trt_backend, "open_cuda_memory", lambda prefer=None, index=0: FakeMemory(device))


class Flags10(enum.IntEnum):
    """TensorRT 10's NetworkDefinitionCreationFlag."""

    EXPLICIT_BATCH = 0
    STRONGLY_TYPED = 1


class FakeBuilderTrt:
    """Records what build_engine asks of TensorRT; 'builds' a plan that names its flags."""

    def __init__(self, version, dla_cores=2):
        self.calls = []
        self.module = module = types.ModuleType("tensorrt")
        module.__version__ = version
        module.NetworkDefinitionCreationFlag = Flags10 if not version.startswith("8.") else enum.IntEnum(
            "Flags8", {"EXPLICIT_BATCH": 0})
        module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        module.ProfilingVerbosity = types.SimpleNamespace(DETAILED="DETAILED")
        module.BuilderFlag = types.SimpleNamespace(**{n: n for n in ("FP16", "INT8", "GPU_FALLBACK",
                                                                       "VERSION_COMPATIBLE")})
        module.DeviceType = types.SimpleNamespace(DLA="DLA", GPU="GPU")
        module.Dims = tuple

        class Severity(enum.IntEnum):
            ERROR, WARNING, INFO = 1, 2, 3

        class ILogger:
            def __init__(self):
                pass

        ILogger.Severity = Severity
        module.ILogger = ILogger
        module.IInt8EntropyCalibrator2 = type("IInt8EntropyCalibrator2", (), {"__init__": lambda self: None})
        module.IInt8MinMaxCalibrator = type("IInt8MinMaxCalibrator", (), {"__init__": lambda self: None})
        calls = self.calls

        class Config:
            def __init__(self):
                self.flags, self.profiles = [], []
                self.default_device_type = "GPU"

            def set_memory_pool_limit(self, pool, size):
                calls.append(("workspace", pool, size))

            def set_flag(self, flag):
                self.flags.append(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)

            def create_timing_cache(self, data):
                calls.append(("timing cache read", bytes(data)))
                return "cache"

            def set_timing_cache(self, cache, ignore_mismatch):
                return True

            def get_timing_cache(self):
                return types.SimpleNamespace(serialize=lambda: b"TIMINGS")

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile

        class Profile(dict):
            def set_shape(self, name, lo, opt, hi):
                self[name] = (lo, opt, hi)

        class Builder:
            num_DLA_cores = dla_cores

            def __init__(self, logger):
                self.logger = logger

            def create_network(self, flags):
                calls.append(("network flags", flags))
                return "network"

            def create_builder_config(self):
                self.config = Config()
                return self.config

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                calibrator = getattr(config, "int8_calibrator", None)
                if calibrator is not None and calibrator.read_calibration_cache() is None:
                    while calibrator.get_batch(["hu"]) is not None:
                        calls.append(("calibration batch",))
                    calibrator.write_calibration_cache(b"TRT-8502-EntropyCalibration2\n")
                if config.default_device_type == "DLA":
                    for line in ("---------- Layers Running on DLA ----------", "[DlaLayer] {ForeignNode[a]}",
                                 "---------- Layers Running on GPU ----------", "[GpuLayer] ARG_MAX: b"):
                        self.logger.log(Severity.INFO, line)
                calls.append(("built", tuple(config.flags), config.profiles[0]["hu"]))
                return b"PLAN " + ",".join(config.flags).encode()

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger):
                pass

            def parse_from_file(self, path):
                calls.append(("parsed", Path(path).name))
                return True

        module.Builder, module.OnnxParser = Builder, OnnxParser
