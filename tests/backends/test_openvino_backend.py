"""The OpenVINO backend: same labels as onnxruntime at f32, INT8 and bf16 within target, the compiled-model cache."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import onnx
import pytest

from liverlesion.backends.onnxruntime import OnnxRuntimeBackend
from liverlesion.errors import BackendError, MissingDependencyError
from liverlesion.export.accuracy import load_eval_set
from liverlesion.metrics import evaluate_predictions, slice_lesion_class
from liverlesion.package import load_package, write_manifest
from liverlesion.package.store import file_record
from liverlesion.sdk import load_slice

ov = pytest.importorskip("openvino", reason="OpenVINO is not installed: pip install 'liverlesion[openvino]'")
from liverlesion.backends import openvino as ov_backend  # noqa: E402 - after the skip
from liverlesion.backends.openvino import OpenVinoBackend  # noqa: E402

CAPABILITIES = tuple(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
needs_bf16 = pytest.mark.skipif("BF16" not in CAPABILITIES, reason=f"this CPU has no BF16 ({CAPABILITIES})")


@pytest.fixture(scope="module")
def joint(export_world):
    with load_package(export_world.packages["joint"]) as package:
        yield package


@pytest.fixture(scope="module")
def eval_set(export_world, joint):
    return load_eval_set(export_world.eval_data, joint.manifest.grid)


def run_all(backend, hu: np.ndarray, batch: int = 1) -> np.ndarray:
    return np.concatenate([backend.infer(hu[i:i + batch])["labels"] for i in range(0, len(hu), batch)])


def scores(maps: np.ndarray, data) -> dict:
    return evaluate_predictions(list(maps), list(data.labels), [slice_lesion_class(m) for m in maps], data.classes)


def test_f32_label_maps_are_identical_to_onnxruntime_fp32(joint, eval_set, tmp_path):
    with OnnxRuntimeBackend(joint, "fp32", threads=1) as ort, \
            OpenVinoBackend(joint, "fp32", threads=1, cache_dir=tmp_path) as vino:
        assert vino.executed_precision == "fp32" and set(vino.runtime_precisions) == {"f32"}
        np.testing.assert_array_equal(run_all(vino, eval_set.hu), run_all(ort, eval_set.hu))


@pytest.mark.parametrize("precision", ["int8", pytest.param("bf16", marks=needs_bf16)])
def test_reduced_precisions_stay_within_their_target(joint, eval_set, tmp_path, precision):
    with OnnxRuntimeBackend(joint, "fp32", threads=1) as ort, \
            OpenVinoBackend(joint, precision, threads=1, cache_dir=tmp_path) as vino:
        assert vino.executed_precision == precision  # what its convolutions ran in, read back from OpenVINO
        if precision == "int8":
            assert vino.record.extra["form"] == "qdq-u8s8"
            quantized = sum(1 for n in onnx.load(str(joint.path(vino.record))).graph.node
                            if n.op_type == "Conv" and n.name.startswith("/network/")
                            and not n.name.startswith("/network/head/"))
            int8_convs = sum(v for k, v in vino.runtime_precisions.items() if k in ("u8", "i8"))
            assert int8_convs >= quantized > 0  # every quantized Conv group compiled to int8, not one of them
        reference, reduced = run_all(ort, eval_set.hu), run_all(vino, eval_set.hu)
    # auto vouches for a reduced precision by the record quantize made on this machine: what the backend runs
    # must be what was recorded (whether a tiny training's bf16 meets its target depends on the CPU's kernels)
    record = joint.manifest.raw["accuracy"][{"int8": "int8-u8s8@openvino"}.get(precision, precision)]
    measured = scores(reduced, eval_set)
    assert measured["lesion_dice"] == pytest.approx(record["lesion_dice"], abs=0.01)
    assert (reduced == reference).mean() == pytest.approx(record["agreement_with_fp32"], abs=0.002)
    assert record["executed"].startswith(precision)  # quantize measured what it says it measured


def test_a_batch_runs_as_async_requests_and_matches_single_slices(joint, eval_set, tmp_path):
    with OpenVinoBackend(joint, "int8", threads=2, cache_dir=tmp_path) as vino:
        single = run_all(vino, eval_set.hu[:10])
        assert set(vino.streams) == {"LATENCY"}
        batched = vino.infer(eval_set.hu[:10])
        assert vino.streams["THROUGHPUT"] >= 2 and vino.streams["LATENCY"] == 1  # parallel streams for batches
        np.testing.assert_array_equal(batched["labels"], single)
        assert batched["probabilities"].shape == (10, 5, *joint.manifest.grid.size)


def test_the_second_load_reuses_the_compiled_model_and_a_changed_file_does_not(joint, tmp_path):
    with OpenVinoBackend(joint, "fp32", threads=1, cache_dir=tmp_path) as first:
        assert first.loaded_from_cache == {"LATENCY": False}
        folder = first.cache
    assert folder.is_relative_to(tmp_path / "openvino") and any(folder.iterdir())
    assert ov.get_version().split("-")[0] in str(folder) and first.record.sha256 in str(folder)
    with OpenVinoBackend(joint, "fp32", threads=1, cache_dir=tmp_path) as second:
        assert second.loaded_from_cache == {"LATENCY": True} and second.cache == folder
    # the same package with a changed FP32 file (one more metadata entry): compiled anew, in another folder
    root = shutil.copytree(joint.root, tmp_path / "changed")
    model = onnx.load(str(root / "model_fp32.onnx"))
    model.metadata_props.add(key="note", value="changed")
    onnx.save(model, str(root / "model_fp32.onnx"))
    raw = joint.manifest.to_dict()
    raw["files"] = [file_record(root, "model_fp32.onnx", "onnx", "fp32", form="float").to_dict()
                    if f["path"] == "model_fp32.onnx" else f for f in raw["files"]]
    write_manifest(root, raw)
    with load_package(root) as changed, OpenVinoBackend(changed, "fp32", threads=1, cache_dir=tmp_path) as third:
        assert third.loaded_from_cache == {"LATENCY": False} and third.cache != folder


def test_what_it_cannot_run_is_a_typed_error_naming_the_fix(joint, sdk_world, tmp_path, monkeypatch):
    with load_package(sdk_world.package) as no_int8:  # FP32 and FP16 only
        with pytest.raises(BackendError, match="no INT8 model"):
            OpenVinoBackend(no_int8, "int8", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="runs fp32, bf16, fp16, int8, not 'fp64'"):
        OpenVinoBackend(joint, "fp64", cache_dir=tmp_path)
    with pytest.raises(BackendError, match="threads=0"):
        OpenVinoBackend(joint, "fp32", threads=0, cache_dir=tmp_path)
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda core: ("FP32", "INT8"))
    with pytest.raises(BackendError, match="cannot run OpenVINO bf16.*needs BF16.*precision='fp32'"):
        OpenVinoBackend(joint, "bf16", cache_dir=tmp_path)
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'liverlesion\[openvino\]'"):
        OpenVinoBackend(joint, "fp32", cache_dir=tmp_path)
    assert OpenVinoBackend.availability() == (False, "OpenVINO is not installed: pip install "
                                                     "'liverlesion[openvino]'")


def test_an_unwritable_cache_still_loads(joint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with OpenVinoBackend(joint, "fp32", threads=1, cache_dir=blocker) as vino:
        assert vino.cache is None and vino.loaded_from_cache == {"LATENCY": False}
        assert vino.infer(np.zeros((1, 1, *joint.manifest.grid.size), np.float32))["labels"].shape[0] == 1


def test_auto_loads_openvino_on_a_cpu_and_predict_batch_matches_predict(sdk_world):
    from liverlesion.data.lesion_slices import read_lesion_slices
    from liverlesion.sdk import LesionAnalyzer

    with LesionAnalyzer.load(sdk_world.package, threads=1) as analyzer:
        assert analyzer.backend == "openvino"  # no GPU here, OpenVINO installed: the fastest CPU backend
        record = analyzer.manifest.raw["accuracy"].get(analyzer.precision, {})
        assert analyzer.precision == "fp32" or record["meets_target"] is True  # auto trades only vouched accuracy
        slices = [(x.hu, x.spacing_mm) for x in read_lesion_slices(sdk_world.phantoms / "lesion_slices")[:6]]
        single = [analyzer.predict(hu, spacing=s).label_map for hu, s in slices]
        batched = analyzer.predict_batch([load_slice(hu, spacing=s) for hu, s in slices], batch_size=3)
        for a, b in zip(single, batched, strict=True):
            np.testing.assert_array_equal(a, b.label_map)
