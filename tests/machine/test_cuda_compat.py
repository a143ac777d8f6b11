"""The driver against the CUDA a TensorRT wheel needs (liverlesion.machine.cuda_compat): no CUDA call involved."""

from __future__ import annotations

import importlib.metadata

import pytest

from liverlesion.machine import cuda_compat
from liverlesion.machine.cuda_compat import cuda_major_needed, cuda_runtime_refusal, runtime_distribution


@pytest.fixture(autouse=True)
def fresh_lookup():
    """runtime_distribution caches its answer per process: each test looks up anew."""
    runtime_distribution.cache_clear()
    yield
    runtime_distribution.cache_clear()


@pytest.mark.parametrize("distribution, major", [
    ("tensorrt-cu12", 12), ("tensorrt_cu13", 13), ("tensorrt-rtx-cu12", 12), ("TensorRT_RTX_cu12_libs", 12),
    ("tensorrt-cu12-bindings", 12), ("tensorrt", None), ("tensorrt-lean", None), ("nvidia-tensorrt", None),
    ("tensorrt-cuda", None), ("", None), (None, None),
])
def test_cuda_major_from_the_distribution_name(distribution, major):
    assert cuda_major_needed(distribution) == major


def test_driver_older_than_the_wheels_cuda_is_refused_naming_both():
    reason = cuda_runtime_refusal(11080, "tensorrt_cu12")
    assert reason is not None
    assert "CUDA 11.8" in reason and "tensorrt-cu12 needs CUDA 12" in reason
    assert "update the NVIDIA driver or install the tensorrt-cu11 wheel" in reason
    rtx = cuda_runtime_refusal(12040, "tensorrt-rtx-cu13")
    assert rtx is not None and "CUDA 12.4" in rtx and "tensorrt-rtx-cu12 wheel" in rtx


@pytest.mark.parametrize("driver, distribution", [
    (12000, "tensorrt-cu12"),  # minor-version compatibility: any 12.x driver runs a 12.x runtime
    (13010, "tensorrt-cu12"),
    (11040, "tensorrt"),  # unknown CUDA (meta package, JetPack): no check
    (None, "tensorrt-cu12"),  # unknown driver version: no check
    (0, "tensorrt-cu12"),
])
def test_no_refusal_where_the_driver_is_enough_or_unknown(driver, distribution):
    assert cuda_runtime_refusal(driver, distribution) is None


@pytest.mark.parametrize("found, expected", [
    ({"tensorrt": ["tensorrt_cu12"], "tensorrt_libs": ["tensorrt_cu12_libs"]}, "tensorrt-cu12"),
    ({"tensorrt_libs": ["tensorrt_cu13_libs"]}, "tensorrt-cu13-libs"),
    ({"tensorrt": ["tensorrt-stubs"]}, None),  # type stubs name no CUDA
    ({"tensorrt": ["tensorrt_cu12", "tensorrt_cu13"]}, None),  # which one's files won is unknown: no check
    ({}, None),  # JetPack's python3-libnvinfer: no distribution
])
def test_runtime_distribution_of_the_modules(monkeypatch, found, expected):
    monkeypatch.setattr(importlib.metadata, "packages_distributions", lambda: found)
    assert runtime_distribution("tensorrt", "tensorrt_libs", "tensorrt_bindings") == expected


def test_broken_metadata_means_no_check(monkeypatch):
    def broken():
        raise OSError("unreadable RECORD")

    monkeypatch.setattr(cuda_compat.importlib.metadata, "packages_distributions", broken)
    assert runtime_distribution("tensorrt") is None


@pytest.mark.tensorrt_rtx
def test_installed_tensorrt_rtx_names_its_cuda():
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX (the tensorrt-rtx extra) installed")
    distribution = runtime_distribution("tensorrt_rtx")
    assert distribution is not None and cuda_major_needed(distribution) is not None
