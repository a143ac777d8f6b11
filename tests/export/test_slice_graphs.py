"""Slice graphs in a package (issue 14): written, bound, gated by NVIDIA's parser, equal to the host path."""

from __future__ import annotations

import importlib.util
import json
import shutil

import numpy as np
import pydicom
import pytest

from dicom_files import real
from liverlesion import LesionAnalyzer
from liverlesion.backends.base import check_slice_feeds
from liverlesion.backends.onnxruntime import OnnxRuntimeBackend
from liverlesion.cli import main
from liverlesion.engines import onnx_gate
from liverlesion.errors import InputError, PackageError
from liverlesion.export.slice_graphs import SECTION, add_slice_graphs, slice_file_name
from liverlesion.package import load_package
from liverlesion.sdk.geometry import Orientation
from liverlesion.sdk.inputs.load import load_slice
from liverlesion.sdk.inputs.slice import SliceInput

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx cannot be imported: pip install 'liverlesion[tensorrt-rtx]'")


@pytest.fixture(scope="module")
def sliced(export_world, tmp_path_factory):
    """The joint export-world package with its slice graphs, checked on the 120 held-out slices."""
    root = tmp_path_factory.mktemp("sliced") / "package"
    shutil.copytree(export_world.packages["joint"], root)
    result = add_slice_graphs(root, eval_data=export_world.eval_data)
    return root, result


def _records(root):
    with load_package(root) as package:
        return package.manifest, {f.path: f for f in package.manifest.files}


@pytest.mark.slow
def test_every_fused_graph_gains_a_slice_graph_that_wraps_it(sliced):
    root, _ = sliced
    manifest, files = _records(root)
    fused = [f for f in files.values() if f.role == "onnx"]
    wrapped = [f for f in files.values() if f.role == "onnx-slice"]
    assert sorted(f.extra["wraps"] for f in wrapped) == sorted(f.path for f in fused)
    for record in wrapped:
        source = files[record.extra["wraps"]]
        assert record.path == slice_file_name(source.path)
        assert (record.precision, record.extra.get("form")) == (source.precision, source.extra.get("form"))
    section = manifest.raw[SECTION]
    assert set(section["inputs"]) == {"pixels", "rescale", "theta", "theta_back"}
    assert section["tensorrt_sides"] == [256, 512, 1024]


@pytest.mark.slow
@pytest.mark.tensorrt_rtx
@needs_rtx
def test_nvidias_parser_builds_every_tensorrt_form_of_the_slice_graph(sliced):
    root, _ = sliced
    _, files = _records(root)
    for record in (f for f in files.values() if f.role == "onnx-slice"):
        if record.extra["form"] == "qdq-u8s8":
            assert "nvidia_parser" not in record.extra  # the CPU form is never handed to TensorRT
            continue
        verdict = record.extra["nvidia_parser"]
        assert verdict["built"] is True and verdict["runtime"] == onnx_gate.nvidia_parser_available(), record.path
        if record.precision == "int8":
            assert verdict["int8_convolutions"] > 0


@pytest.mark.slow
def test_fp32_slice_graph_agrees_with_the_host_path_on_the_held_out_slices(sliced):
    _, result = sliced
    fp32 = result.parity["fp32"]
    assert fp32["slices"] == 120
    assert fp32["agreement"] >= 0.999
    assert fp32["differing"] == sum(w["differing"] for w in fp32["worst"]) or len(fp32["worst"]) == 5
    for key, record in result.parity.items():
        assert record["pixels"] == fp32["pixels"], key
        assert set(record["scores"]) == {"host", "slice_graph"}, key  # both scored against the ground truth
        assert record["target"] == ("met" if not record["target_misses"] else "missed"), key
    assert fp32["target"] == "met"  # FP32 has no loss target: it is the reference


def _variants(hu: np.ndarray, spacing):
    """The same slice stored four ways, each with the orientation that brings it back to the radiological view."""
    yield "as stored", SliceInput(hu=hu, spacing_mm=spacing)
    yield "rows flipped", SliceInput(hu=hu[::-1], spacing_mm=spacing, orientation=Orientation(flip_rows=True))
    yield "cols flipped", SliceInput(hu=hu[:, ::-1], spacing_mm=spacing, orientation=Orientation(flip_cols=True))
    yield "transposed", SliceInput(hu=hu.T, spacing_mm=spacing[::-1], orientation=Orientation(transpose=True))


def _undo(name: str, labels: np.ndarray) -> np.ndarray:
    return {"as stored": labels, "rows flipped": labels[::-1], "cols flipped": labels[:, ::-1],
            "transposed": labels.T}[name]


@pytest.mark.slow
@pytest.mark.parametrize("file", ["CT_small.dcm", "693_UNCR.dcm"])
def test_real_ct_slices_land_pixel_for_pixel_on_the_stored_grid_through_both_paths(sliced, file):
    root, _ = sliced
    real_slice = load_slice(real(file), allow_non_hu=True)
    hu = np.ascontiguousarray(real_slice.canonical_hu())
    spacing = real_slice.canonical_spacing
    with LesionAnalyzer.load(root, backend="onnxruntime", precision="fp32", graph="slice") as in_graph, \
            LesionAnalyzer.load(root, backend="onnxruntime", precision="fp32", graph="model-grid") as host:
        assert (in_graph.graph, host.graph) == ("slice", "model-grid")
        reference = host.predict(SliceInput(hu=hu, spacing_mm=spacing), allow_non_hu=True).label_map
        for name, variant in _variants(hu, spacing):
            graph_map = in_graph.predict(variant, allow_non_hu=True).label_map
            host_map = host.predict(variant, allow_non_hu=True).label_map
            assert graph_map.shape == variant.shape, name
            assert (graph_map == host_map).mean() >= 0.999, name
            assert (_undo(name, graph_map) == reference).mean() >= 0.999, name


