"""Export and quantize hand each TensorRT-bound ONNX file to NVIDIA's parser and builder before recording it."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from liverlesion.engines import onnx_gate
from liverlesion.errors import EngineError, ExportError
from liverlesion.export import export_package, int8_package, quantize_package
from liverlesion.export import fp16 as fp16_module
from liverlesion.export.package_writer import FP16_FILE, INT8_CPU_FILE, INT8_FILE, NvidiaGate
from liverlesion.package import load_package

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx cannot be imported: pip install 'liverlesion[tensorrt-rtx]'")
GATED_FORMS = ("float", "qdq-s8s8")


def _graph_counts(path):
    """(Conv nodes, Conv nodes whose input 0 a DequantizeLinear produces) of the ONNX graph itself."""
    graph = onnx.load(str(path)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    return len(convs), sum(1 for n in convs if n.input[0] in dequantized)


def _poison(path):
    """Add 0 to ``probabilities`` through an int32 DequantizeLinear: onnxruntime runs it (the outputs do not
    change), NVIDIA's parser refuses it as it refuses the u8s8 form's int32 biases."""
    model = onnx.load(str(path))
    graph = model.graph
    producer = next(n for n in graph.node if "probabilities" in n.output)
    producer.output[list(producer.output).index("probabilities")] = "probabilities_before_poison"
    graph.initializer.extend([numpy_helper.from_array(np.zeros(1, np.int32), "poison_q"),
                              numpy_helper.from_array(np.array(1.0, np.float32), "poison_scale")])
    graph.node.extend([
        helper.make_node("DequantizeLinear", ["poison_q", "poison_scale"], ["poison"], name="poison_dq"),
        helper.make_node("Add", ["probabilities_before_poison", "poison"], ["probabilities"], name="poison_add")])
    assert any(o.name == "probabilities" and o.type.tensor_type.elem_type == TensorProto.FLOAT
               for o in graph.output)
    onnx.save_model(model, str(path))


@pytest.mark.slow
@pytest.mark.tensorrt_rtx
@needs_rtx
@pytest.mark.parametrize("arch", ["joint", "ynet"])
def test_tensorrt_bound_files_carry_nvidias_verdict_with_counts_from_the_graph(export_world, arch):
    with load_package(export_world.packages[arch]) as package:
        onnx_records = [f for f in package.manifest.files if f.role == "onnx"]
        assert {f.extra["form"] for f in onnx_records} == {"float", "qdq-s8s8", "qdq-u8s8"}
        for record in onnx_records:
            if record.extra["form"] not in GATED_FORMS:
                assert "nvidia_parser" not in record.extra, record.path
                continue
            verdict = record.extra["nvidia_parser"]
            convolutions, int8 = _graph_counts(package.path(record))
            assert (verdict["convolutions"], verdict["int8_convolutions"]) == (convolutions, int8), record.path
            assert verdict["built"] is True and verdict["runtime"] == onnx_gate.nvidia_parser_available()
            assert verdict["layers"] > verdict["convolutions"] > 0
            if record.precision == "int8":
                assert verdict["int8_convolutions"] > 0
            else:
                assert verdict["int8_convolutions"] == 0
        bare = [f for f in package.manifest.files if f.role == "onnx-bare"]
        assert all("nvidia_parser" not in f.extra for f in bare)  # not meant for TensorRT


@pytest.mark.slow
@pytest.mark.tensorrt_rtx
@needs_rtx
def test_the_cpu_form_is_refused_by_the_parser_and_never_handed_to_it(export_world):
    with load_package(export_world.packages["joint"]) as package:
        record = package.manifest.find(role="onnx", precision="int8", form="qdq-u8s8")
        assert record is not None and record.path == INT8_CPU_FILE
        verdict = onnx_gate.check_onnx_for_tensorrt(package.path(record), "hu", package.manifest.grid)
        assert not verdict.accepted and "Int32" in verdict.errors[0]
        gate = NvidiaGate(package.manifest.grid, None, lambda _line: None, "")
        with pytest.raises(ExportError, match="never handed to TensorRT"):
            gate.record(package.root, record)


@pytest.mark.slow
@pytest.mark.tensorrt_rtx
@needs_rtx
def test_export_refuses_a_graph_nvidia_rejects_and_leaves_nothing(export_world, tmp_path, monkeypatch):
    real = fp16_module.write_fp16

    def poisoned(src, dst, *args, **kwargs):
        out = real(src, dst, *args, **kwargs)
        _poison(dst)
        return out

    monkeypatch.setattr(fp16_module, "write_fp16", poisoned)
    out = tmp_path / "out" / "pkg"
    with pytest.raises(ExportError, match=rf"ONNX parser .* refuses {FP16_FILE}: .*poison_dq.*Int32") as caught:
        export_package(export_world.checkpoints["ynet"], out)
    assert "Nothing was written" in str(caught.value)
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow
@pytest.mark.tensorrt_rtx
@needs_rtx
def test_quantize_refuses_an_int8_graph_nvidia_rejects_and_keeps_the_package(export_world, tmp_path, monkeypatch):
    root = shutil.copytree(export_world.packages["joint"], tmp_path / "pkg")
    before = (root / "manifest.json").read_bytes()
    real = int8_package.bound_onnx_record

    def poisoned(tmp, relative, *args, **kwargs):
        if relative == INT8_FILE:
            _poison(tmp / relative)
        return real(tmp, relative, *args, **kwargs)

    monkeypatch.setattr(int8_package, "bound_onnx_record", poisoned)
    with pytest.raises(ExportError, match=rf"refuses {INT8_FILE}: .*poison_dq.*--exclude"):
        quantize_package(root, export_world.data, export_world.eval_data, slices=8, method="minmax",
                         allow_miss=True)
    assert (root / "manifest.json").read_bytes() == before
    with load_package(root) as package:  # the old INT8 file, as its record says (sha256 verified)
        assert "poison_dq" not in {n.name for n in onnx.load(str(package.root / INT8_FILE)).graph.node}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pkg"]


@pytest.mark.slow
def test_without_an_nvidia_runtime_files_are_recorded_without_a_verdict_and_one_line_says_so(
        export_world, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_gate, "nvidia_parser_available", lambda: None)
    monkeypatch.setattr(onnx_gate, "tensorrt_version", lambda: None)
    lines: list[str] = []
    export_package(export_world.checkpoints["ynet"], tmp_path / "pkg", progress=lines.append)
    said = [line for line in lines if "gate did not run" in line]
    assert len(said) == 1 and "pip install 'liverlesion[tensorrt-rtx]'" in said[0]
    raw = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
    assert [f["path"] for f in raw["files"] if "nvidia_parser" in f] == []
    load_package(tmp_path / "pkg").close()


def test_without_progress_the_skipped_gate_goes_to_the_log(monkeypatch, caplog):
    from liverlesion.grid import ModelGrid

    monkeypatch.setattr(onnx_gate, "nvidia_parser_available", lambda: None)
    with caplog.at_level(logging.WARNING, logger="liverlesion.export"):
        NvidiaGate(ModelGrid((32, 32), (12.0, 12.0)), None, None, "")
    assert [r.getMessage().count("gate did not run") for r in caplog.records] == [1]


def test_a_runtime_that_cannot_start_skips_the_gate_once_and_keeps_the_record(tmp_path, monkeypatch):
    from liverlesion.grid import ModelGrid
    from liverlesion.package.store import file_record

    def cannot_start(*_args, **_kwargs):
        raise EngineError("tensorrt 10.13.3 could not start its builder here (no GPU)")

    monkeypatch.setattr(onnx_gate, "nvidia_parser_available", lambda: "tensorrt")
    monkeypatch.setattr(onnx_gate, "check_onnx_for_tensorrt", cannot_start)
    for name in ("a.onnx", "b.onnx"):
        (tmp_path / name).write_bytes(b"graph")
    lines: list[str] = []
    gate = NvidiaGate(ModelGrid((32, 32), (12.0, 12.0)), 4, lines.append, "")
    records = [file_record(tmp_path, name, "onnx", "fp32", form="float") for name in ("a.onnx", "b.onnx")]
    assert [gate.record(tmp_path, r) for r in records] == records
    assert len(lines) == 1 and "could not start its builder" in lines[0]


@pytest.mark.slow
@pytest.mark.tensorrt_rtx
@needs_rtx
def test_inspect_shows_each_onnx_files_verdict(export_world):
    from liverlesion.cli.inspect import summary

    with load_package(export_world.packages["joint"]) as package:
        lines = summary(package.manifest, package.root).splitlines()
        for record in (f for f in package.manifest.files if f.role == "onnx"):
            shown = lines[next(i for i, line in enumerate(lines) if line.split()[:1] == [record.path]) + 1]
            if record.extra["form"] == "qdq-u8s8":
                assert "not for TensorRT" in shown, shown
            else:
                verdict = record.extra["nvidia_parser"]
                assert f"{verdict['convolutions']} convolutions ({verdict['int8_convolutions']} on int8" in shown
                assert "accepted by TensorRT-RTX" in shown and f"{verdict['layers']} layers" in shown
