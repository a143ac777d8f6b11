"""TensorRT-RTX as one more engine generation: plans, records, which engine runs where, and real AOT builds.

The plan and record tests are plain data. The builds run NVIDIA's real parser and builder (TensorRT-RTX
builds ahead of time on a CPU) and skip, saying why, where the ``tensorrt-rtx`` extra is absent.
"""

from __future__ import annotations

import argparse
import json
import os

import pytest

from engine_fixtures import make_engine_package
from liverlesion.engine_tags import TrtVersion
from liverlesion.engines import versions
from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.engines.records import (
    EngineRecord,
    add_engine_record,
    engine_compatibility,
    make_record,
    select_engine,
)
from liverlesion.errors import EngineError, PackageError
from liverlesion.machine import gpu as gpu_module
from liverlesion.machine.gpu import GpuInfo
from liverlesion.machine.runtimes import tensorrt_rtx_version
from liverlesion.package import load_package
from liverlesion.package.store import read_manifest

RTX = "1.7.1.116"
requires_rtx = pytest.mark.skipif(tensorrt_rtx_version() is None,
                                  reason="TensorRT-RTX is not installed: pip install 'liverlesion[tensorrt-rtx]'")


@pytest.fixture
def manifest(tmp_path):
    return load_package(make_engine_package(tmp_path / "pkg")).manifest


def rtx_plan(manifest, precision="fp16", targets=(), version=RTX, **options):
    return plan_build(version, BuildOptions(precision=precision, runtime="tensorrt-rtx",
                                            compute_capabilities=targets, **options), manifest)


@pytest.mark.parametrize("precision, onnx", [("fp32", "model_fp32.onnx"), ("fp16", "model_fp16.onnx"),
                                             ("int8", "model_int8_qdq_s8s8.onnx")])
def test_rtx_builds_strongly_typed_from_the_precisions_own_onnx(manifest, precision, onnx):
    plan = rtx_plan(manifest, precision, ("8.6", "sm_120"))
    assert (plan.runtime, plan.code_path, plan.onnx) == ("tensorrt-rtx", "rtx-ahead-of-time", onnx)
    assert plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == ()
    assert plan.calibrator is None and plan.timing_cache is None and not plan.version_compatible
    assert plan.targets == ("8.6", "12.0") and not plan.default_targets
    assert plan.engine_file == f"engines/joint_{precision}_sm86-sm120_rtx1.7.1.engine"
    assert plan.tensorrt == RTX  # its own numbering: never judged against TensorRT's table


def test_rtx_without_targets_uses_its_portable_set_and_says_so(manifest):
    plan = rtx_plan(manifest)
    assert plan.default_targets and plan.targets == tuple(f"{a}.{b}" for a, b in versions.RTX_DEFAULT_TARGETS)
    assert plan.engine_file == "engines/joint_fp16_portable_rtx1.7.1.engine"
    assert any("portable set" in w for w in plan.warnings)


def test_rtx_targets_keep_their_order_without_repeats(manifest):
    assert rtx_plan(manifest, targets=("12.0", "8.9", "sm89")).targets == ("12.0", "8.9")


@pytest.mark.parametrize("options, message", [
    ({"dla_core": 0}, "no DLA"),
    ({"version_compatible": True}, "version-compatible"),
    ({"timing_cache": "t.cache"}, "timing cache"),
    ({"targets": ("9.0",)}, "not 9.0.*TensorRT"),
    ({"targets": ("8.7",)}, "Jetson"),
    ({"version": "0.9.0"}, "1.x"),
])
def test_rtx_refusals_say_what_to_change(manifest, options, message):
    with pytest.raises(EngineError, match=message):
        rtx_plan(manifest, **options)


def test_rtx_int8_warns_about_weight_only_int8(manifest):
    assert any("weight-only" in w for w in rtx_plan(manifest, "int8", ("8.9",)).warnings)
    assert any("Turing" in w for w in rtx_plan(manifest, "int8", ("7.5",)).warnings)


def test_tensorrt_plans_are_for_one_gpu(manifest):
    with pytest.raises(EngineError, match="one GPU"):
        plan_build("10.3.0", BuildOptions(precision="fp16", compute_capabilities=("8.6", "8.9")), manifest)
    with pytest.raises(EngineError, match="one GPU"):
        plan_build("10.3.0", BuildOptions(precision="fp16"), manifest)
    one = plan_build("10.3.0", BuildOptions(precision="fp16", compute_capabilities=("8.7",)), manifest)
    assert one.targets == ("8.7",) and one.runtime == "tensorrt"