@pytest.mark.slow
def test_a_batch_of_mixed_sizes_goes_through_the_slice_graph_in_groups(sliced):
    root, _ = sliced
    ct = pydicom.dcmread(real("CT_small.dcm"))
    small = load_slice(ct, allow_non_hu=True)
    big = SliceInput(hu=np.kron(small.hu, np.ones((2, 2), np.float32)),
                     spacing_mm=(small.spacing_mm[0] / 2, small.spacing_mm[1] / 2))
    with LesionAnalyzer.load(root, backend="onnxruntime", precision="fp32", graph="slice") as analyzer:
        batch = analyzer.predict_batch([small, big, big, small], allow_non_hu=True)
        alone = [analyzer.predict(s, allow_non_hu=True) for s in (small, big, big, small)]
    assert [p.label_map.shape for p in batch] == [(128, 128), (256, 256), (256, 256), (128, 128)]
    for together, single in zip(batch, alone):
        np.testing.assert_array_equal(together.label_map, single.label_map)
        assert together.timings["inference_ms"] > 0


@pytest.mark.slow
def test_graph_choices_and_misuse_are_typed_errors(sliced, export_world):
    root, _ = sliced
    with pytest.raises(InputError, match="graph="):
        LesionAnalyzer.load(root, backend="onnxruntime", graph="resampled", warmup=False)
    with pytest.raises(InputError, match="liverlesion slice-graphs"):
        LesionAnalyzer.load(export_world.packages["joint"], backend="onnxruntime", graph="slice", warmup=False)
    with pytest.raises(InputError, match="runs slice graphs"):
        LesionAnalyzer.load(root, backend="torch", graph="slice", warmup=False)
    with LesionAnalyzer.load(root, backend="onnxruntime", warmup=False) as analyzer:
        assert analyzer.graph == "model-grid"  # auto on a CPU: the host path is the faster one
    with load_package(root) as package, OnnxRuntimeBackend(package, "fp32", graph="slice") as backend:
        with pytest.raises(InputError, match="infer_slices"):
            backend.infer(np.zeros((1, 1, 32, 32), np.float32))


@pytest.mark.parametrize("change, message", [
    (lambda f: f.pop("theta"), "must be a dict"),
    (lambda f: f.update(pixels=f["pixels"].astype(np.float64)), "'pixels'"),
    (lambda f: f.update(pixels=np.zeros((1, 1, 1, 64), np.float32)), "'pixels'"),
    (lambda f: f.update(theta=np.zeros((2, 2, 3), np.float32)), "same N"),
    (lambda f: f.update(rescale=np.zeros((1, 3), np.float32)), "'rescale'"),
])
def test_bad_slice_graph_feeds_are_refused_naming_the_input(change, message):
    feeds = {"pixels": np.zeros((1, 1, 64, 64), np.float32), "rescale": np.ones((1, 2), np.float32),
             "theta": np.zeros((1, 2, 3), np.float32), "theta_back": np.zeros((1, 2, 3), np.float32)}
    assert check_slice_feeds(dict(feeds), None) == 1
    change(feeds)
    with pytest.raises(InputError, match=message):
        check_slice_feeds(feeds, None)


@pytest.mark.slow
def test_a_slice_graph_recorded_as_a_fused_graph_is_refused(sliced, tmp_path):
    root, _ = sliced
    copy = tmp_path / "package"
    shutil.copytree(root, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    record = next(f for f in manifest["files"] if f["role"] == "onnx-slice")
    record["role"] = "onnx"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackageError, match="role"):
        load_package(copy)


@pytest.mark.slow
def test_the_cli_rewrites_the_slice_graphs_without_duplicates(sliced, tmp_path, capsys):
    root, _ = sliced
    copy = tmp_path / "package"
    shutil.copytree(root, copy)
    assert main(["slice-graphs", str(copy)]) == 0
    out = capsys.readouterr().out
    _, files = _records(copy)
    assert sum(f.role == "onnx-slice" for f in files.values()) == 4
    assert "model_slice_fp32.onnx" in out and "wraps model_fp32.onnx" in out


@pytest.mark.slow
def test_rewriting_slice_graphs_drops_engines_built_from_older_ones(sliced, tmp_path):
    from liverlesion.engines.plan import BuildOptions, plan_build
    from liverlesion.engines.records import add_engine_record, make_record
    from liverlesion.package.store import read_manifest

    root, _ = sliced
    copy = tmp_path / "package"
    shutil.copytree(root, copy)
    plans = {}
    for name, sha in (("current", None), ("older", "0" * 64)):
        plan = plan_build("10.3.0.30", BuildOptions(precision="fp16", compute_capability=(8, 7), graph="slice",
                                                   max_batch=2 if name == "current" else 3), read_manifest(copy))
        data = plan.to_dict()
        data["engine_file"] = f"engines/{name}.engine"
        if sha is not None:
            data["onnx_sha256"] = sha  # as if built from a slice graph since rewritten
        (copy / "engines").mkdir(exist_ok=True)
        (copy / data["engine_file"]).write_bytes(b"plan")
        add_engine_record(copy, make_record(copy, data["engine_file"], data, gpu_name="Orin"))
        plans[name] = data["engine_file"]
    add_slice_graphs(copy)
    with load_package(copy) as package:
        assert [e.file for e in package.manifest.engines] == [plans["current"]]
    assert not (copy / plans["older"]).exists()
