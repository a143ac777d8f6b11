"""Add LiTS-calibrated INT8 (Q/DQ) models to an existing package, atomically.

Calibrate -> quantize (the TensorRT form, S8S8) -> check the graph against TensorRT's
rules -> measure accuracy against FP32 on held-out slices -> write the CPU form (U8S8)
from the same calibration and recipe, measured the same way and kept only if it meets
the same target. When INT8 misses its target the recipe is tightened,
one fix per round up to ``max_fix_rounds``: another calibration method (unless one was
asked for), then the block whose float exclusion recovers most (:mod:`.sensitivity`).
The target is never loosened.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..errors import ExportError
from ..package import load_package, package_binding, write_manifest
from ..package.sections import Calibration, Quantization
from ..package.store import file_record
from .accuracy import (
    EvalSet,
    annotate,
    fp32_maps,
    load_eval_set,
    measure,
    measure_on_openvino,
    target_loss,
    target_misses,
)
from .binding import bound_onnx_record
from .calibration import CALIBRATION_FILE, save_slices, select_calibration_slices
from .graph_checks import require_tensorrt_form
from .package_writer import (
    FP32_FILE,
    INT8_CPU_FILE,
    INT8_FILE,
    NvidiaGate,
    copy_package,
    is_package,
    readable_by_all,
    require_folder_package,
)
from .quantize import DEFAULT_METHOD, FORMS, METHODS, QuantRecipe, quantize_int8
from .sensitivity import activation_errors, block_sensitivity, worst_tensors

#: Accuracy record of the CPU-form INT8 model (the TensorRT form keeps the key "int8").
CPU_FORM_KEY = "int8-u8s8"
#: The same file measured on OpenVINO (see ``package.accuracy.accuracy_key``).
CPU_FORM_OPENVINO_KEY = "int8-u8s8@openvino"
#: Slices used for the per-tensor error study (all intermediate tensors are held in memory).
_ERROR_SLICES = 4


@dataclass
class QuantizeResult:
    path: Path
    recipe: QuantRecipe
    accuracy: dict[str, dict[str, Any]]
    graph: dict[str, Any]
    study: dict[str, Any]
    timings_s: dict[str, float]
    size: int
    #: The manifest's quantization.forms: each INT8 form, and whether the CPU form was written.
    forms: dict[str, dict[str, Any]]


def _ranges(scratch: Path, method: str) -> Path:
    """One calibration per method, shared by every recipe tried with it."""
    return scratch / f"ranges-{method}.json"


def _round(recipe: QuantRecipe, scores: dict[str, Any], misses: list[str]) -> dict[str, Any]:
    return {"method": recipe.method, "extra_exclude": list(recipe.extra_exclude), "misses": misses,
            "agreement_with_fp32": scores["agreement_with_fp32"]}


def fit_recipe(fp32: Path, out: Path, slices: np.ndarray, recipe: QuantRecipe, data: EvalSet,
               fp32_scores: dict[str, Any], ref_maps: np.ndarray, scratch: Path, *, try_methods: bool,
               max_rounds: int, say: Callable[[str], None]) -> tuple[QuantRecipe, dict[str, Any], list[str],
                                                                      dict[str, Any]]:
    """Quantize to ``out``; while INT8 misses its target, tighten the recipe, one fix per round.

    First the per-tensor study (recorded). Round 1, when ``try_methods``: the other
    calibration methods. Later rounds: the block whose float exclusion helps most.
    Returns (recipe, scores, excluded nodes, study).
    """
    def attempt(trial: QuantRecipe, path: Path) -> tuple[dict[str, Any], list[str], list[str]]:
        excluded = quantize_int8(fp32, path, slices, trial, cache=_ranges(scratch, trial.method))
        scores = measure({"int8": path}, data, reference=ref_maps)["int8"]
        return scores, excluded, target_misses("int8", scores, fp32_scores)

    scores, excluded, misses = attempt(recipe, out)
    study: dict[str, Any] = {"rounds": [_round(recipe, scores, misses)]}
    methods = [m for m in METHODS if m != recipe.method] if try_methods else []
    while misses:
        say("INT8 misses its target: " + "; ".join(misses))
        if "worst_tensors" not in study:
            errors = activation_errors(fp32, out, slices[:_ERROR_SLICES])
            study["worst_tensors"] = worst_tensors(errors)
        if len(study["rounds"]) > max_rounds:
            break
        if methods:
            say(f"trying the other calibration methods: {', '.join(methods)}")
            trials = []
            for method in methods:
                trial = replace(recipe, method=method)
                trial_scores, _, trial_misses = attempt(trial, scratch / "trial.onnx")
                trials.append({"method": method, "misses": trial_misses,
                               "target_loss": target_loss("int8", trial_scores, fp32_scores),
                               "agreement_with_fp32": trial_scores["agreement_with_fp32"]})
                say(f"  {method:<12} agreement {trial_scores['agreement_with_fp32']:.5f}"
                    f"{'  (meets target)' if not trial_misses else ''}")
            study["methods"] = trials
            methods = []
            best = min(trials, key=lambda r: (bool(r["misses"]), r["target_loss"], -r["agreement_with_fp32"]))
            if best["target_loss"] >= target_loss("int8", scores, fp32_scores):
                study["rounds"].append(_round(recipe, scores, misses))  # no method does better
                continue
            recipe = replace(recipe, method=best["method"])
            say(f"calibrating with {best['method']} instead")
        else:
            say("per-block study: re-quantizing with each block kept in float")
            ranking = block_sensitivity(fp32, slices, data, recipe, fp32_scores, ref_maps,
                                        cache=_ranges(scratch, recipe.method), progress=say)
            study.setdefault("block_sensitivity", []).append(ranking)
            if not ranking:
                break
            recipe = replace(recipe, extra_exclude=(*recipe.extra_exclude, ranking[0]["block"]))
            say(f"keeping {ranking[0]['block']} in float and quantizing again")
        scores, excluded, misses = attempt(recipe, out)
        study["rounds"].append(_round(recipe, scores, misses))
    return recipe, scores, excluded, study


def fit_cpu_form(fp32: Path, out: Path, slices: np.ndarray, recipe: QuantRecipe, data: EvalSet,
                 fp32_scores: dict[str, Any], ref_maps: np.ndarray, scratch: Path, *, max_rounds: int,
                 say: Callable[[str], None]) -> tuple[QuantRecipe, dict[str, Any], list[dict[str, Any]]]:
    """The CPU form (u8s8) from the TensorRT form's calibration and recipe; while it misses the INT8
    target, one more block kept in float per round (its own rounds: the forms round differently).

    Returns (its recipe, its scores, the rounds).
    """
    def attempt(trial: QuantRecipe) -> tuple[dict[str, Any], list[str]]:
        quantize_int8(fp32, out, slices, trial, cache=_ranges(scratch, trial.method), form="u8s8")
        scores = measure({CPU_FORM_KEY: out}, data, reference=ref_maps)[CPU_FORM_KEY]
        return scores, target_misses(CPU_FORM_KEY, scores, fp32_scores)

    scores, misses = attempt(recipe)
    rounds = [_round(recipe, scores, misses)]
    while misses and len(rounds) <= max_rounds:
        say(f"the CPU-form INT8 (u8s8) misses its target ({'; '.join(misses)}): per-block study")
        ranking = block_sensitivity(fp32, slices, data, recipe, fp32_scores, ref_maps,
                                    cache=_ranges(scratch, recipe.method), progress=say, form="u8s8")
        if not ranking:
            break
        recipe = replace(recipe, extra_exclude=(*recipe.extra_exclude, ranking[0]["block"]))
        say(f"keeping {ranking[0]['block']} in float in the CPU form and quantizing it again")
        scores, misses = attempt(recipe)
        rounds.append(_round(recipe, scores, misses))
    return recipe, scores, rounds


def quantize_package(package_dir: str | Path, calib: str | Path, eval_data: str | Path, *, slices: int = 64,
                     method: str | None = None, exclude: tuple[str, ...] | None = None,
                     extra_exclude: tuple[str, ...] = (), stratified: bool = True, seed: int = 0,
                     every: int = 1, max_fix_rounds: int = 3, allow_miss: bool = False,
                     progress: Callable[[str], None] | None = None) -> QuantizeResult:
    """Add ``model_int8_qdq_s8s8.onnx``, ``model_int8_qdq_u8s8.onnx`` and ``calibration/slices.npy``.

    The U8S8 (CPU) form is omitted, with the reason recorded, when it misses the INT8 target.

    ``method`` None: min/max first (see DEFAULT_METHOD), and the other methods are tried
    if INT8 misses its target; a given method is kept, and only blocks are moved to float.
    """
    from ..atomic import folder_swap

    say = progress or (lambda _msg: None)
    timings: dict[str, float] = {}
    root = require_folder_package(package_dir)
    package = load_package(root)
    manifest = package.manifest
    try_methods = method is None
    recipe = QuantRecipe(method=method or DEFAULT_METHOD, exclude=exclude, extra_exclude=tuple(extra_exclude))

    t = time.perf_counter()
    calibration = select_calibration_slices(calib, manifest.grid, count=slices, stratified=stratified,
                                            seed=seed, every=every)
    timings["calibration_slices_s"] = time.perf_counter() - t
    say(f"calibration: {len(calibration.slices)} LiTS slices ({calibration.selection})")
    data = load_eval_set(eval_data, manifest.grid, manifest.model.training)

    with folder_swap(root, is_package, "a model package") as tmp, \
            tempfile.TemporaryDirectory(prefix="liverlesion-ranges-") as scratch:
        copy_package(root, tmp)
        for stale in (tmp / INT8_FILE, tmp / INT8_CPU_FILE, tmp / CALIBRATION_FILE):
            stale.unlink(missing_ok=True)
        save_slices(tmp / CALIBRATION_FILE, calibration.slices)
        fp32, int8 = tmp / FP32_FILE, tmp / INT8_FILE
        t = time.perf_counter()
        fp32_scores = measure({"fp32": fp32}, data)["fp32"]
        ref_maps = fp32_maps(fp32, data)
        timings["fp32_accuracy_s"] = time.perf_counter() - t

        t = time.perf_counter()
        recipe, scores, excluded, study = fit_recipe(
            fp32, int8, calibration.slices, recipe, data, fp32_scores, ref_maps, Path(scratch),
            try_methods=try_methods, max_rounds=max_fix_rounds, say=say)
        timings["quantize_s"] = time.perf_counter() - t
        misses = target_misses("int8", scores, fp32_scores)
        if misses and not allow_miss:
            raise ExportError("INT8 misses its accuracy target after "
                              f"{len(study['rounds']) - 1} fix round(s): {'; '.join(misses)}; nothing was "
                              "written (try another --method, more --slices, --exclude, or --allow-miss to "
                              "keep it with the miss recorded)")
        graph = require_tensorrt_form(onnx.load(str(int8)), INT8_FILE).to_dict()
        # the quantizer may or may not carry the FP32 graph's metadata over: each INT8 file is stamped with
        # the package's binding and its own identity (form, accuracy record), from the fields of its record
        binding = package_binding(manifest)
        # stamped and gated now, before the CPU form's rounds: a file TensorRT refuses fails fast
        gate = NvidiaGate(manifest.grid, manifest.input.max_batch, progress,
                          "keep the refused nodes in float (liverlesion quantize --exclude NODE), or report it")
        int8_record = gate.record(tmp, bound_onnx_record(
            tmp, INT8_FILE, binding, "onnx", "int8", opset=graph["opset"], form=FORMS["s8s8"]["form"],
            runtimes=FORMS["s8s8"]["runtimes"], accuracy="int8"))
        timings["nvidia_parser_s"] = gate.seconds

        t = time.perf_counter()
        cpu_int8 = tmp / INT8_CPU_FILE
        cpu_recipe, cpu_scores, cpu_rounds = fit_cpu_form(
            fp32, cpu_int8, calibration.slices, recipe, data, fp32_scores, ref_maps, Path(scratch),
            max_rounds=max_fix_rounds, say=say)
        cpu_misses = target_misses(CPU_FORM_KEY, cpu_scores, fp32_scores)
        timings["cpu_form_s"] = time.perf_counter() - t
        cpu_on_openvino = None
        if cpu_misses:
            say(f"the CPU-form INT8 (u8s8) misses the target and is left out: {'; '.join(cpu_misses)}")
            cpu_int8.unlink()
        else:  # OpenVINO's int8 kernels are its own: measured there too, for auto to vouch for them
            cpu_on_openvino, said = measure_on_openvino(cpu_int8, "int8", data, fp32, reference=ref_maps)
            say(said)

        accuracy = {key: record.to_dict() for key, record in manifest.accuracy.items()}
        if accuracy.get("fp32", {}).get("data") != data.description:
            accuracy = {"fp32": fp32_scores}  # measured on other slices: those numbers do not compare
            bf16, said = measure_on_openvino(fp32, "bf16", data, fp32, reference=ref_maps)
            if bf16 is not None:  # OpenVINO's bf16, measured again on these slices
                accuracy["bf16"] = bf16
        accuracy.pop(CPU_FORM_KEY, None)
        accuracy.pop(CPU_FORM_OPENVINO_KEY, None)
        accuracy["int8"] = scores
        if not cpu_misses:
            accuracy[CPU_FORM_KEY] = cpu_scores
        if cpu_on_openvino is not None:
            accuracy[CPU_FORM_OPENVINO_KEY] = cpu_on_openvino
        annotate(accuracy, fp32_scores)
        raw = manifest.to_dict()
        files = [f for f in raw["files"] if f["path"] not in (INT8_FILE, INT8_CPU_FILE, CALIBRATION_FILE)]
        opset = graph["opset"]
        files.append(int8_record.to_dict())
        if not cpu_misses:  # not gated: its int32 biases are for onnxruntime CPU and OpenVINO, never TensorRT
            files.append(bound_onnx_record(tmp, INT8_CPU_FILE, binding, "onnx", "int8", opset=opset,
                                           form=FORMS["u8s8"]["form"], runtimes=FORMS["u8s8"]["runtimes"],
                                           accuracy=CPU_FORM_KEY).to_dict())
        files.append(file_record(tmp, CALIBRATION_FILE, "calibration", None, dtype="float32",
                                 shape=list(calibration.slices.shape), units="HU").to_dict())
        raw["files"] = files
        raw["calibration"] = Calibration.from_dict(calibration.to_manifest(recipe.method, excluded)).to_dict()
        forms: dict[str, dict[str, Any]] = {name: dict(spec) for name, spec in FORMS.items()}
        forms["u8s8"].update(written=not cpu_misses, rounds=cpu_rounds,
                             extra_excluded_blocks=list(cpu_recipe.extra_exclude))
        if cpu_misses:
            forms["u8s8"]["target_misses"] = cpu_misses
        raw["quantization"] = Quantization(
            format="QDQ", tool="onnxruntime.quantization.quantize_static", method=recipe.method,
            extra_excluded_blocks=tuple(recipe.extra_exclude), forms=forms,
            extra={"tensorrt_checks": graph, "study": study},
        ).to_dict()
        raw["accuracy"] = accuracy
        write_manifest(tmp, raw)
        load_package(tmp).close()
        readable_by_all(tmp)
    return QuantizeResult(path=root, recipe=recipe, accuracy=accuracy, graph=graph, study=study,
                          timings_s=timings, size=(root / INT8_FILE).stat().st_size, forms=forms)
