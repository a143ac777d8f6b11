"""The fused graph wrapped in its resampling: the slice as stored in, labels on the stored grid out.

:func:`wrap_with_resampling` builds, around a fused graph (``hu`` N x 1 x Hm x Wm in), one graph:

Inputs
  - ``pixels`` N x 1 x H x W float32: the slice as stored (no host transpose or flip), H and W dynamic (>= 2);
  - ``rescale`` N x 2 float32: (slope, intercept), HU = pixels * slope + intercept;
  - ``theta`` N x 2 x 3 float32: model-grid (x, y, 1) -> stored (x, y) (``grid_affine.slice_to_model_theta``);
  - ``theta_back`` N x 2 x 3 float32: stored (x, y, 1) -> model-grid (x, y), the same function's second matrix.

Outputs
  - the fused graph's outputs, unchanged, on the model grid (``labels``, ``probabilities``, ...);
  - ``labels_input`` N x H x W int32: the model-grid labels on the stored grid (nearest), 0 (background)
    outside the model grid's field of view, as ``sdk.geometry.to_input`` fills;
  - ``hu_model`` N x 1 x Hm x Wm float32 with ``debug=True``: the HU the fused graph was given.

Forward: GridSample bilinear with ``align_corners=1`` and border padding, then ``fill_hu`` wherever the
sample point lies outside the stored slice (``grid.to_model_grid``'s rule: linear inside [0, n - 1] on each
axis, the fill outside); the rescale is applied on the model grid (the resampling is linear, so the same HU
at Hm x Wm instead of H x W products). Back: GridSample nearest of the labels as float (GridSample refuses
int32 in TensorRT; small integers are exact in float16 and float32), or of the probabilities then ArgMax
(``back="probabilities"``, the same labels at 5x the samples). Sample grids are x * theta[:, 0] + y *
theta[:, 1] + theta[:, 2] by broadcasting (TensorRT's parsers refuse AffineGrid), in float32 whatever the
fused graph's precision. Opset 16 to 19 (GridSample "bilinear"): TensorRT 8.5 to 10 build opset 20's
"linear" as nearest.

Measured on one CPU thread (512 x 512 slice, 128 x 128 grid): the resampling adds 6.6 ms on onnxruntime
and 4.2 ms on OpenVINO (mostly the full-size way back), against 0.7 ms for the host's numpy path: this
graph is for accelerators; CPU runtimes keep the host path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError, InputError
from ..grid import ModelGrid
from ..grid_affine import TIE_BIAS_PX

INPUTS = ("pixels", "rescale", "theta", "theta_back")
LABELS_INPUT = "labels_input"
HU_MODEL = "hu_model"
#: Opsets the wrapper writes: GridSample exists from 16; 20 renames "bilinear" (see the module docstring).
OPSETS = (16, 17, 18, 19)
BACK_SOURCES = ("labels", "probabilities")
#: Normalised slack of the inside-tests: float32 fuzz of the sample coordinates (~1e-7 per unit).
_MASK_EPS = 1e-6
_PRE, _FUSED = "resample/", "fused/"


class _Nodes:
    """Nodes and initializers under one name prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, name: str, value: Any, dtype: Any = np.float32) -> str:
        full = self.prefix + name
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), full))
        return full

    def op(self, op_type: str, inputs: Iterable[str], output: str | None = None, **attrs: Any) -> str:
        self._count += 1
        out = output or f"{self.prefix}{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{self.prefix}{op_type}_{self._count}",
                                           **attrs))
        return out


