"""The manifest's accuracy records and INT8 forms: which record vouches for a file, and its verdict.

The export writes these records (``export.accuracy``); their schema and verdict are
``sections.AccuracyRecord``; which record vouches for which file is decided here.
"""

from __future__ import annotations

from typing import Any

from .manifest import Manifest

#: INT8 forms of the package: uint8 activations for CPU runtimes (onnxruntime CPU, OpenVINO), symmetric int8
#: for TensorRT and the CUDA execution providers.
CPU_INT8_FORM = "qdq-u8s8"
GPU_INT8_FORM = "qdq-s8s8"
#: Precisions that are execution modes of the FP32 graph rather than files of their own.
EXECUTION_PRECISIONS = {"bf16": "fp32"}


def int8_form(on_cpu: bool) -> str:
    """The INT8 form a runtime runs best: the CPU form on CPU, the TensorRT form on a GPU."""
    return CPU_INT8_FORM if on_cpu else GPU_INT8_FORM


def precision_files(manifest: Manifest) -> set[str]:
    """Precisions the package has an ONNX model for."""
    return {f.precision for f in manifest.onnx_files() if f.precision}


def int8_file(manifest: Manifest, form: str) -> Any:
    """The package's INT8 ONNX record of ``form``, None when absent."""
    return manifest.find(role="onnx", precision="int8", form=form)


def accuracy_key(manifest: Manifest, precision: str, form: str | None = None, runtime: str | None = None) -> str:
    """The accuracy record of what would run.

    The INT8 file of ``form`` names its own record (a file that names none falls back to
    ``int8`` for the TensorRT form and to ``int8-<form>`` otherwise, never to another form's
    record). ``runtime``: INT8 measured on that runtime (``int8-u8s8@openvino``), for
    runtimes whose INT8 kernels differ from onnxruntime's, on which the export measures.
    """
    key = precision
    if precision == "int8" and form is not None:
        record = int8_file(manifest, form)
        default = "int8" if form == GPU_INT8_FORM else f"int8-{form.removeprefix('qdq-')}"
        key = str(record.extra.get("accuracy") or default) if record is not None else default
    if precision == "int8" and runtime is not None:
        key = f"{key}@{runtime}"
    return key


def accuracy_verdict(manifest: Manifest, precision: str, key: str | None = None) -> tuple[bool, str]:
    """(may ``precision="auto"`` choose it, why), from the accuracy the export recorded under ``key``."""
    if precision == "fp32":
        return True, "FP32 is the reference precision"
    record = manifest.accuracy.get(key or precision)
    if record is None:
        return False, (f"the package records no {precision.upper()} accuracy, so auto does not trade "
                       f"accuracy it cannot vouch for (ask for precision='{precision}' to use it anyway)")
    return record.verdict(precision, manifest.accuracy.get("fp32"))


def auto_precisions(manifest: Manifest, order: tuple[str, ...], notes: dict[str, str],
                    int8_form: str | None = None, runtime: str | None = None) -> list[str]:
    """Precisions of ``order`` that the package has and whose recorded accuracy qualifies.

    ``int8_form`` and ``runtime``: the INT8 file a backend would run, and where, whose own
    record is consulted (:func:`accuracy_key`). ``notes`` gets the verdicts, by precision.
    """
    have = precision_files(manifest)
    chosen = []
    for precision in order:
        if EXECUTION_PRECISIONS.get(precision, precision) not in have:
            notes.setdefault(precision, f"the package has no {precision.upper()} model")
            continue
        ok, why = accuracy_verdict(manifest, precision, accuracy_key(manifest, precision, int8_form, runtime))
        notes.setdefault(precision, why)
        if ok:
            chosen.append(precision)
    return chosen
