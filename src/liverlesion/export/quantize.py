"""Explicit INT8 (Q/DQ) quantization with onnxruntime, in two forms from one calibration.

- ``s8s8`` (the TensorRT form): signed int8 activations and weights, symmetric (zero
  points 0), per-channel weights (Conv axis 0), biases left in float (TensorRT refuses a
  DequantizeLinear on an int32 bias and fuses the float bias itself).
- ``u8s8`` (the CPU form): uint8 activations with zero points, int8 symmetric per-channel
  weights, int32 biases. onnxruntime's CPU provider fuses these Q/DQ groups into
  QLinearConv (VNNI kernels) and OpenVINO compiles them to int8; the s8s8 form with float
  biases is left mostly unfused on CPU (measured slower than FP32) and OpenVINO refuses it.

Both are written from the same activation ranges (one calibration run, see
:func:`calibrate`). Pre- and postprocessing and the output head(s) stay in float by default.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import InputError
from ..model.fused import INPUT_NAME, NETWORK_SCOPE
from ..package.accuracy import CPU_INT8_FORM, GPU_INT8_FORM
from .calibration import CalibrationReader

METHODS = ("minmax", "percentile", "entropy")
#: INT8 forms: the manifest's ``form`` field and the runtimes each is meant for.
FORMS: dict[str, dict[str, Any]] = {
    "s8s8": {"form": GPU_INT8_FORM, "runtimes": ["tensorrt", "onnxruntime-tensorrt"],
             "activations": "int8 symmetric per-tensor", "weights": "int8 symmetric per-channel", "bias": "float"},
    "u8s8": {"form": CPU_INT8_FORM, "runtimes": ["onnxruntime-cpu", "openvino"],
             "activations": "uint8 asymmetric per-tensor (zero points)", "weights": "int8 symmetric per-channel",
             "bias": "int32"},
}
#: Measured on phantom-trained networks (160 px grid, 150 held-out slices): min/max and
#: percentile stay within 0.3 Dice points of FP32; TensorRT-style entropy clips the
#: activations that carry lesions and loses 7.9 (joint) and 3.8 (Y-Net) lesion Dice points.
#: Min/max is also the one method both INT8 paths share (TensorRT 8.5's IInt8MinMaxCalibrator).
DEFAULT_METHOD = "minmax"
#: Nodes of the network kept in float by default: the output heads (a few channels, where
#: rounding moves the argmax most directly), given as node-name prefixes.
DEFAULT_FLOAT_PREFIXES = ("/network/head/", "/network/classifier/")


@dataclass(frozen=True)
class QuantRecipe:
    """What to quantize and how; ``exclude`` overrides the default excluded set entirely."""

    method: str = DEFAULT_METHOD
    exclude: tuple[str, ...] | None = None
    extra_exclude: tuple[str, ...] = ()
    percentile: float = 99.999
    histogram_bins: int = 2048  # entropy and percentile; entropy's search time grows with it
    batch: int = 8
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown calibration method {self.method!r}; accepted: {', '.join(METHODS)}")


def default_excluded(model: onnx.ModelProto) -> list[str]:
    """Nodes left in float by default: everything outside the network scope, and the heads."""
    return [n.name for n in model.graph.node
            if not n.name.startswith(NETWORK_SCOPE) or n.name.startswith(DEFAULT_FLOAT_PREFIXES)]


def resolve_excluded(model: onnx.ModelProto, recipe: QuantRecipe) -> list[str]:
    """The node names to exclude: defaults (or ``recipe.exclude``) plus extras; patterns are prefixes."""
    names = [n.name for n in model.graph.node]
    base = default_excluded(model) if recipe.exclude is None else []
    patterns = list(recipe.exclude or ()) + list(recipe.extra_exclude)
    picked = list(base)
    for pattern in patterns:
        matches = [n for n in names if n == pattern or n.startswith(pattern)]
        if not matches:
            raise InputError(f"--exclude {pattern!r} matches no node of the graph; give a node name or a "
                             f"name prefix such as '/network/encoders.0/'")
        picked += [m for m in matches if m not in picked]
    return picked


def _method(name: str) -> Any:
    from onnxruntime.quantization import CalibrationMethod

    return {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
            "percentile": CalibrationMethod.Percentile}[name]


def calibrator_options(recipe: QuantRecipe) -> dict[str, Any]:
    """Options of onnxruntime's calibrator for the recipe's method.

    Entropy gets TensorRT's histogram (2048 bins, thresholds searched over 128-bin
    quantizations): ``quantize_static`` cannot pass bin counts, and onnxruntime's entropy
    default (128 bins, 128 quantized bins) leaves one candidate threshold, the full
    range, which is min/max calibration under another name (checked: identical scales).
    """
    if recipe.method == "entropy":
        return {"num_bins": recipe.histogram_bins, "num_quantized_bins": 128, "symmetric": True}
    if recipe.method == "percentile":
        return {"num_bins": recipe.histogram_bins, "percentile": recipe.percentile, "symmetric": True}
    # The true (min, max): the s8s8 quantizer symmetrizes it to (-absmax, absmax), exactly what a
    # symmetric min/max calibration gives, and the u8s8 form keeps the tighter one-sided range.
    return {"symmetric": False}


def prepare(fp32_path: str | Path, out_path: str | Path) -> Path:
    """The FP32 graph with ONNX shape inference, as the quantizer wants it.

    The symbolic shape inference fails on the dynamic-batch Resize, and ORT's optimizer
    is skipped because it renames nodes (the excluded set is given by name); the exporter
    already folded BatchNorm and constants.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_optimization=True, skip_symbolic_shape=True)
    return Path(out_path)


