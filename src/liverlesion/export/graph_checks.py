"""Walk an INT8 Q/DQ graph and check the constraints TensorRT puts on explicit quantization.

Checked (see docs: TensorRT's "explicit quantization" rules and the design note):
opset >= 13; no DynamicQuantizeLinear; every Q/DQ has an explicit int8 zero point of 0
and a positive finite scale; activations per-tensor; weights int8 and per-channel
along the output channels (axis 0 for Conv); no int32 (bias) DequantizeLinear;
no ConvTranspose weight quantization (axis differs between TensorRT versions);
Q/DQ around a Resize only with nearest mode (where onnxruntime's CPU run is exact).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import ExportError

MIN_OPSET = 13
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class GraphReport:
    """What the walk found; ``problems`` empty means TensorRT's constraints hold."""

    opset: int
    counts: dict[str, int]
    quantized_weights: int = 0
    per_channel_weights: int = 0
    quantized_resizes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"opset": self.opset, "quantize_linear": self.counts.get("QuantizeLinear", 0),
                "dequantize_linear": self.counts.get("DequantizeLinear", 0),
                "quantized_weights": self.quantized_weights, "per_channel_weights": self.per_channel_weights,
                "quantized_resizes": self.quantized_resizes, "problems": list(self.problems)}


def _attr(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _weight_axis(consumer: onnx.NodeProto, index: int) -> int | None:
    """The output-channel axis of a weight input, or None if not a weight position we know."""
    if consumer.op_type == "Conv" and index == 1:
        return 0
    if consumer.op_type == "Gemm" and index == 1:
        return 0 if _attr(consumer, "transB", 0) else 1
    if consumer.op_type == "MatMul" and index == 1:
        return 1
    return None


def check_int8_graph(model: onnx.ModelProto) -> GraphReport:
    """Walk the graph; return a report listing every violated constraint."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        for k, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, k))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    report = GraphReport(opset=opset, counts=dict(Counter(n.op_type for n in graph.node)))
    problems = report.problems
    if opset < MIN_OPSET:
        problems.append(f"opset {opset} < {MIN_OPSET}: TensorRT needs opset 13+ for per-channel Q/DQ")
    if report.counts.get("DynamicQuantizeLinear"):
        problems.append("the graph contains DynamicQuantizeLinear, which TensorRT does not support")
    if not report.counts.get("QuantizeLinear"):
        problems.append("the graph has no QuantizeLinear: it is not quantized")

    for node in graph.node:
        if node.op_type not in QDQ_OPS:
            continue
        where = f"{node.op_type} {node.name!r}"
        if len(node.input) < 3 or not node.input[2]:
            problems.append(f"{where} has no zero point (its type defaults to uint8); "
                            "TensorRT needs an int8 zero point of 0")
            continue
        scale, zero = inits.get(node.input[1]), inits.get(node.input[2])
        if scale is None or zero is None:
            problems.append(f"{where}: scale and zero point must be initializers (constants)")
            continue
        if zero.data_type != TensorProto.INT8:
            problems.append(f"{where}: zero point type {TensorProto.DataType.Name(zero.data_type)}, not INT8")
        if np.any(numpy_helper.to_array(zero) != 0):
            problems.append(f"{where}: non-zero zero point (TensorRT needs symmetric quantization)")
        scale_values = numpy_helper.to_array(scale)
        if not np.all(np.isfinite(scale_values)) or np.any(scale_values <= 0):
            problems.append(f"{where}: scale must be positive and finite")
        weight = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if weight is None:
            if scale_values.size != 1:
                problems.append(f"{where}: activation scales must be per-tensor, got {scale_values.shape}")
            continue
        _check_weight(node, weight, scale_values, consumers.get(node.output[0], []), report)

    for node in graph.node:
        if node.op_type != "Resize":
            continue
        fed = producers.get(node.input[0])
        if fed is not None and fed.op_type == "DequantizeLinear":
            report.quantized_resizes += 1
            mode = _attr(node, "mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode != "nearest":
                problems.append(f"Resize {node.name!r} ({mode}) sits between Q/DQ: onnxruntime may drop them "
                                "on CPU (onnxruntime #21319), so CPU accuracy would not reflect TensorRT")
    return report


def _check_weight(node: onnx.NodeProto, weight: TensorProto, scale: np.ndarray,
                  uses: list[tuple[onnx.NodeProto, int]], report: GraphReport) -> None:
    where = f"DequantizeLinear {node.name!r}"
    report.quantized_weights += 1
    if weight.data_type == TensorProto.INT32:
        report.problems.append(f"{where} dequantizes an int32 tensor (a quantized bias); TensorRT refuses it")
        return
    if weight.data_type != TensorProto.INT8:
        got_type = TensorProto.DataType.Name(weight.data_type)
        report.problems.append(f"{where}: weights must be INT8, got {got_type}")
    for consumer, index in uses:
        if consumer.op_type == "ConvTranspose":
            report.problems.append(f"{where} feeds ConvTranspose {consumer.name!r}: its per-channel weight "
                                   "axis differs between TensorRT versions; keep it in float")
            continue
        axis = _weight_axis(consumer, index)
        if axis is None:
            continue
        if scale.size == 1:
            report.problems.append(f"{where}: weights of {consumer.op_type} {consumer.name!r} are "
                                   "per-tensor, per-channel expected")
            continue
        report.per_channel_weights += 1
        got = _attr(node, "axis", 1)
        dims = list(weight.dims)
        if got != axis or scale.ndim != 1 or scale.size != dims[axis]:
            report.problems.append(f"{where}: per-channel axis {got} with {scale.size} scales for weights "
                                   f"{dims} of {consumer.op_type}; expected axis {axis} "
                                   f"({dims[axis]} scales)")


def require_tensorrt_form(model: onnx.ModelProto, name: str) -> GraphReport:
    """:func:`check_int8_graph`, raising ExportError listing the problems."""
    report = check_int8_graph(model)
    if not report.ok:
        listed = "; ".join(report.problems[:8]) + (" ..." if len(report.problems) > 8 else "")
        raise ExportError(f"{name} is not in the INT8 form TensorRT consumes: {listed}")
    return report
