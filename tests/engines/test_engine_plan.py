"""Build plans per TensorRT generation (8.5, 10.3, 10.13, 11.4), every refusal, and build-engine --dry-run."""

from __future__ import annotations

import argparse
import enum
import json
import sys
from pathlib import Path

import pytest

from engine_fixtures import GRID, HostOnlyMemory, make_engine_package
from liverlesion.engines import build as build_module
from liverlesion.engines import versions
from liverlesion.engines.build import network_flags, parse_layer_placement
from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.engines.records import engine_records
from liverlesion.errors import EngineError, MissingDependencyError
from liverlesion.machine import cuda_memory
from liverlesion.machine import gpu as gpu_module
from liverlesion.machine.gpu import GpuInfo
from liverlesion.package import load_package, write_manifest
from liverlesion.package.store import file_record, read_manifest
from trt_fakes import FakeBuilderTrt, Flags10

ORIN, XAVIER, THOR, ADA = (8, 7), (7, 2), (11, 0), (8, 9)
SHAPE = (1, *GRID)


@pytest.fixture
def manifest(tmp_path):
    return load_package(make_engine_package(tmp_path / "pkg")).manifest


def plan(manifest, trt="10.3.0", precision="fp16", cc=ORIN, **options):
    return plan_build(trt, BuildOptions(precision=precision, compute_capability=cc, **options), manifest)


# (TensorRT, GPU, precision) -> code path, ONNX file, network flags, builder flags, calibrated, engine file
EXPECTED = [
    ("8.5.2", ORIN, "fp32", "builder-flags", "model_fp32.onnx", ["EXPLICIT_BATCH"], [], False,
     "engines/joint_fp32_sm87_trt8.5.2.engine"),
    ("8.5.2", ORIN, "fp16", "builder-flags", "model_fp32.onnx", ["EXPLICIT_BATCH"], ["FP16"], False,
     "engines/joint_fp16_sm87_trt8.5.2.engine"),
    ("8.5.2.2", XAVIER, "int8", "builder-flags", "model_fp32.onnx", ["EXPLICIT_BATCH"], ["INT8", "FP16"],
     True, "engines/joint_int8_sm72_trt8.5.2.engine"),
    ("10.3.0.30", ORIN, "fp16", "strongly-typed", "model_fp16.onnx", ["STRONGLY_TYPED"], [], False,
     "engines/joint_fp16_sm87_trt10.3.0.engine"),
    ("10.3.0", ORIN, "int8", "strongly-typed", "model_int8_qdq_s8s8.onnx", ["STRONGLY_TYPED"], [], False,
     "engines/joint_int8_sm87_trt10.3.0.engine"),
    ("10.13.3", THOR, "fp16", "strongly-typed", "model_fp16.onnx", ["STRONGLY_TYPED"], [], False,
     "engines/joint_fp16_sm110_trt10.13.3.engine"),
    ("10.13.0", ADA, "fp32", "strongly-typed", "model_fp32.onnx", ["STRONGLY_TYPED"], [], False,
     "engines/joint_fp32_sm89_trt10.13.0.engine"),
    ("11.4.1", ORIN, "int8", "strongly-typed", "model_int8_qdq_s8s8.onnx", ["STRONGLY_TYPED"], [], False,
     "engines/joint_int8_sm87_trt11.4.1.engine"),
    ("11.4.1", THOR, "fp16", "strongly-typed", "model_fp16.onnx", ["STRONGLY_TYPED"], [], False,
     "engines/joint_fp16_sm110_trt11.4.1.engine"),
]


@pytest.mark.parametrize("trt, cc, precision, path, onnx, net_flags, flags, calibrated, engine", EXPECTED)
def test_plan_per_version(manifest, trt, cc, precision, path, onnx, net_flags, flags, calibrated, engine):
    result = plan(manifest, trt, precision, cc).to_dict()
    assert result["code_path"] == path
    assert result["onnx"] == onnx
    assert result["network_flags"] == net_flags
    assert result["builder_flags"] == flags
    assert (result["calibrator"] is not None) == calibrated
    assert result["engine_file"] == engine
    assert result["tensorrt"] == trt
    assert result["device"] == "GPU" and result["dla_core"] is None


