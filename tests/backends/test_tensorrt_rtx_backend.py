"""The TensorRT-RTX backend against a fake TensorRT-RTX: what it checks before deserialising, the runtime
cache that spares the JIT on the second load, CUDA graphs through cuda_graph_strategy, and selection."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from engine_fixtures import make_engine_package
from liverlesion.backends.tensorrt import TensorRTBackend
from liverlesion.backends.tensorrt_rtx import TensorRTRtxBackend
from liverlesion.errors import EngineError
from liverlesion.machine.gpu import GpuInfo
from liverlesion.machine.probe import Machine
from liverlesion.package import load_package
from liverlesion.sdk.selection import select
from rtx_fakes import ADA, RTX_VERSION, Diagnostics, EngineValidity, add_fake_rtx_engine, stand_in_rtx_workstation
from trt_fakes import FakeDevice, add_fake_engine, fake_tensorrt, hu_batch, reference


@pytest.fixture
def device(monkeypatch):
    dev = FakeDevice()
    stand_in_rtx_workstation(monkeypatch, dev)
    return dev


@pytest.fixture
def package(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    add_fake_rtx_engine(root)
    return load_package(root)


def open_rtx(package, tmp_path, **options):
    options.setdefault("runtime_cache", tmp_path / "cache")
    return TensorRTRtxBackend(package, "fp16", **options)


def test_runs_the_engine_and_says_so(device, package, tmp_path):
    with open_rtx(package, tmp_path) as backend:
        hu = hu_batch(3)
        outputs = backend.infer(hu)
        for name, value in reference(hu).items():
            np.testing.assert_array_equal(outputs[name], value)
        assert "TensorRT-RTX 1.7.1.116" in backend.device and backend.record.runtime == "tensorrt-rtx"
    assert device.events.index("validity") < device.events.index("deserialize")


def test_the_second_load_on_this_gpu_skips_the_jit(device, package, tmp_path):
    with open_rtx(package, tmp_path) as first:
        first.infer(hu_batch(1))
        assert not first.runtime_cache["loaded"]
    compiled = device.jit_compiles
    assert compiled >= 1
    with open_rtx(package, tmp_path) as second:
        second.infer(hu_batch(1))
        assert second.runtime_cache["loaded"]
    assert device.jit_compiles == compiled  # nothing compiled again


def test_a_changed_cache_file_never_reaches_tensorrt_rtx(device, package, tmp_path):
    with open_rtx(package, tmp_path) as first:
        first.infer(hu_batch(1))
        folder = first.runtime_cache["folder"]
    (blob,) = [p for p in (tmp_path / "cache").rglob("*.cache")]
    blob.write_bytes(blob.read_bytes().replace(b"batch1", b"batch9"))
    device.events.clear()
    with open_rtx(package, tmp_path) as second:
        assert not second.runtime_cache["loaded"] and second.runtime_cache["folder"] == folder
    assert "cache-deserialize" not in device.events


def test_a_cache_tensorrt_rtx_refuses_is_compiled_anew(device, package, tmp_path, caplog):
    with open_rtx(package, tmp_path) as first:
        first.infer(hu_batch(1))
    device.reject_cache = True  # e.g. a driver update: TensorRT-RTX's own environment check says no
    with caplog.at_level(logging.WARNING), open_rtx(package, tmp_path) as second:
        assert not second.runtime_cache["loaded"]
    assert "refused the runtime cache" in caplog.text


def test_no_runtime_cache_when_turned_off(device, package, tmp_path):
    with open_rtx(package, tmp_path, runtime_cache=False) as backend:
        backend.infer(hu_batch(1))
        assert backend.runtime_cache == {"folder": None, "loaded": False, "enabled": False}
    assert not (tmp_path / "cache").exists()


def test_an_engine_tensorrt_rtx_calls_invalid_is_refused_before_deserialising(device, package, tmp_path):
    device.validity = (EngineValidity.INVALID, int(Diagnostics.UNSUPPORTED_CC | Diagnostics.OLD_CUDA_DRIVER))
    with pytest.raises(EngineError, match="unsupported cc, old cuda driver.*--compute-capability 8.9"):
        open_rtx(package, tmp_path)
    assert "deserialize" not in device.events and device.freed


def test_a_suboptimal_engine_runs_with_a_warning(device, package, tmp_path, caplog):
    device.validity = (EngineValidity.SUBOPTIMAL, 0)
    with caplog.at_level(logging.WARNING), open_rtx(package, tmp_path) as backend:
        backend.infer(hu_batch(1))
    assert "not at its best" in caplog.text


def test_cuda_graphs_come_from_tensorrt_rtxs_own_strategy(device, package, tmp_path):
    with open_rtx(package, tmp_path, cuda_graphs=True) as backend:
        backend.infer(hu_batch(2))
        assert device.engine.config.cuda_graph_strategy == "WHOLE_GRAPH_CAPTURE"
        assert backend.cuda_graph.status == "captured"
    assert "begin-capture" not in device.events  # no hand capture
    with open_rtx(package, tmp_path) as plain:
        assert device.engine.config.cuda_graph_strategy == "DISABLED" and plain.cuda_graph.status == "off"


def test_another_release_or_an_untargeted_gpu_is_refused_before_tensorrt_rtx_sees_the_plan(monkeypatch, tmp_path):
    dev = FakeDevice()
    blackwell = GpuInfo(0, "NVIDIA GeForce RTX 5090", (12, 0), 32 * 2**30, driver_version=12090)
    stand_in_rtx_workstation(monkeypatch, dev, blackwell)
    root = make_engine_package(tmp_path / "pkg")
    add_fake_rtx_engine(root, targets=("8.9",))
    with pytest.raises(EngineError, match="sm89, this GPU is sm120"):
        TensorRTRtxBackend(load_package(root), "fp16", runtime_cache=False)
    add_fake_rtx_engine(root, precision="int8", targets=("12.0",), version="1.7.0.10")
    with pytest.raises(EngineError, match="exact release"):
        TensorRTRtxBackend(load_package(root), "int8", runtime_cache=False)
    assert "deserialize" not in dev.events and "validity" not in dev.events


def test_the_tensorrt_backend_never_runs_an_rtx_engine(device, package, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(device))
    (record,) = package.manifest.engines
    with pytest.raises(EngineError, match="TensorRT-RTX engine.*backend='tensorrt-rtx'"):
        TensorRTBackend(package, "fp16", engine=record.file)


def rtx_machine(**facts):
    return Machine(gpu_name=ADA.name, compute_capability=ADA.compute_capability, tensorrt_rtx_version=RTX_VERSION,
                   tensorrt_rtx_backend=(True, "TensorRT-RTX with an RTX 4000 Ada"), onnxruntime_version="1.20",
                   ort_providers=("CPUExecutionProvider",), **facts)


def test_auto_on_an_rtx_gpu_takes_the_rtx_engine_when_no_tensorrt_one_runs(tmp_path):
    root = make_engine_package(tmp_path / "pkg")  # no accuracy records: auto runs FP32 only
    add_fake_rtx_engine(root, precision="fp32")
    manifest = load_package(root).manifest
    selection = select(manifest, rtx_machine(tensorrt_version="10.13.0.35",
                                             tensorrt_backend=(True, "TensorRT with an RTX 4000 Ada")))
    first = selection.candidates[0]
    assert (first.backend, first.precision) == ("tensorrt-rtx", "fp32")
    assert first.options["engine"] == "engines/joint_fp32_sm86-sm89_rtx1.7.1.engine"
    add_fake_engine(root, trt="10.13.0.35", precision="fp32", cc=(8, 9))  # a TensorRT engine for this GPU goes first
    selection = select(load_package(root).manifest, rtx_machine(tensorrt_version="10.13.0.35",
                                                               tensorrt_backend=(True, "TensorRT")))
    assert selection.candidates[0].backend == "tensorrt"
    assert [c.backend for c in selection.candidates].index("tensorrt-rtx") == 1


def test_pinned_loads_keep_device_built_engines_and_the_runtime_cache_out(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    add_fake_rtx_engine(root)
    manifest = load_package(root).manifest
    pinned = select(manifest, rtx_machine(), backend="tensorrt-rtx", precision="fp32", pinned=True,
                    build_engine=True)  # built here from the pinned ONNX, JIT without the cache
    assert [c.options for c in pinned.candidates] == [{"build": True, "runtime_cache": False}]
    trusted = select(manifest, rtx_machine(), backend="tensorrt-rtx", precision="fp16", pinned=True,
                     trust_device_builds=True)
    assert trusted.candidates[0].options == {"engine": "engines/joint_fp16_sm86-sm89_rtx1.7.1.engine"}
    with pytest.raises(EngineError, match="outside the pinned digest"):
        select(manifest, rtx_machine(), backend="tensorrt-rtx", precision="fp16", pinned=True)


def test_an_rtx_gpu_without_an_engine_builds_one_only_when_asked(tmp_path):
    manifest = load_package(make_engine_package(tmp_path / "pkg")).manifest
    with pytest.raises(EngineError, match="build-engine --runtime tensorrt-rtx"):
        select(manifest, rtx_machine(), backend="tensorrt-rtx")
    built = select(manifest, rtx_machine(), backend="tensorrt-rtx", build_engine=True).candidates[0]
    assert built.options == {"build": True}


# -- a real RTX GPU: skipped here, run where one is (the real-TensorRT test's sibling) ------------------------
def _rtx_gpu_here() -> str | None:
    """Why the real TensorRT-RTX test cannot run here, or None when it can (no TensorRT call is made)."""
    from liverlesion.engines.versions import RTX_COMPUTE_CAPABILITIES
    from liverlesion.machine.gpu import detect_gpu

    usable, why = TensorRTRtxBackend.availability()
    if not usable:
        return why
    gpu = detect_gpu()
    if gpu is None or gpu.compute_capability not in RTX_COMPUTE_CAPABILITIES:
        return f"this GPU ({None if gpu is None else gpu.cc_text}) is not among TensorRT-RTX's targets"
    return None


@pytest.mark.gpu
@pytest.mark.tensorrt_rtx
@pytest.mark.slow
@pytest.mark.parametrize("precision, agreement", [("fp32", 0.999), ("fp16", 0.995), ("int8", 0.95)])
def test_real_rtx_engine_agrees_with_onnxruntime_and_its_cache_spares_the_jit(tmp_path, precision, agreement):
    reason = _rtx_gpu_here()
    if reason is not None:
        pytest.skip(f"needs an RTX GPU with TensorRT-RTX and cuda-python: {reason}")
    ort = pytest.importorskip("onnxruntime")
    from liverlesion.engines.build import build_engine
    from liverlesion.engines.plan import BuildOptions, plan_build
    from liverlesion.machine.gpu import detect_gpu
    from liverlesion.machine.runtimes import tensorrt_rtx_version
    from liverlesion.package.store import read_manifest
    from test_tensorrt_backend import H as TH
    from test_tensorrt_backend import W as TW
    from test_tensorrt_backend import tiny_package

    root = tiny_package(tmp_path / "pkg")
    options = BuildOptions(precision, runtime="tensorrt-rtx", compute_capabilities=(detect_gpu().compute_capability,),
                           max_batch=4)
    build_engine(root, plan_build(tensorrt_rtx_version(), options, read_manifest(root)), log=lambda line: None)
    hu = np.random.default_rng(3).uniform(-1000, 1000, (4, 1, TH, TW)).astype(np.float32)
    with TensorRTRtxBackend(load_package(root), precision, runtime_cache=tmp_path / "cache") as first:
        got = first.infer(hu)
        assert not first.runtime_cache["loaded"]
    with TensorRTRtxBackend(load_package(root), precision, runtime_cache=tmp_path / "cache",
                            cuda_graphs=True) as second:
        again = second.infer(hu)
        assert second.runtime_cache["loaded"]  # kernels from the first load's cache
    session = ort.InferenceSession(str(root / "model_fp32.onnx"), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(["labels", "probabilities"], {"hu": hu})
    assert (got["labels"] == labels).mean() >= agreement
    np.testing.assert_array_equal(again["labels"], got["labels"])
    assert np.abs(got["probabilities"] - probabilities).max() < (1e-3 if precision == "fp32" else 0.1)
