"""Accuracy of each precision of a package on held-out phantom lesion slices.

Slices go through the training data path (:func:`load_lesion_set`: the lesion-slice
reader and ``grid.to_model_grid``) and the scores through :mod:`liverlesion.metrics`
(the one definition), on the model grid as in training's evaluation.
Targets (Dice and accuracy in [0, 1]; one point = 0.01): FP16 within 0.1 Dice point
of FP32; INT8 within 1 Dice point and 1 accuracy point. "Within" bounds the loss
(FP32 minus the precision): a reduced precision that scores higher on a small set has
not cost accuracy; how far it strays from FP32 either way is the label agreement.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..grid import ModelGrid
from ..labels import FIRST_LESION_LABEL
from ..metrics import agreement, evaluate_predictions, slice_lesion_class
from ..model.fused import CLASS_PROBABILITIES, LABELS, PROBABILITIES
from .parity import cpu_session, run_session

#: Largest allowed loss (FP32 metric - metric) per precision.
TARGETS: dict[str, dict[str, float]] = {
    "fp16": {"lesion_dice": 0.001, "liver_dice": 0.001},
    "int8": {"lesion_dice": 0.01, "liver_dice": 0.01, "accuracy": 0.01},
    # bf16 keeps fp32's exponent but 8 mantissa bits (fp16 has 11): it is held to the INT8 target
    "bf16": {"lesion_dice": 0.01, "liver_dice": 0.01, "accuracy": 0.01},
}


def target_of(key: str) -> dict[str, float]:
    """The target of an accuracy record key: a precision, or ``precision-variant`` (e.g. ``int8-u8s8``)."""
    return TARGETS.get(key.split("-", 1)[0], {})


@dataclass
class EvalSet:
    """HU slices (N x 1 x H x W) on the model grid, their 5-label maps and slice classes."""

    hu: np.ndarray
    labels: np.ndarray
    classes: list[int]
    description: str
    root: str

    def __len__(self) -> int:
        return len(self.hu)


def load_eval_set(data: str | Path, grid: ModelGrid, training: Mapping[str, Any] | None = None) -> EvalSet:
    """Lesion slices for accuracy; the checkpoint's validation patients if it trained on ``data``."""
    from ..training.datasets import load_lesion_set, resolve_data_dir, split_indices

    root = resolve_data_dir(data, "lesion_slices").resolve()
    slices = load_lesion_set(root, grid)
    info = dict((training or {}).get("data", {}))
    trained_root = info.get("root")
    description = f"held-out phantom lesion slices ({root.name}, all {len(slices)} slices)"
    if trained_root and info.get("kind") == "lesion_slices" and Path(trained_root).resolve() == root:
        groups = list(info.get("val_groups") or [])
        if not groups:
            raise InputError(f"{root} is the dataset the checkpoint was trained on and it kept no validation "
                             "patients: give a held-out lesion-slice dataset (e.g. phantoms of another seed)")
        slices = slices.subset(split_indices(slices, groups)[1])
        description = (f"the checkpoint's validation patients of {root.name} ({len(groups)} patients, "
                       f"{len(slices)} slices; not trained on)")
    if not len(slices) or slices.classes is None:
        raise InputError(f"no usable lesion slices with classes in {root}")
    return EvalSet(hu=slices.hu[:, None].astype(np.float32), labels=slices.labels,
                   classes=[int(c) for c in slices.classes], description=description, root=str(root))


Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def openvino_runner(onnx_path: str | Path, precision: str) -> tuple[Runner, str]:
    """Outputs of a fused ONNX graph compiled by OpenVINO's CPU plugin at an SDK precision, and what its
    convolutions executed (the record says what was measured, as the backend checks what it runs).

    Raises MissingDependencyError without OpenVINO, BackendError when the CPU lacks the
    precision, OpenVINO cannot compile the graph, or it runs a less precise type than asked.
    """
    from ..errors import BackendError, require
    from ..openvino_execution import (
        INFERENCE_PRECISION,
        cpu_capabilities,
        executed_precision,
        execution_problem,
        output_names,
    )

    ov = require("openvino", "openvino", f"measuring OpenVINO {precision} accuracy")
    core = ov.Core()
    hint, capability = INFERENCE_PRECISION[precision]
    if capability not in cpu_capabilities(core):
        raise BackendError(f"this CPU cannot run OpenVINO {precision} (it needs {capability})")
    try:
        compiled = core.compile_model(str(onnx_path), "CPU", {"INFERENCE_PRECISION_HINT": hint})
    except Exception as exc:
        raise BackendError(f"OpenVINO could not compile {Path(onnx_path).name}: {exc}") from exc
    executed, runtime = executed_precision(compiled)
    problem = execution_problem(compiled, precision, hint, executed, runtime)
    if problem is not None:
        raise BackendError(f"OpenVINO compiled {Path(onnx_path).name} for {precision}, but {problem}")
    names = output_names(compiled)

    def run(hu: np.ndarray) -> dict[str, np.ndarray]:
        result = compiled(np.ascontiguousarray(hu))
        return {name: np.asarray(result[i]) for i, name in enumerate(names)}

    counts = ", ".join(f"{count} {kind}" for kind, count in sorted(runtime.items()))
    return run, f"{executed} ({counts} convolutions)" if counts else executed


