"""Where INT8 costs accuracy: per-tensor error between the FP32 and INT8 graphs, per-block exclusion.

Two views, both on onnxruntime CPU:

* :func:`activation_errors` runs both graphs with every intermediate tensor exposed
  (onnxruntime's ``qdq_loss_debug``) and gives each tensor's signal-to-quantization-noise
  ratio (dB): ``local`` for quantizing that tensor alone, ``accumulated`` for the INT8
  graph against the FP32 graph at that point.
* :func:`block_sensitivity` re-quantizes with one network block at a time kept in float
  and measures the accuracy gained on held-out slices: the blocks to exclude first.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from ..model.fused import INPUT_NAME, NETWORK_SCOPE
from .accuracy import EvalSet, measure, target_loss, target_misses
from .calibration import CalibrationReader
from .quantize import QuantRecipe, quantize_int8, resolve_excluded

_BLOCK = re.compile(re.escape(NETWORK_SCOPE) + r"([A-Za-z_]+(?:\.\d+)?)/")


def block_of(node_name: str) -> str | None:
    """The network block a node belongs to, as a name prefix (e.g. '/network/encoders.1/')."""
    match = _BLOCK.match(node_name)
    return match.group(0) if match else None


def network_blocks(model: onnx.ModelProto) -> list[str]:
    """Block prefixes in graph order (stem, encoders.i, ups.i, decoders.i, head, ...)."""
    blocks: list[str] = []
    for node in model.graph.node:
        block = block_of(node.name)
        if block and block not in blocks:
            blocks.append(block)
    return blocks


def sqnr_db(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """Signal-to-quantization-noise ratio in dB; nan for an all-zero (dead) tensor, inf if exact.

    onnxruntime's own version reports a dead tensor as 0 dB, the worst score, which
    would put ReLUs that never fire at the top of the study.
    """
    a = np.concatenate([np.ravel(v) for v in reference]).astype(np.float64)
    b = np.concatenate([np.ravel(v) for v in other]).astype(np.float64)
    signal, noise = float(np.linalg.norm(a)), float(np.linalg.norm(a - b))
    if signal == 0.0:
        return float("nan")
    return float("inf") if noise == 0.0 else 20.0 * float(np.log10(signal / noise))


def activation_errors(fp32_path: str | Path, int8_path: str | Path,
                      slices: np.ndarray) -> list[dict[str, Any]]:
    """SQNR (dB, higher is better) of each quantized activation, in graph order."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    with tempfile.TemporaryDirectory(prefix="liverlesion-sens-") as tmp, \
            contextlib.redirect_stdout(io.StringIO()):
        aug_f, aug_q = Path(tmp) / "f.onnx", Path(tmp) / "q.onnx"
        dbg.modify_model_output_intermediate_tensors(str(fp32_path), str(aug_f))
        dbg.modify_model_output_intermediate_tensors(str(int8_path), str(aug_q))
        float_acts = dbg.collect_activations(str(aug_f), CalibrationReader(slices, INPUT_NAME))
        qdq_acts = dbg.collect_activations(str(aug_q), CalibrationReader(slices, INPUT_NAME))
    errors = dbg.compute_activation_error(dbg.create_activation_matching(qdq_acts, float_acts), sqnr_db)
    producer = {o: n.name for n in onnx.load(str(fp32_path)).graph.node for o in n.output}
    order = {name: i for i, name in enumerate(producer)}
    rows = [{"tensor": t, "node": producer.get(t, ""), "local_db": float(e.get("qdq_err", np.nan)),
             "accumulated_db": float(e.get("xmodel_err", np.nan))} for t, e in errors.items()]
    return sorted(rows, key=lambda r: order.get(r["tensor"], len(order)))


def worst_tensors(rows: Sequence[dict[str, Any]], count: int = 5) -> list[dict[str, Any]]:
    """The tensors with the lowest local SQNR (dead and exactly represented tensors left out)."""
    finite = [r for r in rows if np.isfinite(r["local_db"])]
    return sorted(finite, key=lambda r: r["local_db"])[:count]


def block_sensitivity(fp32_path: str | Path, calibration: np.ndarray, data: EvalSet, recipe: QuantRecipe,
                      fp32_scores: dict[str, Any], fp32_maps: np.ndarray, *,
                      blocks: Sequence[str] | None = None, cache: str | Path | None = None,
                      progress: Callable[[str], None] | None = None, form: str = "s8s8") -> list[dict[str, Any]]:
    """Accuracy of INT8 (of ``form``) with each block kept in float, best first (see the sort key).

    ``cache``: the calibration range file of ``recipe`` (see :func:`quantize_int8`).
    """
    if blocks is None:  # every block with a node still quantized
        model = onnx.load(str(fp32_path))
        floating = set(resolve_excluded(model, recipe))
        blocks = [b for b in network_blocks(model)
                  if any(n.name.startswith(b) and n.name not in floating for n in model.graph.node)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="liverlesion-sens-") as tmp:
        for block in blocks:
            trial = replace(recipe, extra_exclude=(*recipe.extra_exclude, block))
            path = Path(tmp) / "trial.onnx"
            quantize_int8(fp32_path, path, calibration, trial, cache=cache, form=form)
            scores = measure({"int8": path}, data, reference=fp32_maps)["int8"]
            misses = target_misses("int8", scores, fp32_scores)
            rows.append({"block": block, **{k: scores[k] for k in ("lesion_dice", "liver_dice", "accuracy",
                                                                     "agreement_with_fp32")},
                         "target_loss": target_loss("int8", scores, fp32_scores), "meets_target": not misses})
            if progress:
                progress(f"  {block:<32} agreement {scores['agreement_with_fp32']:.5f}"
                         f"{'  (meets target)' if not misses else ''}")
    # best first: meets the target, then the smallest loss in target units, then the closest to FP32
    return sorted(rows, key=lambda r: (not r["meets_target"], r["target_loss"], -r["agreement_with_fp32"]))
