"""Export: the fused ONNX graph, FP16 and INT8 (Q/DQ) variants, parity, the model package (needs torch/onnx).

Entry points: :func:`export_package` (checkpoint -> package with FP32 + FP16) and
:func:`quantize_package` (adds LiTS-calibrated INT8). The pieces (fusing, ONNX export,
conversion, quantization, graph checks, accuracy) live in their own modules.
"""

from __future__ import annotations

from .accuracy import TARGETS, format_table
from .int8_package import QuantizeResult, quantize_package
from .package_writer import ExportResult, export_package

__all__ = ["TARGETS", "ExportResult", "QuantizeResult", "export_package", "format_table", "quantize_package"]
