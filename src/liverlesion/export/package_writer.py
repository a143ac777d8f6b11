"""Assemble a model package from a checkpoint: ONNX files, weights, manifest (atomically).

The package is built in a temporary folder beside its destination and swapped in
only when every check passed (onnx.checker, parity, the loader's own validation),
so a failed export leaves nothing behind and an existing package stays intact.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ExportError, InputError
from ..grid import AIR_HU, ModelGrid, check_spacing
from ..model.fused import CLASS_PROBABILITIES, INPUT_NAME, LABELS, PROBABILITIES
from ..package import SCHEMA_NAME, SCHEMA_VERSION, load_package, write_manifest
from ..package.accuracy import CPU_INT8_FORM
from ..package.binding import BINDING_KEY, binding_text, file_identity, for_file, make_binding
from ..package.manifest import MANIFEST_NAME, FileRecord
from ..package.sections import InputSpec, ModelInfo
from ..package.store import file_record, write_archive

FP32_FILE = "model_fp32.onnx"
FP16_FILE = "model_fp16.onnx"
BARE_FILE = "model_bare_fp32.onnx"
INT8_FILE = "model_int8_qdq_s8s8.onnx"
INT8_CPU_FILE = "model_int8_qdq_u8s8.onnx"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
#: The identity fields of the weights' record, which its safetensors metadata records as well.
WEIGHTS_RECORD = {"role": "weights", "precision": "fp32", "format": "safetensors"}
#: Training metadata not copied into the manifest (long, and in the checkpoint anyway).
_TRAINING_DROP = ("history", "config")

log = logging.getLogger("liverlesion.export")


def versions() -> dict[str, str]:
    """Versions of the tools that made the package."""
    import onnx
    import onnxruntime
    import torch

    return {"liverlesion": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def readable_by_all(path: Path) -> None:
    """Folders 0755, files 0644 (within the umask), recursively: mkdtemp/mkstemp leave 0700/0600."""
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o755 if item.is_dir() else 0o644) & ~umask)


def is_package(path: Path) -> bool:
    return (path / MANIFEST_NAME).is_file()


def io_spec(grid: ModelGrid, n_labels: int, arch: str, max_batch: int | None,
            default_spacing_mm: list[float] | None = None) -> tuple[InputSpec, dict[str, Any]]:
    """The manifest's ``input`` section and ``outputs`` for the fused graph."""
    rows, cols = grid.size
    spec = InputSpec(name=INPUT_NAME, grid=grid, dtype="float32", shape=["N", 1, rows, cols], max_batch=max_batch,
                     default_spacing_mm=None if default_spacing_mm is None else
                     (default_spacing_mm[0], default_spacing_mm[1]),
                     resample={"image": "linear", "labels": "nearest", "fill_hu": AIR_HU, "alignment": "centre"},
                     extra={"layout": "NCHW"})
    outputs: dict[str, Any] = {
        LABELS: {"dtype": "int32", "shape": ["N", rows, cols], "meaning": "argmax label per pixel"},
        PROBABILITIES: {"dtype": "float32", "shape": ["N", n_labels, rows, cols],
                        "meaning": "softmax over labels"},
    }
    if arch == "ynet":
        outputs[CLASS_PROBABILITIES] = {"dtype": "float32", "shape": ["N", 3],
                                        "meaning": "softmax of the class head, lesion_classes order"}
    return spec, outputs


def write_weights(root: Path, checkpoint: Any, binding: dict[str, Any]) -> None:
    """``model.safetensors`` (config, and ``binding`` with the weights' identity, in its metadata) and
    ``model_config.json``, for torch."""
    from safetensors.torch import save_file

    description = {"format": "liverlesion-weights", "version": 1, "model": checkpoint.config.to_dict(),
                   "preprocessing": checkpoint.preprocessing.to_dict(), "grid": checkpoint.grid.to_dict(),
                   "labels": list(checkpoint.labels), "classes": list(checkpoint.classes)}
    state = {k: v.detach().cpu().contiguous().clone() for k, v in checkpoint.model.state_dict().items()}
    bound = for_file(binding, file_identity(**WEIGHTS_RECORD))
    save_file(state, str(root / WEIGHTS_FILE),
              metadata={"liverlesion": json.dumps(description), BINDING_KEY: binding_text(bound)})
    (root / CONFIG_FILE).write_text(json.dumps(description, indent=2) + "\n")


