"""What is installed, found in one place: machine.runtimes (TensorRT's version normalised as engine records
name it; the bench header's versions from the same module)."""

from __future__ import annotations

import sys
import types

import pytest


def _fake_tensorrt(monkeypatch, version):
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    module.Builder = object
    monkeypatch.setitem(sys.modules, "tensorrt", module)


@pytest.mark.parametrize("version, expected", [("10.3", "10.3.0"), ("8.5.2", "8.5.2"), ("10.3.0.30", "10.3.0.30")])
def test_the_tensorrt_version_is_normalised_as_engine_records_name_it(monkeypatch, version, expected):
    from liverlesion.backends.registry import probe_machine
    from liverlesion.machine import runtimes

    _fake_tensorrt(monkeypatch, version)
    assert runtimes.tensorrt_version() == expected
    assert probe_machine(("tensorrt",)).tensorrt_version == expected


def test_bench_header_versions_come_from_the_machine_layer(monkeypatch):
    from liverlesion.bench import machine as bench_machine
    from liverlesion.machine import runtimes

    monkeypatch.setattr(runtimes, "DISTRIBUTIONS", {"numpy": ("numpy",), "nothing": ("no-such-dist-xyz",)})
    versions = bench_machine.machine_info()["versions"]
    assert versions["nothing"] is None and versions["numpy"] and "torch" not in versions


def test_the_torch_backend_asks_the_machine_layer_whether_it_can_run(monkeypatch):
    from liverlesion.backends.torch import TorchBackend
    from liverlesion.machine import runtimes

    monkeypatch.setattr(runtimes, "installed", lambda module: module != "safetensors")
    ok, why = TorchBackend.availability()
    assert not ok and why.startswith("safetensors is not installed") and "liverlesion[train]" in why
    assert runtimes.torch_installed() is False