def test_unknown_runtime_is_refused(manifest):
    with pytest.raises(EngineError, match="accepted: tensorrt, tensorrt-rtx"):
        plan_build("10.3.0", BuildOptions(precision="fp16", compute_capability="8.7", runtime="trt"), manifest)


def add_rtx_engine(root, precision="fp16", targets=("8.6", "8.9"), version=RTX, payload=b"RTX"):
    plan = rtx_plan(read_manifest(root), precision, targets, version)
    (root / plan.engine_file).parent.mkdir(exist_ok=True)
    (root / plan.engine_file).write_bytes(payload * 50)
    record = make_record(root, plan.engine_file, plan.to_dict(), gpu_name="", build_seconds=0.5)
    add_engine_record(root, record)
    return record


def test_rtx_record_round_trip(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    record = add_rtx_engine(root)
    (stored,) = load_package(root).manifest.engines
    assert stored == record and EngineRecord.from_dict(json.loads(json.dumps(stored.to_dict()))) == stored
    assert (stored.runtime, stored.runtime_title, stored.tensorrt) == ("tensorrt-rtx", "TensorRT-RTX", RTX)
    assert stored.compute_capabilities == ("8.6", "8.9") and stored.sm == "sm86-sm89"
    assert stored.to_dict()["gpu"]["compute_capabilities"] == ["8.6", "8.9"]


def test_records_written_before_runtimes_were_named_are_tensorrt_of_one_gpu(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    record = add_rtx_engine(root)
    data = record.to_dict()
    del data["runtime"], data["gpu"]["compute_capabilities"]
    old = EngineRecord.from_dict(data)
    assert old.runtime == "tensorrt" and old.compute_capabilities == (old.compute_capability,)


@pytest.mark.parametrize("change, message", [
    ({"runtime": "onnx"}, "runtime 'onnx'"),
    ({"gpu": {"name": "", "compute_capability": "8.9", "compute_capabilities": ["8.6", "8.9"]}}, "first of"),
])
def test_malformed_rtx_records_are_refused(tmp_path, change, message):
    data = {**add_rtx_engine(make_engine_package(tmp_path / "pkg")).to_dict(), **change}
    with pytest.raises(PackageError, match=message):
        EngineRecord.from_dict(data)


def test_rtx_engine_runs_on_any_targeted_gpu_with_the_exact_release(tmp_path):
    record = add_rtx_engine(make_engine_package(tmp_path / "pkg"))
    assert engine_compatibility(record, RTX, (8, 9), "RTX 4090")[0]
    assert engine_compatibility(record, RTX, (8, 6), "RTX A6000")[0]
    ok, why = engine_compatibility(record, RTX, (12, 0), "RTX 5090")
    assert not ok and "sm86, sm89" in why and "--compute-capability 8.6 8.9 12.0" in why
    ok, why = engine_compatibility(record, "1.7.2.3", (8, 9), "RTX 4090")
    assert not ok and "exact release" in why
    ok, why = engine_compatibility(record, None, (8, 9), "RTX 4090")
    assert not ok and "liverlesion[tensorrt-rtx]" in why


def test_each_backend_selects_only_its_own_runtimes_engines(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    add_rtx_engine(root, targets=("8.9",))
    records = list(load_package(root).manifest.engines)
    chosen, refused = select_engine(records, "fp16", "10.3.0", (8, 9), "RTX 4090")  # TensorRT's turn
    assert chosen is None and refused == []
    chosen, _ = select_engine(records, "fp16", RTX, (8, 9), "RTX 4090", runtime="tensorrt-rtx")
    assert chosen is not None and chosen.runtime == "tensorrt-rtx"


def run_engines_cli(root, *flags):
    from liverlesion.cli import engines as engines_cli

    return engines_cli.run(argparse.Namespace(package=str(root), json="--json" in flags))


def test_engines_command_judges_each_engine_by_its_own_runtime(tmp_path, capsys, monkeypatch):
    root = make_engine_package(tmp_path / "pkg")
    add_rtx_engine(root, targets=("8.9",))
    add_rtx_engine(root, precision="int8", targets=("12.0",))
    monkeypatch.setattr(versions, "installed_tensorrt_version", lambda: TrtVersion.parse("10.3.0.30"))
    monkeypatch.setattr(versions, "installed_tensorrt_rtx_version", lambda: TrtVersion.parse(RTX))
    ada = GpuInfo(0, "NVIDIA RTX 4000 Ada", (8, 9), 20 * 2**30)
    monkeypatch.setattr(gpu_module, "detect_gpu", lambda index=0, refresh=False: ada)
    assert run_engines_cli(root, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"]["tensorrt_rtx"] == RTX
    runs = {row["file"]: (row["runs_here"], row["reason"]) for row in report["engines"]}
    assert runs["engines/joint_fp16_sm89_rtx1.7.1.engine"][0] is True
    assert runs["engines/joint_int8_sm120_rtx1.7.1.engine"][0] is False
    assert "sm120" in runs["engines/joint_int8_sm120_rtx1.7.1.engine"][1]


# -- real TensorRT-RTX: NVIDIA's parser and AOT builder, on this CPU -------------------------------------


@requires_rtx
@pytest.mark.tensorrt_rtx
def test_real_rtx_build_records_what_the_builder_targeted(tmp_path, monkeypatch):
    from liverlesion.engines.build import build_engine

    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")  # an AOT build needs no GPU: prove it
    root = make_engine_package(tmp_path / "pkg")
    plan = rtx_plan(read_manifest(root), "fp32", ("8.9", "12.0"), version=tensorrt_rtx_version())
    lines: list[str] = []
    record = build_engine(root, plan, log=lines.append)
    assert record.runtime == "tensorrt-rtx" and record.compute_capabilities == ("8.9", "12.0")
    assert record.gpu_name == "" and record.tensorrt == tensorrt_rtx_version()
    engine = root / record.file
    assert engine.stat().st_size == record.size > 1000
    stored = load_package(root).manifest.engines  # verified against its sha256 by the loader
    assert [r.file for r in stored] == [record.file]
    assert record.onnx == "model_fp32.onnx" and record.plan["onnx_sha256"] == plan.onnx_sha256


@requires_rtx
@pytest.mark.tensorrt_rtx
def test_real_rtx_build_engine_cli_for_a_fleet(tmp_path, capsys, monkeypatch):
    from liverlesion.cli import main

    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    root = make_engine_package(tmp_path / "pkg")
    assert main(["build-engine", str(root), "--runtime", "tensorrt-rtx", "--precision", "fp16",
                 "--compute-capability", "8.6", "8.9", "12.0"]) == 0
    out = capsys.readouterr().out
    assert "any GPU of its targets (8.6, 8.9, 12.0)" in out
    (record,) = load_package(root).manifest.engines
    assert record.file == "engines/joint_fp16_sm86-sm89-sm120_rtx1.7.1.engine"
    assert record.compute_capabilities == ("8.6", "8.9", "12.0")


def test_ci_runs_the_real_nvidia_checks_rather_than_skipping_them():
    """CI installs TensorRT-RTX (dev.sh): there its absence is a failure, not a quiet skip."""
    if os.environ.get("CI", "").lower() in ("1", "true") and tensorrt_rtx_version() is None:
        pytest.fail("CI=true and TensorRT-RTX is missing: ./dev.sh setup installs tensorrt-rtx-cu12 "
                    "(constraints/dev.txt)")


@requires_rtx
@pytest.mark.tensorrt_rtx
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_every_exported_precision_builds_for_rtx_gpus(export_world, tmp_path, monkeypatch, arch):
    """The exported and quantized packages (the demo's pipeline): each TensorRT-bound file builds, from the file
    the gate vouched for, and the engine is recorded with what was targeted."""
    import shutil

    from liverlesion.engines.build import build_engine

    monkeypatch.setenv("LIVERLESION_NO_GPU", "1")
    root = tmp_path / arch
    shutil.copytree(export_world.packages[arch], root)
    manifest = read_manifest(root)
    for precision in ("fp32", "fp16", "int8"):
        plan = rtx_plan(manifest, precision, ("8.6", "12.0"), version=tensorrt_rtx_version())
        gated = next(f for f in manifest.files if f.path == plan.onnx)
        verdict = gated.extra["nvidia_parser"]  # recorded by export / quantize: the gate ran on this file
        assert verdict["built"] and (verdict["int8_convolutions"] > 0) == (precision == "int8")
        record = build_engine(root, plan, log=lambda line: None)
        assert record.onnx == gated.path and record.plan["onnx_sha256"] == gated.sha256
        assert record.compute_capabilities == ("8.6", "12.0") and record.size > 0
    assert {e.precision for e in load_package(root).manifest.engines} == {"fp32", "fp16", "int8"}
    assert not any(e.onnx.endswith("u8s8.onnx") for e in load_package(root).manifest.engines)