def build_manifest(checkpoint: Any, source: str, files: list[FileRecord], extras: dict[str, Any], *,
                   name: str | None, version: str | None, max_batch: int | None,
                   default_spacing_mm: list[float] | None = None) -> dict[str, Any]:
    """The manifest of a freshly exported package (every field of docs/model-package.md)."""
    from ..model import count_flops, count_parameters

    config, grid = checkpoint.config, checkpoint.grid
    flops = count_flops(checkpoint.model, (1, config.in_channels, *grid.size))  # counted once, here
    spec, outputs = io_spec(grid, len(checkpoint.labels), config.arch, max_batch, default_spacing_mm)
    model = ModelInfo(name=name or f"liverlesion-{config.arch}", version=version or __version__, arch=config.arch,
                      config=config.to_dict(), parameters=count_parameters(checkpoint.model),
                      gflops_per_slice=round(flops / 1e9, 4),
                      created=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                      training={k: v for k, v in checkpoint.training.items() if k not in _TRAINING_DROP},
                      extra={"checkpoint": source})
    return {
        "schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "model": model.to_dict(),
        "input": spec.to_dict(), "outputs": outputs,
        "labels": list(checkpoint.labels), "lesion_classes": list(checkpoint.classes),
        "preprocessing": checkpoint.preprocessing.to_dict(),
        "files": [f.to_dict() for f in files],
        **extras, "versions": versions(), "engines": [],
    }


class NvidiaGate:
    """Hands each ONNX file meant for TensorRT to NVIDIA's parser and builder before it is recorded.

    A file they refuse raises ExportError (inside the export's temporary folder, so nothing is
    written); one they accept is recorded with their verdict (``nvidia_parser``). Where no NVIDIA
    runtime is installed the files are recorded without it, and one line says so.
    """

    def __init__(self, grid: ModelGrid, max_batch: int | None, say: Callable[[str], None] | None,
                 hint: str) -> None:
        from ..engines.onnx_gate import nvidia_parser_available, nvidia_parser_missing_reason
        from ..engines.plan import DEFAULT_MAX_BATCH

        self.grid, self.max_batch, self.hint = grid, max_batch or DEFAULT_MAX_BATCH, hint
        self.seconds = 0.0  # spent parsing and building
        self.say = say or log.warning  # the one line is never lost: progress when given, else the log
        self.runtime = nvidia_parser_available()
        if self.runtime is None:
            self._skip(nvidia_parser_missing_reason())

    def _skip(self, why: str) -> None:
        self.runtime = None
        self.say(f"NVIDIA's ONNX parser gate did not run: {why}; the TensorRT-bound ONNX files are recorded "
                 "without an nvidia_parser verdict")

    def record(self, root: Path, record: FileRecord, profiles: Mapping[str, Any] | None = None) -> FileRecord:
        """``record`` with NVIDIA's verdict on its file, or ExportError when the parser or builder refuses it.

        ``profiles``: the input shapes to build for, where the file is not the fused graph (the slice graph)."""
        from ..engines.onnx_gate import check_onnx_for_tensorrt
        from ..errors import EngineError

        if record.extra.get("form") == CPU_INT8_FORM:
            # The CPU form's int32 bias DequantizeLinear is exactly what NVIDIA's parser refuses: that form is
            # for onnxruntime CPU and OpenVINO, and TensorRT is given the s8s8 form instead.
            raise ExportError(f"{record.path} is the {CPU_INT8_FORM} form, which is never handed to TensorRT")
        if self.runtime is None:
            return record
        started = time.perf_counter()
        try:
            verdict = check_onnx_for_tensorrt(root / record.path, INPUT_NAME, self.grid, self.max_batch,
                                              runtime=self.runtime, profiles=profiles)
        except EngineError as exc:  # the runtime cannot start here: that says nothing about the file
            self._skip(str(exc))
            return record
        finally:
            self.seconds += time.perf_counter() - started
        if not verdict.passed:
            shapes = f"{self.grid.size[0]}x{self.grid.size[1]}" if profiles is None else \
                ", ".join(f"{name} {high}" for name, (_low, _opt, high) in profiles.items())
            stage = "ONNX parser" if not verdict.accepted else f"builder (batch 1..{self.max_batch} of {shapes})"
            said = "; ".join(" ".join(error.splitlines()) for error in verdict.errors[:3])  # one line each
            raise ExportError(f"NVIDIA's {stage} ({verdict.runtime} {verdict.version}) refuses {record.path}: "
                              f"{said}. Nothing was written; {self.hint}")
        return replace(record, extra={**record.extra, "nvidia_parser": verdict.to_record()})


