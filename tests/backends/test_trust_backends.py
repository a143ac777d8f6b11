"""Issue 11: the OpenVINO compiled-model cache is verified before it runs, threads are capped, bench rows say
what OpenVINO executed. CPU-dependent expectations come from OpenVINO's own probe, never from this CPU."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import stat
import sys
import threading
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from liverlesion.backends import openvino_cache as cache
from liverlesion.bench.report import executed_cell, format_table, to_markdown
from liverlesion.errors import BackendError, ChecksumError
from liverlesion.machine import host
from liverlesion.openvino_execution import ACCEPTED_EXECUTION, execution_problem
from liverlesion.package import load_package

HAVE_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAVE_OPENVINO, reason="OpenVINO is not installed")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
POSIX = hasattr(os, "getuid")
needs_posix = pytest.mark.skipif(not POSIX, reason="no user ids or file modes here")


def capabilities() -> tuple[str, ...]:
    """OpenVINO's CPU probe, as the backend reads it (empty without OpenVINO)."""
    if not HAVE_OPENVINO:
        return ()
    import openvino as ov

    from liverlesion.openvino_execution import cpu_capabilities

    return cpu_capabilities(ov.Core())


# -- threads: one definition, clamped to the CPUs this process may use ------------------------------------
@pytest.mark.parametrize("bad", [0, -1, True, False, 2.5, "4", [2], float("nan")])
def test_threads_that_are_not_positive_integers_are_refused(bad):
    with pytest.raises(BackendError, match=r"threads=.* is not accepted: give a positive integer"):
        host.threads_or_all(bad)


def test_threads_above_the_usable_cpus_are_clamped_with_a_warning(caplog, monkeypatch):
    monkeypatch.setattr(host, "_WARNED", set())  # warned once per process: start this test afresh
    usable = host.cpu_count()
    assert host.threads_or_all(None) == usable
    assert host.threads_or_all(np.int64(1)) == 1  # numpy integers are integers
    with caplog.at_level(logging.WARNING, logger="liverlesion.backends"):
        assert host.threads_or_all(usable + 1) == usable
        assert host.threads_or_all(1000) == usable
        assert host.threads_or_all(1000) == usable
    assert sum("threads=1000 is more than" in r.getMessage() for r in caplog.records) == 1  # once, not twice
    assert host.threads_or_all(usable) == usable  # at the limit: no clamp


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_onnxruntime_threads_1000_makes_no_more_threads_than_cpus(sdk_world):
    from liverlesion.backends.onnxruntime import OnnxRuntimeBackend

    with load_package(sdk_world.package) as package:
        for bad in (0, True, "2"):
            with pytest.raises(BackendError, match="threads="):
                OnnxRuntimeBackend(package, "fp32", threads=bad)
        before = _os_threads() if Path("/proc/self/task").is_dir() else None
        with OnnxRuntimeBackend(package, "fp32", threads=1000) as ort:
            assert ort.threads == host.cpu_count()
            assert ort._session.get_session_options().intra_op_num_threads == host.cpu_count()
            if before is not None:  # the symptom itself: 1,003 OS threads for threads=1000
                assert _os_threads() - before <= host.cpu_count() + 4
            grid = package.manifest.grid.size
            assert ort.infer(np.zeros((1, 1, *grid), np.float32))["labels"].shape == (1, *grid)


def test_torch_threads_1000_is_clamped_before_loading(sdk_world):
    torch = pytest.importorskip("torch")
    from liverlesion.backends.torch import TorchBackend

    saved = torch.get_num_threads()
    try:
        with load_package(sdk_world.package) as package:
            with pytest.raises(BackendError, match="threads=-3"):
                TorchBackend(package, "fp32", threads=-3)
            with TorchBackend(package, "fp32", threads=1000):
                assert torch.get_num_threads() == host.cpu_count()
    finally:
        torch.set_num_threads(saved)


# -- what OpenVINO executes must agree with what was asked ------------------------------------------------
class FakeCompiled:
    """Stands in for a CompiledModel's precision property (the one thing execution_problem asks it)."""

    def __init__(self, hint: str) -> None:
        self.hint = hint

    def get_property(self, name: str):
        assert name == "INFERENCE_PRECISION_HINT"
        return SimpleNamespace(get_type_name=lambda: self.hint)