def test_plan_names_the_checksum_of_the_onnx_it_builds(manifest):
    for precision, path in (("fp16", "model_fp16.onnx"), ("int8", "model_int8_qdq_s8s8.onnx")):
        result = plan(manifest, "11.4.1", precision)
        assert result.onnx == path
        assert result.onnx_sha256 == next(f.sha256 for f in manifest.files if f.path == path)


@pytest.mark.parametrize("trt", ["8.5.2", "10.3.0", "10.13.0", "11.4.1"])
def test_profile_and_workspace_defaults(manifest, trt):
    result = plan(manifest, trt, "fp16")
    assert result.profile.input == "hu"
    profile = result.profile
    assert (profile.min, profile.opt, profile.max) == ((1, *SHAPE), (1, *SHAPE), (8, *SHAPE))
    assert result.workspace_bytes == 1024 * 2**20
    asked = plan(manifest, trt, "fp16", max_batch=16, opt_batch=4, workspace_mb=512)
    assert (asked.profile.min[0], asked.profile.opt[0], asked.profile.max[0]) == (1, 4, 16)
    assert asked.workspace_bytes == 512 * 2**20


def test_no_version_gets_the_other_generations_switches(manifest):
    for precision in ("fp32", "fp16", "int8"):
        for trt in ("11.0.0", "11.4.1"):
            result = plan(manifest, trt, precision)
            assert not {"FP16", "INT8", "EXPLICIT_BATCH"} & set(result.builder_flags + result.network_flags)
            assert result.calibrator is None
        for trt in ("8.5.2", "8.6.1"):
            assert "STRONGLY_TYPED" not in plan(manifest, trt, precision).network_flags


def test_int8_on_8_5_calibrates_on_the_package_slices(manifest):
    calib = plan(manifest, "8.5.2", "int8", calibration_batch=4).calibrator
    assert calib.slices == "calibration/slices.npy"
    assert calib.slices_sha256 == manifest.find(role="calibration").sha256
    assert calib.batch_size == 4 and calib.profile == (4, *SHAPE)
    assert calib.cache == "engines/joint_sm87_trt8.5.2.calib"
    assert calib.reuse_cache is False