def predict(onnx_path: str | Path, hu: np.ndarray, *, batch: int = 8,
            runner: Runner | None = None) -> tuple[np.ndarray, list[int | None] | None]:
    """Label maps (N x H x W) and slice classes from a fused ONNX graph (onnxruntime CPU unless ``runner``).

    The class is the Y-Net head's argmax where the graph has one, else the majority
    vote of the lesion pixels of a 5-label map (as in training's evaluation); ``None``
    for a segmentation-only (3-label joint) model.
    """
    if runner is None:
        session = cpu_session(onnx_path)

        def runner(x: np.ndarray) -> dict[str, np.ndarray]:
            return run_session(session, x)
    maps: list[np.ndarray] = []
    classes: list[int | None] = []
    for start in range(0, len(hu), batch):
        out = runner(hu[start:start + batch])
        maps.append(out[LABELS])
        if CLASS_PROBABILITIES in out:
            classes += [int(c) for c in out[CLASS_PROBABILITIES].argmax(1)]
        elif out[PROBABILITIES].shape[1] > FIRST_LESION_LABEL + 1:
            classes += [slice_lesion_class(m) for m in out[LABELS]]
    return np.concatenate(maps), (classes if len(classes) == len(hu) else None)


def measure(files: Mapping[str, str | Path], data: EvalSet, *, reference: np.ndarray | None = None,
            runners: Mapping[str, Runner] | None = None) -> dict[str, dict[str, Any]]:
    """Metrics per precision (``files``: precision -> ONNX path; FP32 first unless ``reference`` given;
    ``runners``: precision -> how to run it, onnxruntime CPU where absent)."""
    results: dict[str, dict[str, Any]] = {}
    ref = reference
    for precision, path in files.items():
        maps, classes = predict(path, data.hu, runner=(runners or {}).get(precision))
        if ref is None:
            if precision != "fp32":
                raise InputError("measure needs the FP32 model first, or its label maps as reference")
            ref = maps
        scores = evaluate_predictions(list(maps), list(data.labels), classes,
                                      data.classes if classes is not None else None)
        results[precision] = {
            "lesion_dice": scores["lesion_dice"], "liver_dice": scores["liver_dice"],
            "accuracy": scores.get("accuracy"), "agreement_with_fp32": agreement(maps, ref),
            "lesion_recall": scores["lesion_recall"], "slices": scores["slices"], "data": data.description,
        }
    return results