def _check_arguments(grid: Any, fill_hu: Any, labels_count: Any, opset: Any, back: Any) -> None:
    if not isinstance(grid, ModelGrid):
        raise InputError(f"grid {grid!r:.60} is not accepted: give a grid.ModelGrid")
    if isinstance(fill_hu, bool) or not isinstance(fill_hu, (int, float, np.number)) or not math.isfinite(fill_hu):
        raise InputError(f"fill_hu={fill_hu!r:.40} is not accepted: give a finite number of HU (air is -1024)")
    if isinstance(labels_count, bool) or not isinstance(labels_count, (int, np.integer)) or labels_count < 2:
        raise InputError(f"labels_count={labels_count!r:.40} is not accepted: give the number of labels, >= 2")
    if opset not in OPSETS or isinstance(opset, bool):
        raise InputError(f"opset={opset!r:.40} is not accepted: give one of {', '.join(map(str, OPSETS))}")
    if back not in BACK_SOURCES:
        raise InputError(f"back={back!r:.40} is not accepted: give one of {', '.join(BACK_SOURCES)}")


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    shape = value.type.tensor_type.shape
    return [d.dim_value if d.HasField("dim_value") else None for d in shape.dim]


def _check_fused(fused: Any, grid: ModelGrid, labels_count: int, opset: int) -> onnx.ValueInfoProto:
    """The fused graph's one input, if the graph can be wrapped; otherwise ExportError saying why."""
    if not isinstance(fused, onnx.ModelProto):
        raise InputError(f"fused must be an onnx.ModelProto, got {type(fused).__name__}")
    graph = fused.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    outputs = {v.name: v for v in graph.output}
    if len(inputs) != 1:
        raise ExportError(f"the fused graph has inputs {[v.name for v in inputs]}; accepted: one (HU on the grid)")
    hu = inputs[0]
    if _default_opset(fused) != opset:
        raise ExportError(f"the fused graph is opset {_default_opset(fused)}, the wrapper was asked for opset "
                          f"{opset}; accepted: the same opset (convert the fused graph first)")
    if "labels" not in outputs or "probabilities" not in outputs:
        raise ExportError(f"the fused graph's outputs are {sorted(outputs)}; accepted: 'labels' and "
                          "'probabilities' among them")
    clash = ({*INPUTS, LABELS_INPUT, HU_MODEL} & {*outputs, hu.name}) | ({hu.name} & set(outputs))
    if clash:
        raise ExportError(f"the fused graph's input or outputs {sorted(clash)} clash with the wrapper's names "
                          f"{[*INPUTS, LABELS_INPUT, HU_MODEL]} (or an output is its input)")
    want = {hu.name: [None, 1, *grid.size], "labels": [None, *grid.size],
            "probabilities": [None, labels_count, *grid.size]}
    for value in (hu, outputs["labels"], outputs["probabilities"]):
        dims = _dims(value)
        if len(dims) != len(want[value.name]) or any(
                d is not None and w is not None and d != w for d, w in zip(dims, want[value.name])):
            raise ExportError(f"the fused graph's {value.name!r} has shape {dims}; accepted: "
                              f"{['N' if w is None else w for w in want[value.name]]} for this grid and labels_count")
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise ExportError(f"the fused graph's node {node.name or node.op_type!r} holds a subgraph; accepted: "
                              "flat graphs (as the exporter writes)")
    return hu


def _inline(fused: onnx.ModelProto, hu_name: str, hu_tensor: str) -> _Nodes:
    """The fused graph's nodes and initializers, renamed under ``fused/`` except its outputs; ``hu`` fed."""
    graph = fused.graph
    keep = {v.name for v in graph.output}

    def rename(name: str) -> str:
        if name == "" or name in keep:  # "" is an omitted optional input
            return name
        return hu_tensor if name == hu_name else _FUSED + name

    part = _Nodes(_FUSED)
    for index, node in enumerate(graph.node):
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = _FUSED + (node.name or f"{node.op_type}_{index}")
        copy.input[:] = [rename(n) for n in node.input]
        copy.output[:] = [rename(n) for n in node.output]
        part.nodes.append(copy)
    for tensor in graph.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = rename(tensor.name)
        part.inits.append(copy)
    return part


