"""Export the fused network (and optionally the bare one) to a single ONNX file.

TorchScript-based exporter (``dynamo=False``): it writes opset 17 into one file with
the weights inside, which TensorRT 8.5 to 11 parse (docs: cpu-baselines.md).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from ..errors import ExportError
from ..grid import ModelGrid
from ..model.fused import INPUT_NAME, FusedModel
from ..package.binding import set_onnx_binding

OPSET = 17
BARE_INPUT = "x"
BARE_OUTPUTS = {"joint": ("seg_logits",), "ynet": ("seg_logits", "class_logits")}


def _export(module: nn.Module, example: torch.Tensor, inputs: list[str],
            outputs: list[str]) -> onnx.ModelProto:
    buffer = io.BytesIO()
    dynamic = {name: {0: "N"} for name in (*inputs, *outputs)}
    with warnings.catch_warnings():
        # dynamo=False is chosen on purpose (opset 17, one file); its deprecation notices are expected.
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=".*legacy TorchScript-based ONNX")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\..*")
        with torch.no_grad():
            # the TorchScript exporter writes to file-like objects too; torch's annotation says paths only
            torch.onnx.export(module, (example,), buffer,  # type: ignore[arg-type]
                              dynamo=False, opset_version=OPSET,
                              input_names=inputs, output_names=outputs, dynamic_axes=dynamic,
                              do_constant_folding=True, training=torch.onnx.TrainingMode.EVAL)
    return onnx.load_from_string(buffer.getvalue())


def inline_identity_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer.

    The exporter shares equal folded constants (e.g. BatchNorm-folded biases) through
    Identity nodes; quantizers and TensorRT want every Conv bias to be an initializer.
    """
    inits = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.input[0] in inits:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            model.graph.initializer.append(copy)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    live = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(live)
    return model


def check_and_save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Run onnx.checker (full check, with shape inference) and save as one file."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported ONNX graph {Path(path).name} fails onnx.checker: {exc}") from None
    path = Path(path)
    onnx.save_model(model, str(path), save_as_external_data=False)
    return path


def _example(grid: ModelGrid, channels: int) -> torch.Tensor:
    rows, cols = grid.size
    generator = torch.Generator().manual_seed(0)
    return torch.rand((2, channels, rows, cols), generator=generator) * 1400.0 - 1000.0


def _metadata(model: onnx.ModelProto, metadata: dict[str, Any] | None,
              binding: dict[str, Any] | None) -> onnx.ModelProto:
    model.producer_name = "liverlesion"
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    if binding is not None:  # what the manifest must agree with (package.binding)
        set_onnx_binding(model, binding)
    return model


def export_fused(fused: FusedModel, path: str | Path, grid: ModelGrid,
                 metadata: dict[str, Any] | None = None, binding: dict[str, Any] | None = None) -> Path:
    """Write the fused graph: ``hu`` N x 1 x H x W -> ``labels``, ``probabilities`` (+ class).

    ``binding`` (``package.make_binding``) is recorded in the graph's metadata.
    """
    model = _export(fused.eval(), _example(grid, 1), [INPUT_NAME], list(fused.output_names))
    return check_and_save(_metadata(inline_identity_initializers(model), metadata, binding), path)


def export_bare(network: nn.Module, path: str | Path, grid: ModelGrid, *, arch: str, in_channels: int,
                metadata: dict[str, Any] | None = None, binding: dict[str, Any] | None = None) -> Path:
    """Write the bare network (preprocessed channels in, logits out), for debugging."""
    example = _example(grid, in_channels) / 1000.0  # roughly the [-1, 1] range of real inputs
    model = _export(network.eval(), example, [BARE_INPUT], list(BARE_OUTPUTS[arch]))
    return check_and_save(_metadata(inline_identity_initializers(model), metadata, binding), path)


def opset_of(model: onnx.ModelProto) -> int:
    """The default-domain opset the model declares."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