@dataclass
class ExportResult:
    """What an export wrote and measured."""

    path: Path
    manifest: dict[str, Any]
    parity: list[dict[str, Any]]
    accuracy: dict[str, dict[str, Any]]
    timings_s: dict[str, float]
    sizes: dict[str, int] = field(default_factory=dict)
    archive: Path | None = None


def export_package(checkpoint_path: str | Path, out: str | Path, *, eval_data: str | Path | None = None,
                   bare: bool = False, archive: str | Path | None = None, max_batch: int | None = None,
                   name: str | None = None, version: str | None = None,
                   progress: Callable[[str], None] | None = None,
                   default_spacing_mm: tuple[float, float] | None = None) -> ExportResult:
    """Export a checkpoint to a package folder at ``out`` (FP32 + FP16, parity-checked).

    ``default_spacing_mm`` (row, col) is recorded as ``input.default_spacing_mm``: the pixel
    spacing the SDK assumes for arrays given without one (else it assumes the grid spacing).
    """
    from ..atomic import folder_swap
    from ..model.fused import fuse
    from ..training.checkpoint import load_checkpoint
    from .accuracy import annotate, load_eval_set, measure, measure_on_openvino
    from .binding import bound_onnx_record
    from .fp16 import write_fp16
    from .onnx_export import export_bare, export_fused, opset_of
    from .parity import PROBABILITY_ATOL, check_parity, check_reduced_precision, phantom_hu, random_hu

    say = progress or (lambda _msg: None)
    if max_batch is not None and max_batch < 1:
        raise InputError(f"--max-batch must be a positive integer, got {max_batch}")
    default_spacing = None if default_spacing_mm is None else list(check_spacing(default_spacing_mm))
    timings: dict[str, float] = {}
    started = time.perf_counter()
    checkpoint = load_checkpoint(checkpoint_path)
    config, grid = checkpoint.config, checkpoint.grid
    fused = fuse(checkpoint.model, checkpoint.preprocessing, config.arch)
    eval_set = load_eval_set(eval_data, grid, checkpoint.training) if eval_data is not None else None

    parity_inputs = {"random HU, batch 1": random_hu(1, grid.size, seed=1)}
    batch = min(4, max_batch or 4)
    parity_inputs[f"random HU, batch {batch}"] = random_hu(batch, grid.size, seed=2)
    phantoms = eval_set.hu[:batch] if eval_set is not None else phantom_hu(grid, batch)
    parity_inputs[f"phantom slices, batch {len(phantoms)}"] = phantoms

    out = Path(out)
    # What the manifest written below must agree with, recorded in every model file with the file's own
    # identity (package.binding; bound_onnx_record stamps it from the same fields the record is made of)
    binding = make_binding(input_name=INPUT_NAME, grid=grid, labels=checkpoint.labels,
                           lesion_classes=checkpoint.classes, preprocessing=checkpoint.preprocessing,
                           default_spacing_mm=default_spacing)
    with folder_swap(out, is_package, "a model package") as tmp:
        metadata = {"liverlesion.arch": config.arch, "liverlesion.labels": ",".join(checkpoint.labels)}
        t = time.perf_counter()
        export_fused(fused, tmp / FP32_FILE, grid, metadata)
        timings["export_fp32_s"] = time.perf_counter() - t
        say(f"wrote {FP32_FILE}; checking parity with PyTorch on onnxruntime CPU")
        t = time.perf_counter()
        parity = [r.to_dict() for r in check_parity(fused, tmp / FP32_FILE, parity_inputs)]
        timings["parity_s"] = time.perf_counter() - t
        t = time.perf_counter()
        write_fp16(tmp / FP32_FILE, tmp / FP16_FILE)
        fp16_check = check_reduced_precision(tmp / FP32_FILE, tmp / FP16_FILE, phantoms)
        timings["fp16_s"] = time.perf_counter() - t
        import onnx

        opset = opset_of(onnx.load(str(tmp / FP32_FILE), load_external_data=False))
        runtimes = ["onnxruntime", "tensorrt"]
        gate = NvidiaGate(grid, max_batch, progress, "the float graph holds an operator or type this "
                          "TensorRT lacks: try a newer TensorRT, or report it with this message")
        files = [gate.record(tmp, bound_onnx_record(tmp, FP32_FILE, binding, "onnx", "fp32", opset=opset,
                                                    form="float", runtimes=runtimes)),
                 gate.record(tmp, bound_onnx_record(tmp, FP16_FILE, binding, "onnx", "fp16", opset=opset,
                                                    form="float", io_dtype="float32", runtimes=runtimes))]
        timings["nvidia_parser_s"] = gate.seconds
        if bare:
            export_bare(checkpoint.model, tmp / BARE_FILE, grid, arch=config.arch,
                        in_channels=config.in_channels, metadata=metadata)
            files.append(bound_onnx_record(tmp, BARE_FILE, binding, "onnx-bare", "fp32", opset=opset, form="float",
                                           input="preprocessed channels in [-1, 1]", outputs="logits"))
        write_weights(tmp, checkpoint, binding)
        files += [file_record(tmp, WEIGHTS_FILE, **WEIGHTS_RECORD, config=CONFIG_FILE),
                  file_record(tmp, CONFIG_FILE, "weights", None, format="json")]

        accuracy: dict[str, dict[str, Any]] = {}
        if eval_set is not None:
            say(f"measuring FP32 and FP16 accuracy on {len(eval_set)} slices")
            t = time.perf_counter()
            accuracy = measure({"fp32": tmp / FP32_FILE, "fp16": tmp / FP16_FILE}, eval_set)
            bf16, said = measure_on_openvino(tmp / FP32_FILE, "bf16", eval_set, tmp / FP32_FILE)
            say(said)
            if bf16 is not None:
                accuracy["bf16"] = bf16
            annotate(accuracy, accuracy["fp32"])
            timings["accuracy_s"] = time.perf_counter() - t

        extras = {"parity": {"reference": "PyTorch fp32", "runtime": "onnxruntime CPU",
                             "probability_atol": PROBABILITY_ATOL, "results": parity,
                             "fp16_vs_fp32": fp16_check},
                  "accuracy": accuracy}
        manifest = build_manifest(checkpoint, Path(checkpoint_path).name, files, extras, name=name,
                                  version=version, max_batch=max_batch, default_spacing_mm=default_spacing)
        write_manifest(tmp, manifest)
        load_package(tmp).close()  # the loader's own validation, before the package is swapped in
        readable_by_all(tmp)
    timings["total_s"] = time.perf_counter() - started
    sizes = {f["path"]: int(f["size"]) for f in manifest["files"]}
    written = None
    if archive is not None:
        written = write_archive(out, archive)
        readable_by_all(written)
    return ExportResult(path=out, manifest=manifest, parity=parity, accuracy=accuracy, timings_s=timings,
                        sizes=sizes, archive=written)


def require_folder_package(path: str | Path) -> Path:
    """A package folder (not an archive) that can be extended in place."""
    root = Path(path)
    if root.is_file():
        raise InputError(f"{root} is an archive; give the package folder (unpack it, or export again)")
    if not is_package(root):
        raise ExportError(f"{root} is not a model package folder (no {MANIFEST_NAME}); "
                          "run liverlesion export first")
    return root


def copy_package(src: Path, dst: Path) -> None:
    """Hard-link (or copy) every listed file of ``src`` into the empty folder ``dst``."""
    import shutil

    package = load_package(src)
    for record in package.manifest.files:
        target = dst / record.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(package.path(record), target)  # package files are never modified in place
        except OSError:
            shutil.copy2(package.path(record), target)


def updated_manifest(manifest: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of a manifest dict with top-level fields replaced."""
    data = json.loads(json.dumps(manifest))
    data.update(changes)
    return data
