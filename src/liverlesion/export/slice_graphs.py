"""Add slice graphs to a package: every fused graph wrapped in its resampling (issue 14), gated and measured.

For each fused graph (role ``onnx``: fp32, fp16 and both INT8 forms) the package gains
``model_slice_<rest>`` (role ``onnx-slice``, ``wraps`` naming the fused file), which takes the slice as
stored plus its affines and returns the labels on the stored grid as well (``export.resampling_graph``).
The forms TensorRT gets are handed to NVIDIA's parser and builder for stored sides 256..1024
(``engines.plan.slice_graph_profiles``); the u8s8 CPU form never is. On evaluation data each slice graph
is run against the host path of its own fused graph (``export.slice_parity``) and the result recorded in
the manifest's ``slice_graph`` section. The package is rewritten atomically; the fused graphs stay, so
runtimes that cannot run a slice graph (CPU backends, TensorRT 8.x) keep the host path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..grid import AIR_HU
from ..package import load_package, write_manifest
from ..package.accuracy import CPU_INT8_FORM
from ..package.binding import SLICE_INPUTS, package_binding
from ..package.manifest import SLICE_ROLE, FileRecord
from .package_writer import NvidiaGate, copy_package, is_package, readable_by_all, require_folder_package

#: Side range (pixels) of stored slices the slice graph is checked for: TensorRT profiles and parity.
SECTION = "slice_graph"
#: How labels come back to the stored grid: nearest labels (the host path's rule, and 1/5 of the samples of
#: bilinear probabilities then argmax).
BACK = "labels"
#: Parity target at FP32 (issue 14): labels equal on at least this share of input pixels.
FP32_AGREEMENT_TARGET = 0.999


def slice_file_name(fused_path: str) -> str:
    """``model_fp16.onnx`` -> ``model_slice_fp16.onnx`` (any other name gains a ``slice_`` prefix)."""
    folder, _, name = fused_path.rpartition("/")
    stem = name.removeprefix("model_")
    return (folder + "/" if folder else "") + "model_slice_" + stem


@dataclass
class SliceGraphResult:
    path: Path
    files: list[dict[str, Any]]
    parity: dict[str, dict[str, Any]]
    timings_s: dict[str, float]


def _section(grid_rows: int, grid_cols: int, labels: int, sides: tuple[int, int, int], opset: int,
             parity: dict[str, Any], data: str | None) -> dict[str, Any]:
    return {
        "inputs": {
            "pixels": {"dtype": "float32", "shape": ["N", 1, "H", "W"],
                       "meaning": "the slice as stored (rows x cols of its file, no transpose or flip)"},
            "rescale": {"dtype": "float32", "shape": ["N", 2], "meaning": "(slope, intercept): HU = pixels * "
                        "slope + intercept; (1, 0) for HU"},
            "theta": {"dtype": "float32", "shape": ["N", 2, 3],
                      "meaning": "model-grid (x, y, 1) -> stored (x, y), grid_affine.slice_to_model_theta"},
            "theta_back": {"dtype": "float32", "shape": ["N", 2, 3],
                           "meaning": "stored (x, y, 1) -> model-grid (x, y), its second matrix"}},
        "outputs": {"labels_input": {"dtype": "int32", "shape": ["N", "H", "W"],
                                     "meaning": "labels on the stored grid (nearest), 0 outside the model grid"},
                    "labels": {"dtype": "int32", "shape": ["N", grid_rows, grid_cols]},
                    "probabilities": {"dtype": "float32", "shape": ["N", labels, grid_rows, grid_cols]}},
        "back": BACK, "fill_hu": AIR_HU, "opset": opset, "tensorrt_sides": list(sides),
        "parity": parity, "parity_data": data,
    }


def add_slice_graphs(package_dir: str | Path, *, eval_data: str | Path | None = None,
                     sides: tuple[int, int, int] | None = None,
                     progress: Callable[[str], None] | None = None) -> SliceGraphResult:
    """Wrap every fused graph of the package at ``package_dir`` (a folder) in its resampling; see the module."""
    import onnx

    from ..atomic import folder_swap
    from ..engines.plan import SLICE_SIDES, slice_graph_profiles
    from .accuracy import target_misses
    from .binding import bound_onnx_record
    from .resampling_graph import OPSETS, wrap_with_resampling
    from .slice_parity import PathRunner, compare_paths, eval_slices

    say = progress or (lambda _msg: None)
    sides = sides or SLICE_SIDES
    root = require_folder_package(package_dir)
    manifest = load_package(root).manifest
    profiles = slice_graph_profiles(manifest.input.max_batch or 8, sides)
    timings: dict[str, float] = {}
    binding = package_binding(manifest)
    slices = None
    if eval_data is not None:
        slices = eval_slices(eval_data, manifest.model.training)
        say(f"parity data: {len(slices)} held-out slices on their own grid")
    fused = [r for r in manifest.files if r.role == "onnx"]
    with folder_swap(root, is_package, "a model package") as tmp:
        copy_package(root, tmp)
        for stale in (r for r in manifest.files if r.role == SLICE_ROLE):
            (tmp / stale.path).unlink(missing_ok=True)
        gate = NvidiaGate(manifest.grid, manifest.input.max_batch, progress,
                          "the resampling graph holds an operator this TensorRT lacks: report it with this message")
        records: list[FileRecord] = []
        parity: dict[str, dict[str, Any]] = {}
        opset = 0
        for record in fused:
            name = slice_file_name(record.path)
            t = time.perf_counter()
            model = onnx.load(str(tmp / record.path))
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
            if opset not in OPSETS:
                raise ExportError(f"{record.path} is opset {opset}; slice graphs are written for opsets "
                                  f"{OPSETS[0]}..{OPSETS[-1]} (TensorRT builds opset 20's GridSample 'linear' as "
                                  "nearest); re-export the package")
            wrapped = wrap_with_resampling(model, manifest.grid, fill_hu=AIR_HU, labels_count=len(manifest.labels),
                                           opset=opset, back=BACK)
            onnx.save_model(wrapped, str(tmp / name), save_as_external_data=False)
            extra = {k: v for k, v in record.extra.items() if k not in ("nvidia_parser",)}
            written = bound_onnx_record(tmp, name, binding, SLICE_ROLE, record.precision,
                                        **{**extra, "wraps": record.path, "back": BACK})
            if extra.get("form") != CPU_INT8_FORM:
                written = gate.record(tmp, written, profiles)
            records.append(written)
            timings[f"{name}_s"] = round(time.perf_counter() - t, 2)
            if slices is not None:
                t = time.perf_counter()
                report = compare_paths(PathRunner(tmp / record.path, tmp / name, manifest.grid), slices)
                key = str(extra.get("accuracy") or record.precision)  # the fused graph's accuracy record key
                parity[key] = {"file": name, **report.to_dict()}
                where = f", {report.boundary_share:.0%} of them on boundaries" if report.differing else ""
                say(f"{name}: labels equal to the host path on {report.agreement:.4%} of {report.pixels} input "
                    f"pixels ({report.differing} differ{where})")
                timings[f"{name}_parity_s"] = round(time.perf_counter() - t, 2)
        fp32 = parity.get("fp32")
        if fp32 is not None:  # each slice graph against the FP32 host path, on the input grid, by the export targets
            reference = fp32["scores"].get("host", {})
            for key, record in parity.items():
                misses = target_misses(key, record["scores"].get("slice_graph", {}), reference)
                record.update(target="met" if not misses else "missed", target_misses=misses)
                if misses:
                    say(f"{record['file']} misses the {key} target against the FP32 host path: {'; '.join(misses)}")
        if fp32 is not None and fp32["agreement"] < FP32_AGREEMENT_TARGET:
            raise ExportError(f"the FP32 slice graph agrees with the host path on {fp32['agreement']:.4%} of the "
                              f"pixels, below the {FP32_AGREEMENT_TARGET:.1%} target; nothing was written")
        raw = manifest.to_dict()
        raw["files"] = [f for f in raw["files"] if f.get("role") != SLICE_ROLE] + [r.to_dict() for r in records]
        # engines built from a slice graph that this run changed would run a graph the package no longer holds
        current = {r.sha256 for r in records}
        stale = [e for e in raw.get("engines") or [] if e.get("graph") == "slice"
                 and (e.get("plan") or {}).get("onnx_sha256") not in current]
        for engine in stale:
            (tmp / str(engine.get("file", ""))).unlink(missing_ok=True)
            say(f"engine {engine.get('file')} was built from a slice graph that changed: removed (rebuild it)")
        raw["engines"] = [e for e in raw.get("engines") or [] if e not in stale]
        rows, cols = manifest.grid.size
        raw[SECTION] = _section(rows, cols, len(manifest.labels), sides, opset, parity,
                                None if slices is None else str(eval_data))
        write_manifest(tmp, raw)
        load_package(tmp).close()
        readable_by_all(tmp)
    return SliceGraphResult(path=root, files=[r.to_dict() for r in records], parity=parity, timings_s=timings)


__all__ = ["SLICE_INPUTS", "SliceGraphResult", "add_slice_graphs", "slice_file_name"]