@pytest.mark.parametrize("precision,hint,got,executed,runtime,problem", [
    ("fp32", "f32", "f32", "fp32", {"f32": 17}, None),
    ("fp32", "f32", "f32", "int8", {"u8": 16, "f32": 1}, "run in int8"),  # the int8 blob under fp32's name
    ("fp32", "f32", "f32", "fp32", {"f32": 16, "bf16": 1}, "1 of its convolutions run in bf16"),
    ("fp32", "f32", "bf16", "fp32", {"f32": 17}, "inference precision is bf16, not f32"),
    ("int8", "f32", "f32", "int8", {"u8": 16, "f32": 1}, None),  # the float head of an int8 model
    ("int8", "f32", "f32", "fp32", {"f32": 17}, None),  # more precise than asked: accepted, reported
    ("bf16", "bf16", "bf16", "bf16", {"bf16": 17}, None),
    ("bf16", "bf16", "bf16", "int8", {"u8": 17}, "run in int8"),
    ("fp16", "f16", "f16", "fp32", {"f32": 17}, None),  # a CPU that keeps f16 convolutions in f32
    ("fp16", "f16", "f16", "bf16", {"bf16": 17}, "run in bf16"),  # fewer mantissa bits than asked
    ("fp32", "f32", "f32", "unknown", {}, None),  # no runtime info: nothing to disagree with
])
def test_execution_problem_table(precision, hint, got, executed, runtime, problem):
    found = execution_problem(FakeCompiled(got), precision, hint, executed, runtime)
    assert (found is None) if problem is None else (problem in found)


# -- the cache's own checks, on bytes (no OpenVINO needed) --------------------------------------------------
KEY = cache.CacheKey(source_path="model_fp32.onnx", source_sha256="ab" * 32, input_shape=(1, 1, 32, 32),
                     openvino="2026.4.1", device="CPU", cpu="test CPU", capabilities=("FP32", "INT8"),
                     precision="fp32", config={"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 1,
                                               "INFERENCE_PRECISION_HINT": "f32"})
BLOB = bytes(range(256)) * 64


def _entry(tmp_path: Path) -> Path:
    folder = cache.prepare_folder(tmp_path, tmp_path / "openvino" / "v" / "sha")
    assert folder is not None
    assert cache.write_entry(folder, KEY, BLOB, "fp32", {"f32": 17})
    return folder


def _edit_record(path: Path, edit) -> None:
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record))