def _affine_grid(b: _Nodes, theta: str, xs: str, ys: str, name: str) -> tuple[str, str, str]:
    """(N, rows, cols, 2) sample grid and its x and y planes (N, rows, cols): x * t0 + t2 + y * t1 per row of theta.

    ``xs`` is shaped (1, 1, cols) and ``ys`` (1, rows, 1). The planes are built apart and stacked last: with
    the pair innermost, broadcasting arithmetic runs 10x slower on onnxruntime and OpenVINO.
    """
    flat = b.op("Reshape", [theta, b.const(name + "_flat", [-1, 6, 1], np.int64)])  # each coefficient (N, 1, 1)
    axis = b.const(name + "_axis", [1], np.int64)
    t = [b.op("Slice", [flat, b.const(f"{name}_s{k}", [k], np.int64), b.const(f"{name}_e{k}", [k + 1], np.int64),
                        axis]) for k in range(6)]
    planes = [b.op("Add", [b.op("Add", [b.op("Mul", [xs, t[3 * r]]), t[3 * r + 2]]), b.op("Mul", [ys, t[3 * r + 1]])],
                   f"{b.prefix}{name}_{'xy'[r]}") for r in (0, 1)]
    channel = b.const(name + "_channel", [1], np.int64)
    # N x 2 x rows x cols, then channels last: a layout change that runtimes make fast (a Concat on a last axis
    # of size 1 runs on OpenVINO's reference kernel, 10x slower)
    stacked = b.op("Concat", [b.op("Unsqueeze", [p, channel]) for p in planes], axis=1)
    grid = b.op("Transpose", [stacked], b.prefix + name, perm=[0, 2, 3, 1])
    return grid, planes[0], planes[1]


def _inside(b: _Nodes, gx: str, gy: str, eps: float, name: str) -> str:
    """N x 1 x rows x cols bool: both normalised coordinates within [-1 - eps, 1 + eps] (no Cast to BOOL)."""
    worst = b.op("Max", [b.op("Abs", [gx]), b.op("Abs", [gy])])
    worst = b.op("Unsqueeze", [worst, b.const(name + "_ax", [1], np.int64)])
    return b.op("LessOrEqual", [worst, b.const(name + "_bound", 1.0 + eps)], b.prefix + name)


def _normalised(b: _Nodes, size: str, reshape: list[int], name: str) -> str:
    """The ``align_corners=1`` coordinates of a dynamic side: 2 i / (n - 1) - 1 for i < n, reshaped."""
    ramp = b.op("Cast", [b.op("Range", [b.const(name + "_0", 0, np.int64), size, b.const(name + "_1", 1, np.int64)])],
                to=TensorProto.FLOAT)
    step = b.op("Div", [b.const(name + "_2", 2.0), b.op("Sub", [b.op("Cast", [size], to=TensorProto.FLOAT),
                                                                  b.const(name + "_one", 1.0)])])
    coords = b.op("Sub", [b.op("Mul", [ramp, step]), b.const(name + "_m1", 1.0)])
    return b.op("Reshape", [coords, b.const(name + "_shape", reshape, np.int64)], b.prefix + name)


def _forward(b: _Nodes, grid: ModelGrid, fill_hu: float) -> str:
    """pixels, rescale, theta -> HU on the model grid (N x 1 x Hm x Wm), ``fill_hu`` outside the slice."""
    rows, cols = grid.size
    xs = b.const("xs_model", np.linspace(-1.0, 1.0, cols).reshape(1, 1, cols))
    ys = b.const("ys_model", np.linspace(-1.0, 1.0, rows).reshape(1, rows, 1))
    sample_grid, gx, gy = _affine_grid(b, "theta", xs, ys, "grid_model")
    sampled = b.op("GridSample", ["pixels", sample_grid], mode="bilinear", padding_mode="border", align_corners=1)
    scale = b.op("Unsqueeze", ["rescale", b.const("ax23", [2, 3], np.int64)])  # N x 2 x 1 x 1
    ax1 = b.const("ax1", [1], np.int64)
    slope = b.op("Slice", [scale, b.const("i0", [0], np.int64), b.const("i1", [1], np.int64), ax1])
    intercept = b.op("Slice", [scale, b.const("j1", [1], np.int64), b.const("j2", [2], np.int64), ax1])
    hu = b.op("Add", [b.op("Mul", [sampled, slope]), intercept])
    inside = _inside(b, gx, gy, _MASK_EPS, "inside_slice")
    return b.op("Where", [inside, hu, b.const("fill_hu", float(fill_hu))], b.prefix + "hu")