def test_calibration_cache_reused_only_for_same_tensorrt_gpu_and_slices(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    (root / "engines").mkdir()
    cache = root / "engines" / "joint_sm87_trt8.5.2.calib"
    cache.write_bytes(b"TRT-8502-EntropyCalibration2\nhu: 3c000000\n")
    slices_sha = read_manifest(root).find(role="calibration").sha256

    def with_cache(**extra):
        data = read_manifest(root).to_dict()
        data["files"] = [f for f in data["files"] if f["role"] != "calibration-cache"]
        data["files"].append(file_record(root, "engines/joint_sm87_trt8.5.2.calib", "calibration-cache",
                                         **extra).to_dict())
        write_manifest(root, data)
        return load_package(root).manifest

    same = with_cache(tensorrt="8.5.2", compute_capability="8.7", slices_sha256=slices_sha)
    assert plan(same, "8.5.2", "int8").calibrator.reuse_cache is True
    other_trt = with_cache(tensorrt="8.5.1", compute_capability="8.7", slices_sha256=slices_sha)
    assert plan(other_trt, "8.5.2", "int8").calibrator.reuse_cache is False
    other_slices = with_cache(tensorrt="8.5.2", compute_capability="8.7", slices_sha256="0" * 64)
    assert plan(other_slices, "8.5.2", "int8").calibrator.reuse_cache is False


def test_plan_is_json(manifest):
    for trt, precision in (("8.5.2", "int8"), ("11.4.1", "fp16")):
        data = plan(manifest, trt, precision, dla_core=0).to_dict()
        assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize("trt, precision", [("8.5.2", "int8"), ("10.3.0", "fp16"), ("11.4.1", "int8")])
def test_dla_plan_is_static_with_silent_fallback_warning(manifest, trt, precision):
    result = plan(manifest, trt, precision, dla_core=1)
    assert result.device == "DLA" and result.dla_core == 1
    assert "GPU_FALLBACK" in result.builder_flags
    assert result.profile.min == result.profile.opt == result.profile.max == (1, *SHAPE)
    assert any("silent" in w for w in result.warnings)
    assert any("static" in w for w in result.warnings)  # --max-batch 8 was ignored
    assert result.engine_file.endswith("_dla1.engine")


def test_version_compatible_flag(manifest):
    result = plan(manifest, "10.3.0", "fp16", version_compatible=True)
    assert "VERSION_COMPATIBLE" in result.builder_flags and result.version_compatible
    assert result.engine_file.endswith("_vc.engine")


def test_newer_tensorrt_is_planned_strongly_typed_with_a_warning(manifest):
    result = plan(manifest, "12.0.0", "fp16")
    assert result.code_path == "strongly-typed"
    assert any("newer" in w for w in result.warnings)


def test_large_workspace_on_orin_warns(manifest):
    assert not plan(manifest, "10.3.0", "fp16").warnings
    assert any("swap" in w for w in plan(manifest, "10.3.0", "fp16", workspace_mb=4096).warnings)
    assert not plan(manifest, "10.3.0", "fp16", cc=ADA, workspace_mb=4096).warnings


@pytest.mark.parametrize("trt, precision, cc, options, message", [
    ("8.4.3", "fp16", ORIN, {}, "too old"),
    ("7.1.3", "fp16", XAVIER, {}, "too old"),
    ("9.2.0", "fp16", ADA, {}, "limited release"),
    ("ten", "fp16", ORIN, {}, "not of the form"),
    ("10.3.0", "bf16", ORIN, {}, "not buildable"),
    ("10.3.0", "fp16", "banana", {}, "compute capability"),
    ("10.3.0", "fp16", ORIN, {"opt_batch": 4, "max_batch": 2}, "larger than max batch"),
    ("10.3.0", "fp16", ORIN, {"max_batch": 0}, "max batch"),
    ("10.3.0", "fp16", ORIN, {"workspace_mb": 0}, "workspace"),
    ("10.3.0", "fp32", ORIN, {"dla_core": 0}, "FP16 and INT8 only"),
    ("10.3.0", "fp16", ORIN, {"dla_core": -1}, "DLA core"),
    ("10.13.0", "fp16", THOR, {"dla_core": 0}, "has no DLA"),
    ("10.3.0", "fp16", ADA, {"dla_core": 0}, "has no DLA"),
    ("10.13.0", "fp16", ORIN, {"dla_core": 0}, "10.7 was the last"),
    ("11.1.0", "fp16", ORIN, {"dla_core": 0}, "11.4.1"),
    ("11.4.1", "fp16", XAVIER, {"dla_core": 0}, "AGX Orin only"),
    ("11.4.1", "fp16", THOR, {"dla_core": 0}, "has no DLA"),
    ("8.5.2", "fp16", ORIN, {"version_compatible": True}, "8.6"),
    ("10.3.0", "fp16", ORIN, {"version_compatible": True, "dla_core": 0}, "cannot use DLA"),
    ("8.5.2", "int8", ORIN, {"calibration_batch": 0}, "calibration batch"),
])
def test_refusals(manifest, trt, precision, cc, options, message):
    with pytest.raises(EngineError, match=message):
        plan(manifest, trt, precision, cc, **options)


@pytest.mark.parametrize("files, trt, precision, message", [
    ({"calibration": False}, "8.5.2", "int8", "calibration slices"),
    ({"int8": False}, "10.3.0", "int8", "Q/DQ"),
    ({"int8": False}, "11.4.1", "int8", "quantize"),
    ({"fp16": False}, "10.13.0", "fp16", "float16"),
])
def test_missing_package_files_are_refused(tmp_path, files, trt, precision, message):
    manifest = load_package(make_engine_package(tmp_path / "pkg", **files)).manifest
    with pytest.raises(EngineError, match=message):
        plan(manifest, trt, precision)


def test_8_5_does_not_need_the_fp16_or_qdq_files(tmp_path):
    manifest = load_package(make_engine_package(tmp_path / "pkg", fp16=False, int8=False)).manifest
    assert plan(manifest, "8.5.2", "fp16").onnx == "model_fp32.onnx"
    assert plan(manifest, "8.5.2", "int8").onnx == "model_fp32.onnx"


class Flags11(enum.IntEnum):
    STRONGLY_TYPED = 0
    PREFER_JIT_PYTHON_PLUGINS = 2


def test_network_flag_mask_uses_the_enum_value_of_each_version():
    assert network_flags(Flags10, ["EXPLICIT_BATCH"]) == 1
    assert network_flags(Flags10, ["STRONGLY_TYPED"]) == 2
    assert network_flags(Flags11, ["STRONGLY_TYPED"]) == 1
    assert network_flags(Flags10, []) == 0
    with pytest.raises(EngineError, match="EXPLICIT_BATCH"):
        network_flags(Flags11, ["EXPLICIT_BATCH"])


def test_layer_placement_from_the_build_log():
    log = ["Some tactic message",
           "---------- Layers Running on DLA ----------",
           "[DlaLayer] {ForeignNode[/enc/conv1/Conv.../enc/relu4/Relu]}",
           "[DlaLayer] {ForeignNode[/dec/conv/Conv]}",
           "---------- Layers Running on GPU ----------",
           "[GpuLayer] RESIZE: /dec/up/Resize",
           "[GpuLayer] SOFTMAX: /softmax",
           "[GpuLayer] ARG_MAX: /argmax"]
    assert parse_layer_placement(log) == {"dla": 2, "gpu": 3}
    assert parse_layer_placement(["---------- Layers Running on DLA ----------",
                                  "---------- Layers Running on GPU ----------"]) == {"dla": 0, "gpu": 0}
    assert parse_layer_placement(["no placement was logged"]) is None


def run_cli(package, *argv):
    from liverlesion.cli import build_engine

    parser = argparse.ArgumentParser()
    build_engine.register(parser.add_subparsers(dest="command"))
    return build_engine.run(parser.parse_args(["build-engine", str(package), *argv]))


@pytest.fixture
def no_tensorrt_no_gpu(monkeypatch):
    monkeypatch.setattr(versions, "installed_tensorrt_version", lambda: None)
    monkeypatch.setattr(gpu_module, "detect_gpu", lambda index=0, refresh=False: None)


def test_dry_run_prints_the_plan_without_tensorrt(tmp_path, capsys, no_tensorrt_no_gpu):
    root = make_engine_package(tmp_path / "pkg")
    before = (root / "manifest.json").read_bytes()
    assert run_cli(root, "--precision", "int8", "--dry-run", "--trt-version", "8.5.2",
                   "--compute-capability", "8.7", "--max-batch", "4") == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["code_path"] == "builder-flags" and printed["builder_flags"] == ["INT8", "FP16"]
    assert printed["profile"]["max"] == [4, *SHAPE]
    assert printed["engine_file"] == "engines/joint_int8_sm87_trt8.5.2.engine"
    assert (root / "manifest.json").read_bytes() == before  # a dry run writes nothing
    assert not (root / "engines").exists()


def test_dry_run_needs_a_target_where_none_is_installed(tmp_path, no_tensorrt_no_gpu):
    root = make_engine_package(tmp_path / "pkg")
    with pytest.raises(EngineError, match="--trt-version"):
        run_cli(root, "--precision", "fp16", "--dry-run")
    with pytest.raises(EngineError, match="--compute-capability"):
        run_cli(root, "--precision", "fp16", "--dry-run", "--trt-version", "10.3")


def test_real_build_without_tensorrt_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError
    root = make_engine_package(tmp_path / "pkg")
    with pytest.raises(MissingDependencyError, match=r"liverlesion\[tensorrt\]"):
        run_cli(root, "--precision", "fp16")


def test_cli_dispatches_build_engine(tmp_path, capsys, no_tensorrt_no_gpu):
    from liverlesion.cli import main

    root = make_engine_package(tmp_path / "pkg")
    assert main(["build-engine", str(root), "--precision", "fp16", "--dry-run", "--trt-version", "11.4.1",
                 "--compute-capability", "11.0"]) == 0
    assert json.loads(capsys.readouterr().out)["engine_file"] == "engines/joint_fp16_sm110_trt11.4.1.engine"
    assert main(["build-engine", str(root), "--precision", "fp16", "--dry-run", "--trt-version", "9.1",
                 "--compute-capability", "8.9"]) == 2
    assert "limited release" in capsys.readouterr().err


# -- carrying a plan out, against a fake tensorrt module ----------------------------------------------
def test_build_engine_carries_out_a_dla_plan_and_records_it(tmp_path, monkeypatch):
    fake = FakeBuilderTrt("10.3.0.30")
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    monkeypatch.setattr(build_module, "detect_gpu", lambda index=0: GpuInfo(0, "Orin", ORIN, 2**33, True))
    root = make_engine_package(tmp_path / "pkg")
    timing = tmp_path / "caches" / "timing.cache"
    the_plan = plan(load_package(root).manifest, "10.3.0.30", "fp16", dla_core=1, timing_cache=str(timing))
    messages = []
    record = build_module.build_engine(root, the_plan, log=messages.append)
    assert ("network flags", 2) in fake.calls  # 1 << STRONGLY_TYPED (= 1 in TensorRT 10)
    assert ("parsed", "model_fp16.onnx") in fake.calls
    assert ("workspace", "WORKSPACE", 1024 * 2**20) in fake.calls
    assert ("built", ("GPU_FALLBACK",), ((1, *SHAPE), (1, *SHAPE), (1, *SHAPE))) in fake.calls
    assert (root / record.file).read_bytes() == b"PLAN GPU_FALLBACK"
    assert timing.read_bytes() == b"TIMINGS"
    assert record.placement == {"dla": 1, "gpu": 1} and record.dla_core == 1
    assert any("silent" in m for m in messages) and any("1 on DLA" in m for m in messages)
    assert engine_records(load_package(root).manifest) == [record]
    assert Path(record.file).name == "joint_fp16_sm87_trt10.3.0_dla1.engine"


def test_build_engine_calibrates_on_8_5_and_records_the_cache(tmp_path, monkeypatch):
    fake = FakeBuilderTrt("8.5.2.2")
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    monkeypatch.setattr(build_module, "detect_gpu", lambda index=0: GpuInfo(0, "Xavier", XAVIER, 2**34, True))
    monkeypatch.setattr(cuda_memory, "open_cuda_memory", lambda prefer=None, device=0: HostOnlyMemory())
    root = make_engine_package(tmp_path / "pkg", slices=10)
    the_plan = plan(load_package(root).manifest, "8.5.2.2", "int8", XAVIER, calibration_batch=4)
    record = build_module.build_engine(root, the_plan, log=lambda m: None)
    assert ("network flags", 1) in fake.calls  # 1 << EXPLICIT_BATCH
    assert ("parsed", "model_fp32.onnx") in fake.calls
    assert fake.calls.count(("calibration batch",)) == 3  # 10 slices in batches of 4, the last padded
    manifest = load_package(root).manifest
    cache = manifest.find(role="calibration-cache")
    assert cache.path == record.calibration_cache == "engines/joint_sm72_trt8.5.2.calib"
    assert cache.extra["tensorrt"] == "8.5.2" and cache.extra["compute_capability"] == "7.2"
    # the next plan for the same TensorRT, GPU and slices reuses the cache: no calibration batches
    again = plan(manifest, "8.5.2.2", "int8", XAVIER, calibration_batch=4)
    assert again.calibrator.reuse_cache
    build_module.build_engine(root, again, log=lambda m: None)
    assert fake.calls.count(("calibration batch",)) == 3


@pytest.mark.parametrize("installed, gpu_cc, message", [
    ("10.4.0", ORIN, "plan again here"),
    ("10.3.0.30", ADA, "compute capability 8.7"),
    ("10.3.0.30", None, "needs the NVIDIA GPU"),
])
def test_build_engine_refuses_a_plan_for_another_machine(tmp_path, monkeypatch, installed, gpu_cc, message):
    monkeypatch.setitem(sys.modules, "tensorrt", FakeBuilderTrt(installed).module)
    gpu = None if gpu_cc is None else GpuInfo(0, "GPU", gpu_cc, 2**33)
    monkeypatch.setattr(build_module, "detect_gpu", lambda index=0: gpu)
    root = make_engine_package(tmp_path / "pkg")
    with pytest.raises(EngineError, match=message):
        build_module.build_engine(root, plan(load_package(root).manifest, "10.3.0.30", "fp16"))
    assert not (root / "engines").exists()


@pytest.mark.parametrize("method, kind", [("minmax", "minmax"), ("entropy", "entropy2"), (None, "minmax")])
def test_8_5_calibrator_follows_the_packages_calibration_method(tmp_path, method, kind):
    """TensorRT 8.5 must quantize as the Q/DQ file does on 10+: same slices, same method."""
    root = make_engine_package(tmp_path / "pkg")
    data = json.loads((root / "manifest.json").read_text())
    data["calibration"] = {"method": method} if method else {}
    (root / "manifest.json").write_text(json.dumps(data))
    the_plan = plan(load_package(root).manifest, "8.5.2.2", "int8", XAVIER)
    assert the_plan.calibrator.kind == kind
