"""GPU detection through the CUDA driver (liverlesion.machine.gpu), against a ctypes-level fake libcuda."""

from __future__ import annotations

import pytest

from liverlesion.machine import gpu as gpu_module
from liverlesion.machine.gpu import GpuInfo, detect_gpu


class FakeLibCuda:
    """ctypes-level stand-in for libcuda: fills the out-parameters TensorRT-free detection passes."""

    def __init__(self, init_result=0, count=1):
        self.init_result, self.count = init_result, count

    def cuInit(self, flags):
        return self.init_result

    def cuDeviceGetCount(self, ref):
        ref._obj.value = self.count
        return 0

    def cuDeviceGet(self, ref, ordinal):
        ref._obj.value = ordinal.value
        return 0

    def cuDeviceGetName(self, buffer, length, device):
        buffer.value = b"Orin"
        return 0

    def cuDeviceGetAttribute(self, ref, attribute, device):
        ref._obj.value = {75: 8, 76: 7, 18: 1}[attribute.value]
        return 0

    def cuDeviceTotalMem_v2(self, ref, device):
        ref._obj.value = 7 * 2**30
        return 0

    def cuDriverGetVersion(self, ref):
        ref._obj.value = 12060
        return 0


@pytest.fixture
def fresh_detection(monkeypatch):
    monkeypatch.delenv("LIVERLESION_NO_GPU", raising=False)
    gpu_module._probe.cache_clear()
    yield
    gpu_module._probe.cache_clear()


def test_detect_gpu_reads_the_driver(monkeypatch, fresh_detection):
    monkeypatch.setattr(gpu_module, "_load_driver", lambda: FakeLibCuda())
    found = detect_gpu()
    assert found == GpuInfo(0, "Orin", (8, 7), 7 * 2**30, integrated=True, driver_version=12060)
    assert (found.sm, found.cc_text) == ("sm87", "8.7")
    assert detect_gpu(1) is None  # only one device


@pytest.mark.parametrize("lib", [None, FakeLibCuda(init_result=100), FakeLibCuda(count=0)])
def test_detect_gpu_without_driver_or_device(monkeypatch, fresh_detection, lib):
    monkeypatch.setattr(gpu_module, "_load_driver", lambda: lib)
    assert detect_gpu() is None


def test_detect_gpu_when_libcuda_cannot_be_loaded(monkeypatch, fresh_detection):
    def refuse(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(gpu_module.ctypes, "CDLL", refuse)
    assert detect_gpu() is None


def test_detect_gpu_can_be_switched_off(monkeypatch, fresh_detection):
    monkeypatch.setattr(gpu_module, "_load_driver", lambda: pytest.fail("the driver was touched"))
    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    assert detect_gpu() is None


def test_detect_gpu_on_this_machine_returns_or_says_none(fresh_detection):
    found = detect_gpu(refresh=True)
    assert found is None or (found.name and found.compute_capability[0] >= 5)
