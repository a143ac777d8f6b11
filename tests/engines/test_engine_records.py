"""Engine records in the manifest, which engine runs on which machine, and `liverlesion engines`."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from engine_fixtures import make_engine_package
from liverlesion.engine_tags import TrtVersion
from liverlesion.engines import versions
from liverlesion.engines.plan import BuildOptions, plan_build
from liverlesion.engines.records import (
    EngineRecord,
    add_engine_record,
    engine_compatibility,
    engine_records,
    make_record,
    select_engine,
)
from liverlesion.errors import ChecksumError, EngineError, PackageError
from liverlesion.machine import gpu as gpu_module
from liverlesion.machine.gpu import GpuInfo
from liverlesion.package import load_package
from liverlesion.package.store import file_record, read_manifest


def add_engine(root, trt="10.3.0.30", precision="fp16", cc=(8, 7), gpu="Orin", payload=b"PLAN", **options):
    """Plan, write a stand-in plan file, and record it, as build_engine does after TensorRT."""
    options = BuildOptions(precision=precision, compute_capability=cc, **options)
    plan = plan_build(trt, options, read_manifest(root))
    path = root / plan.engine_file
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(payload * 100)
    record = make_record(root, plan.engine_file, plan.to_dict(), gpu_name=gpu, build_seconds=12.5)
    add_engine_record(root, record)
    return record


def test_record_round_trip_and_verified_by_the_loader(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    record = add_engine(root, max_batch=4)
    package = load_package(root)  # verifies every file, the engine included
    (stored,) = engine_records(package.manifest)
    assert stored == record
    assert EngineRecord.from_dict(json.loads(json.dumps(stored.to_dict()))) == stored
    assert stored.file == "engines/joint_fp16_sm87_trt10.3.0.engine"
    assert (stored.tensorrt, stored.compute_capability, stored.gpu_name) == ("10.3.0.30", "8.7", "Orin")
    assert (stored.min_batch, stored.max_batch) == (1, 4)
    assert stored.size == 400 and stored.build_seconds == 12.5 and stored.built.endswith("Z")
    assert stored.plan["code_path"] == "strongly-typed"
    engine_file = package.manifest.find(role="engine")
    assert engine_file.path == stored.file and engine_file.sha256 == stored.sha256


def test_rebuilding_replaces_the_record_and_keeps_the_rest(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    add_engine(root, payload=b"OLD")
    add_engine(root, precision="int8")
    new = add_engine(root, payload=b"NEW!")
    manifest = read_manifest(root)
    assert sorted(r.file for r in engine_records(manifest)) == [
        "engines/joint_fp16_sm87_trt10.3.0.engine", "engines/joint_int8_sm87_trt10.3.0.engine"]
    assert [r.sha256 for r in engine_records(manifest) if r.precision == "fp16"] == [new.sha256]
    paths = [f.path for f in manifest.files]
    assert len(paths) == len(set(paths))
    assert manifest.raw["outputs"]["labels"]["dtype"] == "int32"  # untouched fields survive
    load_package(root)


def test_calibration_cache_recorded_beside_the_engine(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    record = add_engine(root, trt="8.5.2", precision="int8")
    assert record.calibration_cache == "engines/joint_sm87_trt8.5.2.calib"
    (root / record.calibration_cache).write_bytes(b"TRT-8502-EntropyCalibration2\n")
    cache = file_record(root, record.calibration_cache, "calibration-cache", tensorrt="8.5.2",
                        compute_capability="8.7")
    add_engine_record(root, record, [cache])
    manifest = load_package(root).manifest
    assert manifest.find(role="calibration-cache", tensorrt="8.5.2").path == record.calibration_cache


def test_recording_a_missing_engine_file_is_refused(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    record = add_engine(root)
    (root / record.file).unlink()
    with pytest.raises(EngineError, match="missing"):
        add_engine_record(root, record)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("gpu"), "gpu"),
    (lambda r: r.update(sha256="abc"), "sha256"),
    (lambda r: r.update(file="../outside.engine"), "plain relative name"),
    (lambda r: r.update(tensorrt="new"), "TensorRT version"),
    (lambda r: r["profile"].pop("max"), "max"),
])
def test_malformed_records_are_refused(tmp_path, change, message):
    root = make_engine_package(tmp_path / "pkg")
    data = add_engine(root).to_dict()
    change(data)
    with pytest.raises(PackageError, match=message):
        EngineRecord.from_dict(data)


@pytest.fixture
def orin_fp16(tmp_path):
    return add_engine(make_engine_package(tmp_path / "pkg"))


@pytest.mark.parametrize("trt, cc, ok, message", [
    ("10.3.0.30", (8, 7), True, "built for this GPU"),
    ("10.3.0", "8.7", True, "built for this GPU"),          # build number unknown: not a mismatch
    ("10.3.0.26", (8, 7), False, "built with TensorRT 10.3.0.30"),
    ("10.3.1", (8, 7), False, "rebuild it on this machine: liverlesion build-engine"),
    ("10.4.0", "sm87", False, "10.4.0"),
    ("10.3.0.30", (8, 6), False, "sm87.*sm86"),
    ("10.3.0.30", (11, 0), False, "do not move between GPU models"),
    (None, (8, 7), False, r"liverlesion\[tensorrt\]"),
    ("10.3.0.30", None, False, "no CUDA GPU"),
])
def test_engine_compatibility(orin_fp16, trt, cc, ok, message):
    runs, reason = engine_compatibility(orin_fp16, trt, cc)
    assert runs is ok
    assert re.search(message, reason), reason


def test_same_capability_other_gpu_model_runs_with_a_warning(orin_fp16):
    runs, reason = engine_compatibility(orin_fp16, "10.3.0.30", (8, 7), gpu_name="Jetson Orin Nano")
    assert runs and "rebuild here" in reason


@pytest.mark.parametrize("built, runtime, ok", [
    ("10.3.0", "10.3.0", True),
    ("10.3.0", "10.8.0", True),     # later 10.x
    ("10.8.0", "10.3.0", False),    # older runtime
    ("10.13.0", "11.4.1", True),    # 10 -> 11 supported
    ("8.6.1", "10.3.0", True),      # 8 -> 10 supported
    ("8.6.1", "11.4.1", False),     # 8 -> 11 not
])
def test_version_compatible_engines(tmp_path, built, runtime, ok):
    root = make_engine_package(tmp_path / "pkg")
    record = add_engine(root, trt=built, version_compatible=True)
    assert engine_compatibility(record, runtime, (8, 7))[0] is ok


def test_select_engine_prefers_one_that_runs_and_explains_the_others(tmp_path):
    root = make_engine_package(tmp_path / "pkg")
    add_engine(root, trt="8.5.2", cc=(8, 7))
    add_engine(root, trt="10.3.0", cc=(8, 7), dla_core=0)
    add_engine(root, trt="10.3.0", cc=(8, 7))
    add_engine(root, trt="10.3.0", cc=(8, 9), gpu="RTX 4090")
    records = engine_records(read_manifest(root))
    chosen, refused = select_engine(records, "fp16", "10.3.0", (8, 7))
    assert chosen.file == "engines/joint_fp16_sm87_trt10.3.0.engine" and chosen.dla_core is None
    assert {r.file for r, _ in refused} == {"engines/joint_fp16_sm87_trt8.5.2.engine"}
    dla, _ = select_engine(records, "fp16", "10.3.0", (8, 7), dla=True)
    assert dla.dla_core == 0
    none, refused = select_engine(records, "fp16", "10.3.0", (7, 2))
    assert none is None and len(refused) == 4 and all("sm72" in why for _, why in refused)
    assert select_engine(records, "int8", "10.3.0", (8, 7)) == (None, [])


def run_engines_cli(root, *argv):
    from liverlesion.cli import engines

    parser = argparse.ArgumentParser()
    engines.register(parser.add_subparsers(dest="command"))
    return engines.run(parser.parse_args(["engines", str(root), *argv]))


@pytest.fixture
def orin_with_trt_10_3(monkeypatch):
    installed = TrtVersion.parse("10.3.0.30")
    monkeypatch.setattr(versions, "installed_tensorrt_version", lambda: installed)
    monkeypatch.setattr(versions, "installed_tensorrt_rtx_version", lambda: None)
    orin = GpuInfo(0, "Orin", (8, 7), 8 * 2**30, integrated=True)
    monkeypatch.setattr(gpu_module, "detect_gpu", lambda index=0, refresh=False: orin)


def test_engines_command_says_what_runs_here(tmp_path, capsys, orin_with_trt_10_3):
    root = make_engine_package(tmp_path / "pkg")
    add_engine(root, trt="10.3.0.30")
    add_engine(root, trt="8.5.2", precision="int8")
    tampered = add_engine(root, trt="10.3.0.30", precision="int8")
    (root / tampered.file).write_bytes(b"X" * tampered.size)
    assert run_engines_cli(root, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["machine"] == {"tensorrt": "10.3.0.30", "tensorrt_rtx": None, "gpu": "Orin",
                                 "compute_capability": "8.7"}
    runs = {row["file"]: (row["runs_here"], row["reason"]) for row in report["engines"]}
    assert runs["engines/joint_fp16_sm87_trt10.3.0.engine"][0] is True
    assert runs["engines/joint_int8_sm87_trt8.5.2.engine"][0] is False
    assert "8.5.2" in runs["engines/joint_int8_sm87_trt8.5.2.engine"][1]
    assert runs[tampered.file][0] is False and "sha256" in runs[tampered.file][1]
    load_package(root)  # a stale engine does not block the ONNX files...
    with pytest.raises(ChecksumError):
        load_package(root).verify()  # ...but a full check still sees it
    assert run_engines_cli(root) == 0
    text = capsys.readouterr().out
    assert "TensorRT 10.3.0.30" in text and text.count("\nyes ") == 1


def test_engines_command_on_a_package_without_engines(tmp_path, capsys, orin_with_trt_10_3):
    assert run_engines_cli(make_engine_package(tmp_path / "pkg")) == 0
    assert "no TensorRT engines" in capsys.readouterr().out
