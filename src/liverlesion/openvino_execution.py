"""What OpenVINO's CPU plugin can run and what it compiled a graph to execute, checked against what was asked.

Shared by the OpenVINO backend (it refuses a model that runs a less precise type than asked)
and the export's accuracy measurement on OpenVINO (its record says what was executed).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from typing import Any

from .errors import BackendError

#: SDK precision -> OpenVINO INFERENCE_PRECISION_HINT, and the CPU capability it needs.
INFERENCE_PRECISION = {"fp32": ("f32", "FP32"), "bf16": ("bf16", "BF16"), "fp16": ("f16", "FP16"),
                       "int8": ("f32", "INT8")}
#: The fused graph's output names (the manifest lists them; these where it does not).
OUTPUTS = ("labels", "probabilities", "class_probabilities")
#: OpenVINO's runtime precisions, in the words of the SDK.
RUNTIME_NAMES = {"u8": "int8", "i8": "int8", "bf16": "bf16", "f16": "fp16", "f32": "fp32"}
#: What the convolutions of each precision may execute in: itself, or f32 where OpenVINO keeps a kernel in
#: float (an int8 model's float heads; a CPU without a reduced kernel). Never a less precise type.
ACCEPTED_EXECUTION = {"fp32": frozenset({"fp32"}), "bf16": frozenset({"bf16", "fp32"}),
                      "fp16": frozenset({"fp16", "fp32"}), "int8": frozenset({"int8", "fp32"})}
#: Instruction-set families in OpenVINO's kernel names (``primitiveType``), most specific first.
_KERNEL_ISAS = ("amx", "avx512", "avx2", "avx", "sse41", "acl", "ref")


def cpu_capabilities(core: Any) -> tuple[str, ...]:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES (e.g. FP32, INT8, BF16, FP16)."""
    try:
        return tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception as exc:
        raise BackendError(f"OpenVINO's CPU plugin did not start: {exc}") from exc


def output_names(compiled: Any, wanted: Collection[str] = OUTPUTS) -> list[str]:
    """The graph's output names: OpenVINO gives a port several tensor names (the ONNX output's among them)."""
    names = []
    for port in compiled.outputs:
        candidates = sorted(port.get_names())
        known = [n for n in candidates if n in wanted]
        names.append(known[0] if known else port.get_any_name())
    return names


def execution_problem(compiled: Any, precision: str, hint: str, executed: str,
                      runtime: dict[str, int]) -> str | None:
    """What in the compiled model disagrees with ``precision`` (its inference precision property, any
    convolution in a less precise type), or None. "unknown" (no runtime info) is not a disagreement."""
    try:
        type_ = compiled.get_property("INFERENCE_PRECISION_HINT")
        got = str(type_.get_type_name() if hasattr(type_, "get_type_name") else type_)
    except Exception:  # noqa: BLE001 - older OpenVINO without the property: the convolutions still tell
        got = hint
    if got != hint:
        return f"its inference precision is {got}, not {hint}"
    accepted = ACCEPTED_EXECUTION[precision]
    if executed != "unknown" and executed not in accepted:
        return f"its convolutions run in {executed}"
    odd = sorted(r for r in runtime if RUNTIME_NAMES.get(r, r) not in accepted)
    if odd:
        return f"{sum(runtime[r] for r in odd)} of its convolutions run in {', '.join(odd)}"
    return None


def kernel_isas(compiled: Any) -> dict[str, int]:
    """The convolutions' kernels by instruction-set family (from OpenVINO's ``primitiveType``), most first."""
    counts: Counter[str] = Counter()
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if str(info["layerType"].astype(str)) == "Convolution":
                kernel = str(info["primitiveType"].astype(str)).lower()
                counts[next((isa for isa in _KERNEL_ISAS if isa in kernel), kernel or "unknown")] += 1
    except Exception:  # noqa: BLE001 - informational, like executed_precision
        return {}
    return dict(counts.most_common())


def executed_precision(compiled: Any) -> tuple[str, dict[str, int]]:
    """What most of the compiled model's convolutions run in ("int8", "bf16", "fp16" or "fp32"), and the count
    of each runtime precision (an int8 model keeps its float heads: a few f32 convolutions)."""
    counts: Counter[str] = Counter()
    try:
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if str(info["layerType"].astype(str)) == "Convolution":
                counts[str(info["runtimePrecision"].astype(str))] += 1
    except Exception:  # noqa: BLE001 - the runtime model's rt_info is informational, not an API contract
        return "unknown", {}
    by_name: Counter[str] = Counter()
    for runtime, count in counts.items():
        by_name[RUNTIME_NAMES.get(runtime, runtime)] += count
    if not by_name:
        return "unknown", {}
    return by_name.most_common(1)[0][0], dict(counts)