def _xor_middle(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _other_owner(path: Path) -> None:
    os.chown(path, 65534, 65534)


TAMPERS = {
    "xor 64 bytes": lambda blob, record: _xor_middle(blob),
    "truncated blob": lambda blob, record: blob.write_bytes(blob.read_bytes()[: len(BLOB) // 2]),
    "blob grown": lambda blob, record: blob.write_bytes(blob.read_bytes() + b"x"),
    "blob missing": lambda blob, record: blob.unlink(),
    "record not JSON": lambda blob, record: record.write_bytes(b"\xff{"),
    "record nested 20000 deep": lambda blob, record: record.write_text("[" * 20_000 + "]" * 20_000),
    "record of 1 MiB": lambda blob, record: record.write_text(" " * (1 << 20) + record.read_text()),
    "record of another format": lambda blob, record: _edit_record(record, lambda r: r.update(format="x")),
    "record without a size": lambda blob, record: _edit_record(record, lambda r: r["blob"].pop("size")),
    "record for another OpenVINO": lambda blob, record: _edit_record(
        record, lambda r: r["key"].update(openvino="2025.0.0")),
    "record for int8": lambda blob, record: _edit_record(record, lambda r: r["key"].update(precision="int8")),
    "record for another source": lambda blob, record: _edit_record(
        record, lambda r: r["key"].update(source_sha256="cd" * 32)),
    "record for 2 threads": lambda blob, record: _edit_record(
        record, lambda r: r["key"]["config"].update(INFERENCE_NUM_THREADS=2)),
    "record with an extra key field": lambda blob, record: _edit_record(
        record, lambda r: r["key"].update(CACHE_DIR="/elsewhere")),
    "group-writable blob": lambda blob, record: blob.chmod(0o660),
    "world-writable record": lambda blob, record: record.chmod(0o606),
    "blob is a symlink": lambda blob, record: (shutil.copy(blob, blob.with_suffix(".copy")), blob.unlink(),
                                               blob.symlink_to(blob.with_suffix(".copy"))),
    "blob of another user": lambda blob, record: _other_owner(blob),
    "record of another user": lambda blob, record: _other_owner(record),
}


@needs_posix
@pytest.mark.parametrize("tamper", list(TAMPERS))
def test_a_tampered_cache_entry_is_not_read(tmp_path, caplog, tamper):
    if "another user" in tamper and not IS_ROOT:
        pytest.skip("giving a file to another user needs root")
    folder = _entry(tmp_path)
    assert cache.read_entry(folder, KEY) == cache.CacheEntry(BLOB, "fp32", {"f32": 17})
    TAMPERS[tamper](folder / f"{KEY.stem}.blob", folder / f"{KEY.stem}.json")
    with caplog.at_level(logging.WARNING, logger="liverlesion.backends.openvino"):
        assert cache.read_entry(folder, KEY) is None
    assert any("compiling model_fp32.onnx anew" in r.getMessage() for r in caplog.records)


def test_cache_files_and_folders_are_private(tmp_path):
    folder = _entry(tmp_path)
    for level in (tmp_path / "openvino", tmp_path / "openvino" / "v", folder):
        assert stat.S_IMODE(level.stat().st_mode) & 0o077 == 0
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0
    assert sorted(p.name for p in folder.iterdir()) == [f"{KEY.stem}.blob", f"{KEY.stem}.json"]
    record = json.loads((folder / f"{KEY.stem}.json").read_text())
    assert record["blob"] == {"file": f"{KEY.stem}.blob", "size": len(BLOB),
                              "sha256": hashlib.sha256(BLOB).hexdigest()}


def test_a_blob_above_the_limit_is_not_read(tmp_path, caplog):
    folder = _entry(tmp_path)
    with caplog.at_level(logging.WARNING, logger="liverlesion.backends.openvino"):
        assert cache.read_entry(folder, KEY, max_bytes=len(BLOB) - 1) is None
    assert any("more than the" in r.getMessage() for r in caplog.records)


@needs_posix
@pytest.mark.parametrize("level", ["openvino", "openvino/v", "openvino/v/sha"])
def test_a_folder_writable_by_others_turns_the_cache_off(tmp_path, caplog, level):
    _entry(tmp_path)
    (tmp_path / level).chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="liverlesion.backends.openvino"):
        assert cache.prepare_folder(tmp_path, tmp_path / "openvino" / "v" / "sha") is None
    assert any("writable by others" in r.getMessage() for r in caplog.records)


@needs_posix
def test_concurrent_first_loads_all_get_the_cache(tmp_path, caplog):
    """Many processes loading at once on a fresh machine: each creates the folders or finds them made."""
    results: list[Path | None] = []
    for trial in range(20):
        root = tmp_path / f"cache{trial}"  # missing, as on a first load: every level is created here
        folder = root / "openvino" / "2026.4.1" / ("ab" * 32)
        barrier = threading.Barrier(32)

        def first_load(root=root, folder=folder, barrier=barrier):
            barrier.wait()
            results.append(cache.prepare_folder(root, folder))

        threads = [threading.Thread(target=first_load) for _ in range(32)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with caplog.at_level(logging.WARNING, logger="liverlesion.backends.openvino"):
        assert results.count(None) == 0, [r.getMessage() for r in caplog.records][:3]
    assert len(results) == 20 * 32
    for level in (tmp_path / "cache0", tmp_path / "cache0" / "openvino", folder):
        assert stat.S_IMODE(level.stat().st_mode) & 0o077 == 0


def test_a_level_that_is_a_file_turns_the_cache_off_with_a_warning(tmp_path, caplog):
    (tmp_path / "openvino").write_bytes(b"not a folder")
    with caplog.at_level(logging.WARNING, logger="liverlesion.backends.openvino"):
        assert cache.prepare_folder(tmp_path, tmp_path / "openvino" / "v" / "sha") is None
    assert any("not usable" in r.getMessage() for r in caplog.records)


# -- INT8 calibration caches (TensorRT 8.x), device-built: checked against their record before reuse ----------
def test_read_cache_checks_the_records_sha256(tmp_path):
    from liverlesion.engines.int8_calibrator import read_cache, write_cache

    path = write_cache(tmp_path / "engines" / "x.calib", b"TRT-8502-EntropyCalibration2\nhu: 3c010a14\n")
    recorded = hashlib.sha256(path.read_bytes()).hexdigest()
    assert read_cache(path, recorded) == path.read_bytes()
    path.write_bytes(b"TRT-8502-EntropyCalibration2\nhu: 7f7fffff\n")  # another scale, the same size
    with pytest.raises(ChecksumError, match="does not match the sha256 of its manifest record"):
        read_cache(path, recorded)


def test_a_tampered_calibration_cache_is_recalibrated_not_reused(tmp_path, monkeypatch):
    from engine_fixtures import HostOnlyMemory, make_engine_package
    from liverlesion.engines import build as build_module
    from liverlesion.engines.plan import BuildOptions, plan_build
    from liverlesion.machine import cuda_memory
    from liverlesion.machine.gpu import GpuInfo
    from trt_fakes import FakeBuilderTrt  # a tensorrt module that calibrates unless given a cache

    fake = FakeBuilderTrt("8.5.2.2")
    monkeypatch.setitem(sys.modules, "tensorrt", fake.module)
    monkeypatch.setattr(build_module, "detect_gpu", lambda index=0: GpuInfo(0, "Xavier", (7, 2), 2**34, True))
    monkeypatch.setattr(cuda_memory, "open_cuda_memory", lambda prefer=None, device=0: HostOnlyMemory())
    root = make_engine_package(tmp_path / "pkg", slices=10)
    options = BuildOptions("int8", (7, 2), calibration_batch=4)

    def build(**changes):
        messages: list[str] = []
        the_plan = plan_build("8.5.2.2", replace(options, **changes), load_package(root).manifest)
        before = fake.calls.count(("calibration batch",))
        build_module.build_engine(root, the_plan, log=messages.append)
        return the_plan, fake.calls.count(("calibration batch",)) - before, messages

    assert build()[1] == 3  # the first build calibrates (10 slices, batches of 4) and records the cache
    record = load_package(root).manifest.find(role="calibration-cache")
    again, batches, _ = build()
    assert (again.calibrator.reuse_cache, again.calibrator.cache_sha256, batches) == (True, record.sha256, 0)
    (root / record.path).write_bytes(b"TRT-8502-EntropyCalibration2\nhu: 7f7fffff\n")  # other scales
    tampered, batches, messages = build()
    assert tampered.calibrator.reuse_cache and batches == 3  # recalibrated: TensorRT never read it
    assert any("does not match the sha256" in m and "calibrating anew" in m for m in messages)
    assert build()[1] == 0  # the rewritten cache and its new record are reused again
    pinned, batches, _ = build(reuse_calibration_cache=False)  # what a pinned build_engine asks for
    assert pinned.calibrator.reuse_cache is False and pinned.calibrator.cache_sha256 is None and batches == 3


# -- the OpenVINO backend on a real package: tampered caches give a fresh compile's labels --------------------
@pytest.fixture(scope="module")
def joint(export_world):
    with load_package(export_world.packages["joint"]) as package:
        yield package


@pytest.fixture(scope="module")
def slices(export_world, joint) -> np.ndarray:
    from liverlesion.export.accuracy import load_eval_set

    return load_eval_set(export_world.eval_data, joint.manifest.grid).hu[:24]


def _labels(backend, hu: np.ndarray) -> np.ndarray:
    return np.concatenate([backend.infer(hu[i:i + 1])["labels"] for i in range(len(hu))])


@pytest.fixture(scope="module")
def fresh(joint, slices, tmp_path_factory):
    """Per precision: labels, executed precision and runtime precisions of a compile into an empty cache."""
    from liverlesion.backends.openvino import OpenVinoBackend

    wanted = ["fp32"] + [p for p, c in (("int8", "INT8"), ("bf16", "BF16"), ("fp16", "FP16"))
                         if c in capabilities()]
    results = {}
    for precision in wanted:
        with OpenVinoBackend(joint, precision, threads=1, cache_dir=tmp_path_factory.mktemp("fresh")) as vino:
            assert vino.loaded_from_cache == {"LATENCY": False}
            results[precision] = (_labels(vino, slices), vino.executed_precision, vino.runtime_precisions)
    return results


def _only(folder: Path, suffix: str) -> Path:
    found = sorted(folder.glob(f"*{suffix}"))
    assert len(found) == 1, found
    return found[0]


def _swap_in(fp32: Path, other: Path, *, record: str) -> None:
    """Copy ``other``'s blob over fp32's; its record too ("copy"), or fp32's record forged to match ("forge")."""
    blob = _only(other, ".blob")
    shutil.copyfile(blob, _only(fp32, ".blob"))
    if record == "copy":
        shutil.copyfile(_only(other, ".json"), _only(fp32, ".json"))
    elif record == "forge":  # what a tamperer who read this module would write
        path = _only(fp32, ".json")
        forged = json.loads(path.read_text()) if path.exists() else {}
        data = blob.read_bytes()
        forged["blob"] = {**forged.get("blob", {}), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        path.write_text(json.dumps(forged))


@needs_openvino
@pytest.mark.parametrize("tamper", ["xor 64 bytes", "truncated", "int8 blob", "int8 blob and record",
                                    "int8 blob, forged record", "bf16 blob and record",
                                    "bf16 blob, forged record", "record for another OpenVINO",
                                    "group-writable blob", "world-writable record", "blob of another user",
                                    "symlinked blob"])
def test_a_tampered_compiled_model_gives_a_fresh_compiles_labels(joint, slices, fresh, tmp_path, caplog,
                                                                   tamper):
    from liverlesion.backends.openvino import OpenVinoBackend

    for precision in ("bf16", "int8"):
        if precision in tamper and precision not in fresh:
            pytest.skip(f"this CPU's OpenVINO runs no {precision} ({capabilities()})")
    if "another user" in tamper and not IS_ROOT:
        pytest.skip("giving a file to another user needs root")
    if tamper == "int8 blob, forged record" and fresh["int8"][1] not in ("int8",):
        pytest.skip("this CPU runs the INT8 graph in f32: an INT8 blob is not told apart by what it executes")
    with OpenVinoBackend(joint, "fp32", threads=1, cache_dir=tmp_path) as first:
        folder = first.cache
    assert folder is not None
    other = None
    if "int8" in tamper or "bf16" in tamper:
        precision = "int8" if "int8" in tamper else "bf16"
        root = tmp_path / "other" if precision == "int8" else tmp_path
        with OpenVinoBackend(joint, precision, threads=1, cache_dir=root) as donor:
            other = donor.cache
        if precision == "bf16":  # the same source file: its entry sits beside fp32's, in a folder of its own
            other = tmp_path / "bf16"
            other.mkdir()
            for path in folder.glob("bf16-*"):
                shutil.move(path, other / path.name)
    blob, record = _only(folder, ".blob"), folder / f"{_only(folder, '.blob').stem}.json"
    if tamper == "xor 64 bytes":
        _xor_middle(blob)
    elif tamper == "truncated":
        blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 2])
    elif other is not None:
        _swap_in(folder, other, record="forge" if "forged" in tamper else "copy" if "record" in tamper else "")
    elif tamper == "record for another OpenVINO":
        _edit_record(record, lambda r: r["key"].update(openvino="2025.0.0"))
    elif tamper == "group-writable blob":
        blob.chmod(0o660)
    elif tamper == "world-writable record":
        record.chmod(0o606)
    elif tamper == "blob of another user":
        _other_owner(blob)
    elif tamper == "symlinked blob":
        shutil.copy(blob, tmp_path / "elsewhere.blob")
        blob.unlink()
        blob.symlink_to(tmp_path / "elsewhere.blob")
    labels, executed, runtime = fresh["fp32"]
    with caplog.at_level(logging.WARNING, logger="liverlesion.backends.openvino"), \
            OpenVinoBackend(joint, "fp32", threads=1, cache_dir=tmp_path) as second:
        # rebuilt, not imported; except a bf16 blob behind a forged record, which OpenVINO's CPU plugin
        # compiles again from its graph at the f32 asked for: what runs is checked below, as for every case
        if tamper != "bf16 blob, forged record":
            assert second.loaded_from_cache == {"LATENCY": False}
        assert (second.executed_precision, second.runtime_precisions) == (executed, runtime) == \
               ("fp32", {"f32": sum(runtime.values())})
        np.testing.assert_array_equal(_labels(second, slices), labels)
    if second.loaded_from_cache == {"LATENCY": False}:
        assert any(r.levelno == logging.WARNING and "model_fp32.onnx" in r.getMessage() for r in caplog.records)
    with OpenVinoBackend(joint, "fp32", threads=1, cache_dir=tmp_path) as third:  # rewritten: imported again
        assert third.loaded_from_cache == {"LATENCY": True}
        assert third.executed_precision == "fp32"
        np.testing.assert_array_equal(_labels(third, slices), labels)


@needs_openvino
@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16", "fp16"])
def test_each_precision_imports_its_own_verified_entry(joint, slices, fresh, tmp_path, precision):
    from liverlesion.backends.openvino import OpenVinoBackend

    if precision not in fresh:
        pytest.skip(f"this CPU's OpenVINO lists {capabilities()}")
    labels, executed, runtime = fresh[precision]
    assert executed in ACCEPTED_EXECUTION[precision]
    for run in range(2):
        with OpenVinoBackend(joint, precision, threads=1, cache_dir=tmp_path) as vino:
            assert vino.loaded_from_cache == {"LATENCY": bool(run)}
            assert (vino.executed_precision, vino.runtime_precisions) == (executed, runtime)
            np.testing.assert_array_equal(_labels(vino, slices), labels)


@needs_openvino
def test_the_throughput_model_is_verified_too(joint, slices, tmp_path):
    from liverlesion.backends.openvino import OpenVinoBackend

    with OpenVinoBackend(joint, "fp32", threads=2, cache_dir=tmp_path / "fresh") as vino:
        expected = vino.infer(slices[:6])["labels"]
    with OpenVinoBackend(joint, "fp32", threads=2, cache_dir=tmp_path) as vino:
        vino.infer(slices[:6])
        folder = vino.cache
    blobs = sorted(folder.glob("*.blob"))
    assert len(blobs) == 2  # latency and throughput
    for blob in blobs:
        _xor_middle(blob)
    with OpenVinoBackend(joint, "fp32", threads=2, cache_dir=tmp_path) as vino:
        np.testing.assert_array_equal(vino.infer(slices[:6])["labels"], expected)
        assert vino.loaded_from_cache == {"LATENCY": False, "THROUGHPUT": False}


@needs_openvino
def test_the_issues_path_liverlesion_cache_env_and_a_planted_blob_in_an_open_folder(joint, slices, fresh,
                                                                                      tmp_path, monkeypatch):
    from liverlesion.backends.openvino import OpenVinoBackend

    monkeypatch.setenv("LIVERLESION_CACHE", str(tmp_path / "cache"))
    with OpenVinoBackend(joint, "fp32", threads=1) as first:
        folder = first.cache
    assert folder is not None and folder.is_relative_to(tmp_path / "cache")
    _xor_middle(_only(folder, ".blob"))
    with OpenVinoBackend(joint, "fp32", threads=1) as second:
        assert second.loaded_from_cache == {"LATENCY": False}
        np.testing.assert_array_equal(_labels(second, slices), fresh["fp32"][0])
    if POSIX:  # a folder others may write to is not read at all, whatever it holds
        folder.chmod(0o777)
        with OpenVinoBackend(joint, "fp32", threads=1) as third:
            assert third.cache is None and third.loaded_from_cache == {"LATENCY": False}


def _forge(folder: Path, donor: Path) -> None:
    """Put the donor's blob in ``folder`` behind a record rewritten to match it: a forgery every check passes."""
    blob, donor_blob = _only(folder, ".blob"), _only(donor, ".blob")
    data = donor_blob.read_bytes()
    said = json.loads(donor_blob.with_suffix(".json").read_text())
    blob.write_bytes(data)
    _edit_record(blob.with_suffix(".json"), lambda r: r.update(
        blob={**r["blob"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
        executed_precision=said["executed_precision"], runtime_precisions=said["runtime_precisions"]))


@needs_openvino
def test_a_pinned_load_compiles_afresh_so_a_consistent_forgery_never_runs(joint, slices, fresh, sdk_world, tmp_path,
                                                                          monkeypatch):
    from liverlesion import LesionAnalyzer
    from liverlesion.backends.openvino import OpenVinoBackend

    monkeypatch.setenv("LIVERLESION_CACHE", str(tmp_path / "cache"))
    with OpenVinoBackend(joint, "fp32", threads=1) as first:
        folder = first.cache
    with load_package(sdk_world.package) as other, \
            OpenVinoBackend(other, "fp32", threads=1, cache_dir=tmp_path / "donor") as donor:
        donor_labels, donor_folder = _labels(donor, slices), donor.cache
    assert not np.array_equal(donor_labels, fresh["fp32"][0])  # another network: the forgery would show
    _forge(folder, donor_folder)
    with OpenVinoBackend(joint, "fp32", threads=1) as unpinned:  # documented: without a pin, the user's files
        assert unpinned.loaded_from_cache == {"LATENCY": True}    # are trusted, and this one runs
        np.testing.assert_array_equal(_labels(unpinned, slices), donor_labels)
    load = {"backend": "openvino", "precision": "fp32", "threads": 1, "warmup": False, "expect_digest": joint.digest}
    with LesionAnalyzer.load(joint.root, **load) as pinned:
        assert pinned._backend.cache is None and pinned._backend.loaded_from_cache == {"LATENCY": False}
        assert "without the compiled-model cache (pinned package)" in pinned.selection.summary()
        np.testing.assert_array_equal(_labels(pinned._backend, slices), fresh["fp32"][0])
    assert len(list(folder.iterdir())) == 2  # nothing added or rewritten: the trusted load below imports it
    with LesionAnalyzer.load(joint.root, **load, trust_device_builds=True) as trusted:
        assert trusted._backend.loaded_from_cache == {"LATENCY": True}  # trusted: as without a pin


@needs_openvino
def test_predict_trust_device_builds(sdk_world, tmp_path, monkeypatch, capsys):
    from liverlesion.cli import main

    monkeypatch.setenv("LIVERLESION_CACHE", str(tmp_path / "cache"))
    array = tmp_path / "slice.npy"
    hu = np.full((64, 64), 100, np.int16)
    hu[:8] = -1000
    np.save(array, hu, allow_pickle=False)
    digest = load_package(sdk_world.package).digest
    common = ["predict", str(sdk_world.package), str(array), "--backend", "openvino", "--precision", "fp32",
              "--no-warmup", "--threads", "1", "--expect-digest", digest]
    assert main(common) == 0
    assert "without the compiled-model cache (pinned package)" in capsys.readouterr().out
    assert main([*common, "--trust-device-builds"]) == 0
    assert "without the compiled-model cache" not in capsys.readouterr().out


@needs_openvino
def test_the_cache_can_be_turned_off(joint, tmp_path, monkeypatch):
    from liverlesion.backends.openvino import OpenVinoBackend

    with OpenVinoBackend(joint, "fp32", threads=1, cache_dir=False) as vino:
        assert vino.cache is None
    monkeypatch.setenv("LIVERLESION_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(host.NO_CACHE_ENV, "1")
    for _ in range(2):
        with OpenVinoBackend(joint, "fp32", threads=1) as vino:
            assert vino.cache is None and vino.loaded_from_cache == {"LATENCY": False}
    assert not (tmp_path / "cache").exists()
    for bad in (True, 5, ""):
        with pytest.raises(BackendError, match="cache_dir=.* is not accepted"):
            OpenVinoBackend(joint, "fp32", threads=1, cache_dir=bad)


@needs_openvino
def test_a_compile_that_runs_less_precise_than_asked_is_refused(joint, tmp_path, monkeypatch):
    from liverlesion.backends import openvino as ov_backend

    monkeypatch.setattr(ov_backend, "executed_precision", lambda compiled: ("bf16", {"bf16": 17}))
    with pytest.raises(BackendError, match=r"compiled model_fp32.onnx for fp32, but its convolutions run in bf16"):
        ov_backend.OpenVinoBackend(joint, "fp32", threads=1, cache_dir=tmp_path)
    assert not list(tmp_path.rglob("*.blob"))  # nothing cached either


@needs_openvino
def test_openvino_threads_1000_is_capped(joint, tmp_path):
    from liverlesion.backends.openvino import OpenVinoBackend

    with OpenVinoBackend(joint, "fp32", threads=1000, cache_dir=tmp_path) as vino:
        assert vino.threads == host.cpu_count()
        assert int(vino._latency.get_property("INFERENCE_NUM_THREADS")) == host.cpu_count()
    with pytest.raises(BackendError, match="threads=2.5"):
        OpenVinoBackend(joint, "fp32", threads=2.5, cache_dir=tmp_path)


# -- bench rows say what OpenVINO executed ---------------------------------------------------------------
@pytest.mark.parametrize("row,cell", [
    ({"executed_precision": None}, "-"),
    ({"executed_precision": "fp32", "runtime_precisions": {"f32": 39}, "kernels": {"avx512": 39}}, "fp32 avx512"),
    ({"executed_precision": "int8", "runtime_precisions": {"u8": 38, "f32": 1}, "kernels": {"amx": 39}},
     "int8 38/39 amx"),
    ({"executed_precision": "int8", "runtime_precisions": {"u8": 20, "i8": 18, "f32": 1}, "kernels": {}},
     "int8 38/39"),
    ({"executed_precision": "bf16", "runtime_precisions": {"bf16": 39}, "kernels": {"amx": 25, "avx512": 14}},
     "bf16 amx+avx512"),
    ({"executed_precision": "fp32", "runtime_precisions": {"f32": 39}, "kernels": {"avx2": 39}}, "fp32 avx2"),
])
def test_executed_cell(row, cell):
    assert executed_cell(row) == cell


@pytest.mark.slow
def test_bench_rows_say_what_openvino_executed(sdk_world):
    from liverlesion.bench import BenchOptions, load_bench_data, run_benchmark

    options = BenchOptions(backends=("openvino", "onnxruntime"), precisions=("fp32", "fp16", "bf16"),
                           batch_sizes=(1,), iterations=1, warmup=0, progress=False)
    result = run_benchmark(sdk_world.package, load_bench_data(None, 2, size=64), options)
    text, markdown = format_table(result), to_markdown(result)
    header = next(line for line in text.splitlines() if line.startswith("config"))
    assert header.split()[:2] == ["config", "executed"]
    ok = {r["config"]: r for r in result["rows"] if r["status"] == "ok"}
    expected_ov = {"openvino fp32"} | {f"openvino {p}" for p, c in (("bf16", "BF16"), ("fp16", "FP16"))
                                       if c in capabilities()}
    assert {c for c in ok if c.startswith("openvino")} == (expected_ov if HAVE_OPENVINO else set())
    for config, row in ok.items():
        line = next(line for line in text.splitlines() if line.startswith(config + " "))
        md = next(line for line in markdown.splitlines() if line.startswith(f"| {config} |"))
        cell = executed_cell(row)
        assert md.split(" | ")[1] == cell and f" {cell} " in line
        if row["backend"] == "openvino":
            assert row["executed_precision"] in ACCEPTED_EXECUTION[row["precision"]]
            assert row["kernels"] and sum(row["kernels"].values()) == sum(row["runtime_precisions"].values())
            assert cell.startswith(row["executed_precision"])
        else:
            assert cell == "-" and row["executed_precision"] is None
    json.dumps(result, allow_nan=False)  # the new fields are plain JSON
