"""What can be benchmarked: backends by name, precisions, and their combinations (no heavy imports).

The CLI's argument parser reads these names, so this module imports nothing beyond the
error types; the runner loads the configurations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InputError

#: Backends by the name the benchmark gives them: (liverlesion backend, onnxruntime provider).
BACKEND_SPECS: dict[str, tuple[str, str | None]] = {
    "tensorrt": ("tensorrt", None),
    "onnxruntime": ("onnxruntime", "cpu"),
    "onnxruntime-cuda": ("onnxruntime", "cuda"),
    "onnxruntime-tensorrt": ("onnxruntime", "tensorrt"),
    "torch": ("torch", None),
    "openvino": ("openvino", None),
}
#: The SDK precisions (as ``sdk.selection.PRECISIONS``; repeated here to keep this module light).
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
#: Precisions only some backends execute: bf16 is OpenVINO's execution precision of the FP32 graph.
ONLY_ON = {"bf16": ("openvino",)}
DEFAULT_BATCH_SIZES = (1, 8)
#: The reference rows users compare against.
REFERENCES = {"torch": "PyTorch eager FP32"}


@dataclass(frozen=True)
class BenchConfig:
    """One way to run the package: a backend (as :data:`BACKEND_SPECS` names it) and a precision."""

    name: str
    precision: str

    @property
    def backend(self) -> str:
        return BACKEND_SPECS[self.name][0]

    @property
    def provider(self) -> str | None:
        return BACKEND_SPECS[self.name][1]

    @property
    def label(self) -> str:
        return f"{self.name} {self.precision}"

    @property
    def reference(self) -> str | None:
        return REFERENCES.get(self.name)


def configurations(backends: Sequence[str] = tuple(BACKEND_SPECS),
                   precisions: Sequence[str] = PRECISIONS) -> list[BenchConfig]:
    """Every requested backend x precision; torch only at FP32 (it is the FP32 reference, nothing else),
    bf16 only on OpenVINO."""
    unknown = [b for b in backends if b not in BACKEND_SPECS]
    if unknown:
        raise InputError(f"unknown backend(s) {', '.join(unknown)}; accepted: {', '.join(BACKEND_SPECS)}")
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise InputError(f"unknown precision(s) {', '.join(bad)}; accepted: {', '.join(PRECISIONS)}")
    return [BenchConfig(b, p) for b in backends for p in precisions
            if (b != "torch" or p == "fp32") and b in ONLY_ON.get(p, (b,))]
