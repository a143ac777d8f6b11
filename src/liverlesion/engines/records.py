"""Engine records (``package.engines.EngineRecord``): whether one runs here, and writing a new one.

TensorRT plans run only with the TensorRT that built them (unless version-compatible)
and on the GPU model they were built for. TensorRT-RTX plans run only with the exact
TensorRT-RTX release that built them, on any GPU whose compute capability they target.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..engine_tags import TENSORRT, TENSORRT_RTX, TrtVersion, parse_compute_capability, sm_tag
from ..errors import EngineError, install_hint
from ..package import FileRecord, Manifest, write_manifest
from ..package.engines import EngineRecord
from ..package.manifest import MODEL_GRID_GRAPH
from ..package.store import file_record, read_manifest
from .versions import runtime_can_run

__all__ = ["EngineRecord", "add_engine_record", "engine_compatibility", "engine_records", "make_record",
           "select_engine", "utc_now"]


def _rebuild_hint(record: EngineRecord, cc: tuple[int, int] | None = None) -> str:
    if record.runtime == TENSORRT_RTX:
        targets = " ".join([*record.compute_capabilities, *([f"{cc[0]}.{cc[1]}"] if cc else [])])
        return ("rebuild it (on any machine, GPU or not): liverlesion build-engine PACKAGE --runtime tensorrt-rtx "
                f"--precision {record.precision} --compute-capability {targets}")
    dla = f" --dla-core {record.dla_core}" if record.dla_core is not None else ""
    return f"rebuild it on this machine: liverlesion build-engine PACKAGE --precision {record.precision}{dla}"


def _rtx_compatibility(record: EngineRecord, runtime: TrtVersion, cc: tuple[int, int]) -> tuple[bool, str]:
    targets = [parse_compute_capability(c) for c in record.compute_capabilities]
    if cc not in targets:
        return False, (f"built for {', '.join(sm_tag(t) for t in targets)}, this GPU is {sm_tag(cc)}; "
                       f"{_rebuild_hint(record, cc)}")
    built = TrtVersion.parse(record.tensorrt)
    same = built.release == runtime.release and (built.build is None or runtime.build is None
                                                 or built.build == runtime.build)
    if not same:
        return False, (f"it was built with TensorRT-RTX {built} and this is TensorRT-RTX {runtime} (plans need the "
                       f"exact release); {_rebuild_hint(record)}")
    return True, (f"built for {sm_tag(cc)} among its targets and TensorRT-RTX {runtime.short()}; its kernels are "
                  "compiled for this GPU at the first load (JIT), then cached")


def engine_records(manifest: Manifest) -> list[EngineRecord]:
    """The manifest's engine records, validated (``Manifest.engines``)."""
    return list(manifest.engines)


def engine_compatibility(record: EngineRecord, trt_version: str | TrtVersion | None,
                         compute_capability: str | tuple[int, int] | None,
                         gpu_name: str | None = None) -> tuple[bool, str]:
    """(can this machine run the engine, why or why not); ``trt_version`` is that of the record's runtime here."""
    if trt_version is None:
        if record.runtime == TENSORRT_RTX:
            return False, f"TensorRT-RTX is not installed: {install_hint('tensorrt-rtx')}"
        return False, (f"TensorRT is not installed: {install_hint('tensorrt')} (on Jetson: JetPack's "
                       "python3-libnvinfer)")
    if compute_capability is None:
        return False, "no CUDA GPU found (no NVIDIA driver, or no device)"
    runtime = trt_version if isinstance(trt_version, TrtVersion) else TrtVersion.parse(trt_version)
    cc = parse_compute_capability(compute_capability)
    if record.runtime == TENSORRT_RTX:
        return _rtx_compatibility(record, runtime, cc)
    built_cc = parse_compute_capability(record.compute_capability)
    if cc != built_cc:
        return False, (f"built for {record.gpu_name or 'a GPU'} ({sm_tag(built_cc)}), this GPU is "
                       f"{sm_tag(cc)}: TensorRT plans do not move between GPU models; "
                       f"{_rebuild_hint(record)}")
    reason = runtime_can_run(TrtVersion.parse(record.tensorrt), runtime, record.version_compatible)
    if reason:
        return False, f"{reason}; {_rebuild_hint(record)}"
    if gpu_name and record.gpu_name and gpu_name != record.gpu_name:
        return True, (f"built on {record.gpu_name}, this is {gpu_name} (same {sm_tag(cc)}): it runs, but "
                      "TensorRT does not promise the same speed; rebuild here for best performance")
    return True, f"built for this GPU ({sm_tag(cc)}) and TensorRT {runtime.short()}"