def _back(b: _Nodes, grid: ModelGrid, back: str) -> str:
    """Fused labels (or probabilities) -> ``labels_input`` on the stored grid, 0 outside the model grid."""
    hw = b.op("Shape", ["pixels"], start=2)
    sides = [b.op("Gather", [hw, b.const(f"side{k}", k, np.int64)], axis=0) for k in (0, 1)]
    ys = _normalised(b, sides[0], [1, -1, 1], "ys_input")
    xs = _normalised(b, sides[1], [1, 1, -1], "xs_input")
    sample_grid, gx, gy = _affine_grid(b, "theta_back", xs, ys, "grid_input")
    if back == "labels":
        source = b.op("Unsqueeze", [b.op("Cast", ["labels"], to=TensorProto.FLOAT), b.const("lab_ax", [1], np.int64)])
    else:
        source = "probabilities"
    sampled = b.op("GridSample", [source, sample_grid], mode="nearest", padding_mode="border", align_corners=1)
    # the tie bias moves a point on the grid's last pixel centre just past it: widen the inside-test to match
    eps = 2.0 * TIE_BIAS_PX / (min(grid.size) - 1) + _MASK_EPS
    inside = _inside(b, gx, gy, eps, "inside_model")
    kept = b.op("Where", [inside, sampled, b.const("background", 0.0)])
    if back == "labels":
        flat = b.op("Squeeze", [kept, b.const("sq_ax", [1], np.int64)])
    else:
        flat = b.op("ArgMax", [kept], axis=1, keepdims=0)  # all-zero outside: ArgMax's first index, background
    return b.op("Cast", [flat], LABELS_INPUT, to=TensorProto.INT32)


def wrap_with_resampling(fused: onnx.ModelProto, grid: ModelGrid, *, fill_hu: float, labels_count: int,
                         opset: int = 17, back: str = "labels", debug: bool = False) -> onnx.ModelProto:
    """One graph: stored slice in, resampled onto ``grid``, ``fused`` run, labels back (module docstring: the I/O)."""
    _check_arguments(grid, fill_hu, labels_count, opset, back)
    hu_input = _check_fused(fused, grid, labels_count, opset)
    b = _Nodes(_PRE)
    hu = _forward(b, grid, float(fill_hu))
    forward_nodes = len(b.nodes)
    inner = _inline(fused, hu_input.name, hu)
    labels_input = _back(b, grid, back)
    rows, cols = grid.size
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", 1, "H", "W"]),
              helper.make_tensor_value_info("rescale", TensorProto.FLOAT, ["N", 2]),
              helper.make_tensor_value_info("theta", TensorProto.FLOAT, ["N", 2, 3]),
              helper.make_tensor_value_info("theta_back", TensorProto.FLOAT, ["N", 2, 3])]
    outputs = [*fused.graph.output,
               helper.make_tensor_value_info(labels_input, TensorProto.INT32, ["N", "H", "W"])]
    nodes = [*b.nodes[:forward_nodes], *inner.nodes, *b.nodes[forward_nodes:]]  # topological order
    if debug:
        nodes.append(helper.make_node("Identity", [hu], [HU_MODEL], name=_PRE + "debug_hu"))
        outputs.append(helper.make_tensor_value_info(HU_MODEL, TensorProto.FLOAT, ["N", 1, rows, cols]))
    graph = helper.make_graph(nodes, "resampled_" + (fused.graph.name or "fused"), inputs, outputs,
                              [*b.inits, *inner.inits])
    model = helper.make_model(graph, opset_imports=list(fused.opset_import))
    model.ir_version = max(fused.ir_version, 8)
    model.producer_name = fused.producer_name or "liverlesion"
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the wrapped graph fails onnx.checker: {exc}") from None
    return model