def measure_on_openvino(path: str | Path, precision: str, data: EvalSet, fp32_path: str | Path, *,
                        reference: np.ndarray | None = None) -> tuple[dict[str, Any] | None, str]:
    """Scores of ``path`` run by OpenVINO at ``precision`` (None where it cannot run here) and what happened.

    ``reference``: the FP32 label maps, computed from ``fp32_path`` only once OpenVINO runs.
    """
    from ..errors import BackendError, MissingDependencyError

    try:
        runner, executed = openvino_runner(path, precision)
    except (MissingDependencyError, BackendError) as exc:
        return None, f"OpenVINO {precision} accuracy not recorded: {exc}"
    if reference is None:
        reference = fp32_maps(fp32_path, data)
    scores = measure({precision: path}, data, reference=reference, runners={precision: runner})[precision]
    import openvino as ov

    scores["runtime"] = f"openvino {ov.get_version()} CPU at {precision} execution precision"
    scores["executed"] = executed
    return scores, f"OpenVINO {precision} accuracy measured"


def fp32_maps(path: str | Path, data: EvalSet) -> np.ndarray:
    """FP32 label maps, the reference for agreement when FP32 is not measured again."""
    return predict(path, data.hu)[0]


def target_misses(precision: str, scores: Mapping[str, Any], fp32: Mapping[str, Any]) -> list[str]:
    """Which targets ``precision`` misses against FP32 (empty: all met, or no target)."""
    misses = []
    for metric, limit in target_of(precision).items():
        if scores.get(metric) is None or fp32.get(metric) is None:
            continue  # e.g. accuracy of a segmentation-only model
        loss = float(fp32[metric]) - float(scores[metric])
        if loss > limit + 1e-12:
            misses.append(f"{metric} {scores[metric]:.4f} vs FP32 {fp32[metric]:.4f} "
                          f"(loses {100 * loss:.2f} points > {100 * limit:g})")
    return misses


def target_loss(precision: str, scores: Mapping[str, Any], fp32: Mapping[str, Any]) -> float:
    """Sum of the losses against FP32 in units of each target (below 1 per metric: that target is met)."""
    return sum(max(0.0, float(fp32[k]) - float(scores[k])) / limit
               for k, limit in target_of(precision).items()
               if scores.get(k) is not None and fp32.get(k) is not None)


def annotate(results: dict[str, dict[str, Any]], fp32: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Add each precision's target and whether it is met (in place; returned for chaining)."""
    for precision, scores in results.items():
        if target_of(precision):
            scores["target_max_loss"] = dict(target_of(precision))
            scores["target_misses"] = target_misses(precision, scores, fp32)
            scores["meets_target"] = not scores["target_misses"]
    return results


def resolution_note(results: Mapping[str, Mapping[str, Any]]) -> str | None:
    """A warning when one slice changes accuracy by more than the INT8 target allows."""
    slices = next((int(s["slices"]) for s in results.values() if s.get("slices")), 0)
    limit = TARGETS["int8"]["accuracy"]
    if slices and 1.0 / slices > limit:
        return (f"note: on {slices} slices one slice is {100 / slices:.2f} accuracy points, more than the "
                f"{100 * limit:g}-point INT8 target: a single flipped slice misses it "
                f"(evaluate on at least {round(1 / limit)} slices for a finer test)")
    return None


def format_table(results: Mapping[str, Mapping[str, Any]]) -> str:
    """A readable accuracy table, one precision per row (and the resolution note, if any)."""
    width = max([10, *(len(k) + 1 for k in results)])
    lines = [f"{'precision':<{width}}{'lesion Dice':>12}{'liver Dice':>12}{'accuracy':>10}{'agree FP32':>12}"
             "  target"]
    for precision, s in results.items():
        target = "" if "meets_target" not in s else ("met" if s["meets_target"] else "MISSED")
        acc = "-" if s.get("accuracy") is None else f"{s['accuracy']:.4f}"
        lines.append(f"{precision:<{width}}{s['lesion_dice']:>12.4f}{s['liver_dice']:>12.4f}{acc:>10}"
                     f"{s['agreement_with_fp32']:>12.5f}  {target}")
    note = resolution_note(results)
    return "\n".join([*lines, note] if note else lines)
