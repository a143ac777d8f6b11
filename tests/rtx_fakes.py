"""A fake TensorRT-RTX on a fake RTX GPU: the TensorRT fakes plus validity checks, runtime configs and a
runtime cache whose contents say which kernels were compiled (tests/trt_fakes.py computes the outputs)."""

from __future__ import annotations

import enum
import sys
import types

from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.engines.records import add_engine_record, make_record
from liverlesion.machine.gpu import GpuInfo
from liverlesion.package.store import read_manifest
from trt_fakes import FakeContext, FakeDevice, FakeEngine, FakeMemory, fake_tensorrt

RTX_VERSION = "1.7.1.116"
ADA = GpuInfo(0, "NVIDIA RTX 4000 Ada Generation", (8, 9), 20 * 2**30, driver_version=12090)


class EngineValidity(enum.IntEnum):
    VALID, SUBOPTIMAL, INVALID = 0, 1, 2


class Diagnostics(enum.IntFlag):
    VERSION_MISMATCH, UNSUPPORTED_CC, OLD_CUDA_DRIVER = 1, 2, 4


class FakeRuntimeCache:
    """Kernels 'compiled' so far, serialised as text naming the GPU they were compiled on."""

    def __init__(self, dev: FakeDevice):
        self.dev, self.kernels = dev, set()

    def serialize(self):
        return ("KERNELS:" + ",".join(sorted(self.kernels))).encode()

    def deserialize(self, blob):
        self.dev.events.append("cache-deserialize")
        text = bytes(blob).decode()
        if not text.startswith("KERNELS:") or self.dev.reject_cache:
            return False
        self.kernels = set(filter(None, text[len("KERNELS:"):].split(",")))
        return True


class FakeRuntimeConfig:
    def __init__(self, dev):
        self.dev, self.cache, self.cuda_graph_strategy = dev, None, "DISABLED"

    def create_runtime_cache(self):
        return FakeRuntimeCache(self.dev)

    def set_runtime_cache(self, cache):
        self.cache = cache
        return True


class FakeRtxContext(FakeContext):
    def execute_async_v3(self, stream):
        kernel = f"batch{self.batch}"
        cache = self.engine.config.cache
        if cache is None or kernel not in cache.kernels:
            self.engine.dev.jit_compiles += 1  # what the runtime cache saves
            if cache is not None:
                cache.kernels.add(kernel)
        return super().execute_async_v3(stream)


class FakeRtxEngine(FakeEngine):
    def create_runtime_config(self):
        self.config = FakeRuntimeConfig(self.dev)
        return self.config

    def create_execution_context(self, config=None):
        assert config is self.config, "TensorRT-RTX contexts are made from the engine's runtime config"
        self.context = FakeRtxContext(self)
        return self.context


def fake_tensorrt_rtx(dev: FakeDevice, version=RTX_VERSION) -> types.ModuleType:
    trt = fake_tensorrt(dev, version)
    trt.__name__ = "tensorrt_rtx"
    trt.EngineValidity, trt.EngineInvalidityDiagnostics = EngineValidity, Diagnostics
    trt.CudaGraphStrategy = types.SimpleNamespace(DISABLED="DISABLED", WHOLE_GRAPH_CAPTURE="WHOLE_GRAPH_CAPTURE")
    dev.validity, dev.reject_cache, dev.jit_compiles = (EngineValidity.VALID, 0), False, 0

    class Runtime(trt.Runtime):
        def get_engine_validity(self, data):
            dev.events.append("validity")
            return dev.validity

        def deserialize_cuda_engine(self, data):
            dev.events.append("deserialize")
            if not bytes(data).startswith(b"FAKEPLAN"):
                return None
            dev.engine = FakeRtxEngine(dev, 1, 8)
            return dev.engine

    trt.Runtime = Runtime
    return trt


def add_fake_rtx_engine(root, precision="fp16", targets=("8.6", "8.9"), version=RTX_VERSION, payload=b"FAKEPLAN"):
    plan = plan_build(version, BuildOptions(precision=precision, runtime="tensorrt-rtx",
                                            compute_capabilities=targets), read_manifest(root))
    path = root / plan.engine_file
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload + b"\0" * 64)
    record = make_record(root, plan.engine_file, plan.to_dict(), gpu_name="", build_seconds=0.5)
    add_engine_record(root, record)
    return record


def stand_in_rtx_workstation(monkeypatch, device: FakeDevice, gpu: GpuInfo = ADA) -> None:
    """This machine becomes an RTX workstation with TensorRT-RTX 1.7.1 and fake device memory."""
    from liverlesion.backends import tensorrt as trt_backend

    monkeypatch.setitem(sys.modules, "tensorrt_rtx", fake_tensorrt_rtx(device))
    monkeypatch.setattr(trt_backend, "detect_gpu", lambda index=0: gpu)
    monkeypatch.setattr(trt_backend, "open_cuda_memory", lambda prefer=None, index=0: FakeMemory(device))