def calibrate(prepared: str | Path, slices: np.ndarray, recipe: QuantRecipe, cache: str | Path) -> Path:
    """Activation ranges of every tensor over ``slices``, saved as onnxruntime's JSON range cache."""
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    with tempfile.TemporaryDirectory(prefix="liverlesion-calib-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress
        augmented = str(Path(tmp) / "augmented.onnx")
        calibrator = create_calibrator(Path(prepared), None, augmented_model_path=augmented,
                                       calibrate_method=_method(recipe.method),
                                       extra_options=calibrator_options(recipe))
        calibrator.collect_data(CalibrationReader(slices, INPUT_NAME, recipe.batch))
        save_tensors_data(calibrator.compute_data(), cache)
    return Path(cache)


def _form_options(form: str) -> tuple[Any, dict[str, Any]]:
    """(activation type, quantize_static extra options) of an INT8 form."""
    from onnxruntime.quantization import QuantType

    if form == "s8s8":
        return QuantType.QInt8, {
            "ActivationSymmetric": True, "WeightSymmetric": True,  # zero points 0, as TensorRT requires
            "QuantizeBias": False,  # TensorRT: no DequantizeLinear on int32 biases
        }
    if form == "u8s8":
        return QuantType.QUInt8, {"ActivationSymmetric": False, "WeightSymmetric": True, "QuantizeBias": True}
    raise InputError(f"unknown INT8 form {form!r}; accepted: {', '.join(FORMS)}")


def quantize_int8(fp32_path: str | Path, out_path: str | Path, slices: np.ndarray,
                  recipe: QuantRecipe = QuantRecipe(), *, cache: str | Path | None = None,
                  form: str = "s8s8") -> list[str]:
    """Write the Q/DQ model of ``form`` calibrated on ``slices`` (HU, N x 1 x H x W); returns the excluded nodes.

    ``cache``: a range file from :func:`calibrate` for the same graph, slices and method
    (written there if it does not exist), so that recipes differing only in the excluded
    nodes, and the two forms, share one calibration.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    activation_type, form_options = _form_options(form)
    model = onnx.load(str(fp32_path))
    excluded = resolve_excluded(model, recipe)
    options = {**form_options, "QDQOpTypePerChannelSupportToAxis": {"Conv": 0}, **recipe.options}
    with tempfile.TemporaryDirectory(prefix="liverlesion-quant-") as tmp:
        prepared = prepare(fp32_path, Path(tmp) / "prepared.onnx")
        ranges = Path(cache) if cache is not None else Path(tmp) / "ranges.json"
        if not ranges.is_file():
            calibrate(prepared, slices, recipe, ranges)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.filterwarnings("ignore", category=UserWarning, module=r"onnxruntime\.quantization.*")
            quantize_static(
                str(prepared), str(out_path), None, calibration_cache_path=str(ranges),
                quant_format=QuantFormat.QDQ, activation_type=activation_type, weight_type=QuantType.QInt8,
                per_channel=True, calibrate_method=_method(recipe.method), nodes_to_exclude=excluded,
                extra_options=options,
            )
    return excluded
