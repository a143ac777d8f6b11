"""FP16 conversion of the fused graph: network weights and compute in half, I/O float32.

Only the nodes of the network scope are converted. The HU arithmetic (window clipping
and scaling) and the softmax/argmax stay float32: HU around 1000 has a resolution of
0.5 HU in half precision, and the outputs are float32 by contract. One Cast to half
enters the network and one Cast to float leaves it at each boundary tensor.

Why not onnxruntime's ``convert_float_to_float16``: with ``node_block_list`` and
``keep_io_types`` it routes the graph input, the tensors between blocked nodes and the
probabilities output through half (Cast to fp16 then back), the precision loss the
blocked nodes were meant to avoid (checked with onnxruntime 1.32).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError
from ..model.fused import NETWORK_SCOPE

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
#: (op type, input index) that ONNX requires to stay float32 (Resize scales and roi).
FLOAT_ONLY_INPUTS = {("Resize", 1), ("Resize", 2)}
_HALF_MAX = float(np.finfo(np.float16).max)


def _to_half(tensor: TensorProto, name: str) -> TensorProto:
    values = np.clip(numpy_helper.to_array(tensor), -_HALF_MAX, _HALF_MAX)  # no inf from an outlier weight
    return numpy_helper.from_array(values.astype(np.float16), name)


def topological_sort(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportError("the converted graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if all(n is not r for r in ready)]
    del graph.node[:]
    graph.node.extend(ordered)


def convert_fp16(model: onnx.ModelProto, *, network_scope: str = NETWORK_SCOPE,
                 float_nodes: Iterable[str] = ()) -> onnx.ModelProto:
    """A copy of the fused FP32 graph with the nodes under ``network_scope`` in float16.

    ``float_nodes`` names network nodes to keep in float32 as well (for debugging accuracy).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    keep_float = set(float_nodes)
    half_nodes = [n for n in graph.node if n.name.startswith(network_scope) and n.name not in keep_float]
    if not half_nodes:
        raise ExportError(f"no node of the graph is under the network scope {network_scope!r}")
    half_ids = {id(n) for n in half_nodes}
    inits = {t.name: t for t in graph.initializer}
    float_tensors = {t.name for t in graph.initializer if t.data_type == FLOAT} | {
        i.name for i in graph.input if i.type.tensor_type.elem_type == FLOAT}
    half_tensors: set[str] = set()
    # float tensors produced by nodes, from the FP32 graph's shape inference
    inferred = onnx.shape_inference.infer_shapes(model)
    float_tensors |= {v.name for v in (*inferred.graph.value_info, *inferred.graph.output)
                      if v.type.tensor_type.elem_type == FLOAT}

    for node in half_nodes:
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None and attr.t.data_type == FLOAT:
                used_as_float = any((c.op_type, k) in FLOAT_ONLY_INPUTS
                                    for c in graph.node for k, i in enumerate(c.input) if i == node.output[0])
                if not used_as_float:
                    attr.t.CopyFrom(_to_half(attr.t, attr.t.name))
                    half_tensors.add(node.output[0])
            continue
        half_tensors.update(o for o in node.output if o in float_tensors)

    casts: list[onnx.NodeProto] = []
    to_half: dict[str, str] = {}
    new_inits: list[TensorProto] = []
    for node in half_nodes:
        if node.op_type == "Constant":
            continue
        for k, name in enumerate(node.input):
            if (not name or name in half_tensors or name not in float_tensors
                    or (node.op_type, k) in FLOAT_ONLY_INPUTS):
                continue
            if name not in to_half:
                if name in inits:  # a weight: store it in half
                    to_half[name] = f"{name}_fp16"
                    new_inits.append(_to_half(inits[name], to_half[name]))
                else:  # an activation from the float part: cast at the boundary
                    to_half[name] = f"{name}_to_fp16"
                    casts.append(helper.make_node("Cast", [name], [to_half[name]], name=f"{name}_cast_fp16",
                                                  to=HALF))
            node.input[k] = to_half[name]

    to_float: dict[str, str] = {}
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if id(node) in half_ids:
            continue
        for k, name in enumerate(node.input):
            if name in half_tensors:
                if name not in to_float:
                    to_float[name] = f"{name}_to_fp32"
                    casts.append(helper.make_node("Cast", [name], [to_float[name]], name=f"{name}_cast_fp32",
                                                  to=FLOAT))
                node.input[k] = to_float[name]
    if outputs & half_tensors:
        raise ExportError(f"graph outputs {sorted(outputs & half_tensors)} come straight from the network; "
                          "the fused graph must end in float32 postprocessing")

    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input} | {i for c in casts for i in c.input}
    live = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(live)
    graph.node.extend(casts)
    topological_sort(graph)
    del graph.value_info[:]
    try:
        checked = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
        onnx.checker.check_model(checked, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the FP16 graph is not valid ONNX: {exc}") from None
    return out


def write_fp16(fp32_path: str | Path, out_path: str | Path) -> Path:
    """Convert the FP32 ONNX file at ``fp32_path`` and save the FP16 one as one file."""
    converted = convert_fp16(onnx.load(str(fp32_path)))
    onnx.save_model(converted, str(out_path), save_as_external_data=False)
    return Path(out_path)