def select_engine(records: Iterable[EngineRecord], precision: str, trt_version: str | TrtVersion | None,
                  compute_capability: str | tuple[int, int] | None, gpu_name: str | None = None,
                  *, dla: bool | None = None, runtime: str = TENSORRT,
                  graph: str = MODEL_GRID_GRAPH) -> tuple[EngineRecord | None, list[tuple[EngineRecord, str]]]:
    """The first ``runtime`` engine of ``precision`` built from ``graph`` that runs here (GPU engines before DLA
    ones unless ``dla`` says), and why each other candidate does not; ``trt_version`` is that runtime's here."""
    candidates = [r for r in records if r.precision == precision and r.runtime == runtime and r.graph == graph]
    if dla is None:
        candidates.sort(key=lambda r: r.dla_core is not None)
    else:
        candidates = [r for r in candidates if (r.dla_core is not None) == dla]
    refused: list[tuple[EngineRecord, str]] = []
    for record in candidates:
        ok, reason = engine_compatibility(record, trt_version, compute_capability, gpu_name)
        if ok:
            return record, refused
        refused.append((record, reason))
    return None, refused


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def make_record(root: str | Path, engine_file: str, plan: Mapping[str, Any], *, gpu_name: str,
                build_seconds: float | None = None, placement: Mapping[str, Any] | None = None,
                targets: tuple[str, ...] | None = None, **extra: Any) -> EngineRecord:
    """Describe an engine file already written inside the package, from its build plan.

    ``targets``: the compute capabilities the builder was actually set to (default: the plan's).
    """
    written = file_record(root, engine_file, "engine", str(plan["precision"]))
    calibrator = plan.get("calibrator") or {}
    built_for = tuple(targets or plan.get("targets") or (str(plan["compute_capability"]),))
    return EngineRecord(
        file=engine_file, sha256=written.sha256, size=written.size, precision=str(plan["precision"]),
        tensorrt=str(plan["tensorrt"]), gpu_name=gpu_name, compute_capability=built_for[0],
        profile={k: list(v) if isinstance(v, (list, tuple)) else v for k, v in dict(plan["profile"]).items()},
        dla_core=plan.get("dla_core"), version_compatible=bool(plan.get("version_compatible", False)),
        built=utc_now(), build_seconds=build_seconds, onnx=str(plan.get("onnx", "")),
        calibration_cache=calibrator.get("cache"), placement=None if placement is None else dict(placement),
        plan=dict(plan), extra=dict(extra), runtime=str(plan.get("runtime", TENSORRT)),
        graph=str(plan.get("graph", MODEL_GRID_GRAPH)),
        compute_capabilities=built_for,
    )


def add_engine_record(root: str | Path, record: EngineRecord,
                      extra_files: Iterable[FileRecord] = ()) -> Manifest:
    """Record an engine (and e.g. its calibration cache) in the package's manifest, atomically.

    The engine file must already be in place. A record for the same file replaces the
    old one, so rebuilding never duplicates entries; everything else is kept as written.
    """
    root = Path(root)
    path = root / record.file
    if not path.is_file() or path.stat().st_size != record.size:
        raise EngineError(f"{path}: the engine file is missing or not of the recorded {record.size} bytes")
    manifest = read_manifest(root)
    new_files = [record.file_record(), *extra_files]
    replaced = {f.path for f in new_files}
    data = manifest.to_dict()
    kept = [f.to_dict() for f in manifest.files if f.path not in replaced]
    data["files"] = kept + [f.to_dict() for f in new_files]
    data["engines"] = [e for e in data.get("engines", [])
                       if not (isinstance(e, dict) and e.get("file") == record.file)]
    data["engines"].append(record.to_dict())
    return write_manifest(root, data)
