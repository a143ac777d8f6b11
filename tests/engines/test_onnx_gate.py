"""NVIDIA's ONNX parser as a gate: hand-made graphs through the real TensorRT-RTX, and the choice of runtime."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper, save_model

from liverlesion.engines import onnx_gate
from liverlesion.engines.onnx_gate import check_onnx_for_tensorrt, nvidia_parser_available
from liverlesion.errors import EngineError, InputError

needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None,
                               reason="tensorrt_rtx cannot be imported: pip install 'liverlesion[tensorrt-rtx]'")


def _conv_model(*, int8: bool, int32_bias: bool = False):
    """hu -> Conv(4 channels) -> y, with Q/DQ on input and weights when ``int8``; ``int32_bias``: the bias
    comes from an int32 DequantizeLinear, as in the u8s8 (CPU) form."""
    nodes, inits = [], [numpy_helper.from_array(np.full((4, 1, 3, 3), 0.1, np.float32), "w")]
    conv_in, weight = "hu", "w"
    if int8:
        inits = [numpy_helper.from_array(np.ones((4, 1, 3, 3), np.int8), "w_q"),
                 numpy_helper.from_array(np.array(0.1, np.float32), "sx"),
                 numpy_helper.from_array(np.array(0, np.int8), "zx"),
                 numpy_helper.from_array(np.full(4, 0.01, np.float32), "sw"),
                 numpy_helper.from_array(np.zeros(4, np.int8), "zw")]
        nodes += [helper.make_node("QuantizeLinear", ["hu", "sx", "zx"], ["xq"], name="q"),
                  helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"], name="dq"),
                  helper.make_node("DequantizeLinear", ["w_q", "sw", "zw"], ["wd"], name="dqw", axis=0)]
        conv_in, weight = "xd", "wd"
    conv_inputs = [conv_in, weight]
    if int32_bias:
        inits += [numpy_helper.from_array(np.arange(4, dtype=np.int32), "b_q"),
                  numpy_helper.from_array(np.full(4, 0.001, np.float32), "sb")]
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "sb"], ["bd"], name="dqb", axis=0))
        conv_inputs.append("bd")
    nodes.append(helper.make_node("Conv", conv_inputs, ["y"], name="conv", pads=[1, 1, 1, 1]))
    x = helper.make_tensor_value_info("hu", TensorProto.FLOAT, ["N", 1, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])
    graph = helper.make_graph(nodes, "g", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _write(tmp_path, name, model):
    path = tmp_path / name
    save_model(model, str(path))
    return path


@pytest.mark.tensorrt_rtx
@needs_rtx
@pytest.mark.parametrize("int8", [False, True])
def test_a_conv_graph_is_parsed_counted_and_built(tmp_path, int8):
    path = _write(tmp_path, "conv.onnx", _conv_model(int8=int8))
    verdict = check_onnx_for_tensorrt(path, "hu", (8, 8), max_batch=2, runtime="tensorrt-rtx")
    assert verdict.accepted and verdict.built and verdict.passed and verdict.errors == ()
    assert verdict.convolutions == 1 and verdict.int8_convolutions == (1 if int8 else 0)
    assert verdict.layers >= verdict.convolutions and verdict.engine_bytes > 0
    record = verdict.to_record()
    assert set(record) == {"runtime", "version", "parser_version", "layers", "convolutions", "int8_convolutions",
                           "built", "build_seconds"}
    assert record["runtime"] == "tensorrt-rtx" and record["version"].startswith("1.")


@pytest.mark.tensorrt_rtx
@needs_rtx
def test_an_int32_bias_dequantize_is_refused_with_nvidias_message(tmp_path):
    path = _write(tmp_path, "u8s8_like.onnx", _conv_model(int8=True, int32_bias=True))
    verdict = check_onnx_for_tensorrt(path, "hu", (8, 8), runtime="tensorrt-rtx")
    assert not verdict.accepted and not verdict.built and not verdict.passed
    assert verdict.errors and "dqb" in verdict.errors[0] and "Int32" in verdict.errors[0]
    assert not any("CUDA driver" in e for e in verdict.errors)  # the no-driver line is about the machine


@pytest.mark.tensorrt_rtx
@needs_rtx
def test_a_graph_without_the_named_input_parses_but_is_not_built(tmp_path):
    path = _write(tmp_path, "conv.onnx", _conv_model(int8=False))
    verdict = check_onnx_for_tensorrt(path, "image", (8, 8), runtime="tensorrt-rtx")
    assert verdict.accepted and not verdict.built and not verdict.passed
    assert "'image'" in verdict.errors[0] and "hu" in verdict.errors[0]


@pytest.mark.tensorrt_rtx
@needs_rtx
def test_a_file_that_is_not_onnx_is_refused_by_the_parser(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a protobuf")
    verdict = check_onnx_for_tensorrt(path, "hu", (8, 8), runtime="tensorrt-rtx")
    assert not verdict.accepted and verdict.errors


@pytest.mark.parametrize("kwargs, match", [({"max_batch": 0}, "max_batch"), ({"max_batch": True}, "max_batch"),
                                           ({"grid": (8,)}, "grid"), ({"grid": (8, -1)}, "grid")])
def test_bad_arguments_are_refused_before_any_runtime_is_touched(tmp_path, kwargs, match):
    path = _write(tmp_path, "conv.onnx", _conv_model(int8=False))
    args = {"grid": (8, 8), **kwargs}
    with pytest.raises(InputError, match=match):
        check_onnx_for_tensorrt(path, "hu", **args)


def test_a_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not a file"):
        check_onnx_for_tensorrt(tmp_path / "absent.onnx", "hu", (8, 8))


@pytest.mark.parametrize("full, rtx, chosen", [("10.13.3", "1.7.1", "tensorrt"), ("11.4.1", None, "tensorrt"),
                                               ("8.6.1", "1.7.1", "tensorrt-rtx"), (None, "1.7.1", "tensorrt-rtx"),
                                               ("8.6.1", None, None), (None, None, None)])
def test_full_tensorrt_10_or_newer_is_preferred_and_8_is_never_used(monkeypatch, full, rtx, chosen):
    monkeypatch.setattr(onnx_gate, "tensorrt_version", lambda: full)
    monkeypatch.setattr(onnx_gate, "tensorrt_rtx_version", lambda: rtx)
    assert nvidia_parser_available() == chosen


def test_the_missing_reason_names_tensorrt_8_and_the_extra(monkeypatch):
    monkeypatch.setattr(onnx_gate, "tensorrt_version", lambda: "8.6.1")
    assert "8.6.1" in onnx_gate.nvidia_parser_missing_reason()
    assert "strongly typed" in onnx_gate.nvidia_parser_missing_reason()
    monkeypatch.setattr(onnx_gate, "tensorrt_version", lambda: None)
    assert "pip install 'liverlesion[tensorrt-rtx]'" in onnx_gate.nvidia_parser_missing_reason()


def test_no_runtime_is_an_engine_error_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_gate, "nvidia_parser_available", lambda: None)
    monkeypatch.setattr(onnx_gate, "tensorrt_version", lambda: None)
    path = _write(tmp_path, "conv.onnx", _conv_model(int8=False))
    with pytest.raises(EngineError, match=r"liverlesion\[tensorrt-rtx\]"):
        check_onnx_for_tensorrt(path, "hu", (8, 8))


def test_a_runtime_without_strongly_typed_networks_is_refused(tmp_path, monkeypatch):
    class Flags:  # TensorRT 8.x: EXPLICIT_BATCH only
        EXPLICIT_BATCH = 0

    class FakeTrt:
        NetworkDefinitionCreationFlag = Flags

    monkeypatch.setattr(onnx_gate, "import_runtime", lambda runtime: FakeTrt)
    monkeypatch.setattr(onnx_gate, "installed_runtime_version", lambda runtime: "8.6.1")
    path = _write(tmp_path, "conv.onnx", _conv_model(int8=False))
    with pytest.raises(EngineError, match="strongly typed"):
        check_onnx_for_tensorrt(path, "hu", (8, 8), runtime="tensorrt")

