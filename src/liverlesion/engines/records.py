"""Engine records in the manifest: what was built, for which TensorRT and GPU, and whether it runs here.

An engine appears twice in ``manifest.json``: as a file (role ``engine``, so that the
loader checks its sha256 and archives carry it) and as a record under ``engines``
that says how it was built. TensorRT plans run only with the TensorRT that built
them (unless version-compatible) and on the GPU model they were built for.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EngineError, PackageError, install_hint
from ..machine.gpu import format_compute_capability, sm_tag
from ..package import FileRecord, Manifest, write_manifest
from ..package.store import file_record, read_manifest
from .versions import TrtVersion, parse_compute_capability, runtime_can_run

_KNOWN = {"file", "sha256", "size", "precision", "tensorrt", "gpu", "profile", "dla_core",
          "version_compatible", "built", "build_seconds", "onnx", "calibration_cache", "placement", "plan"}


def _rebuild_hint(record: EngineRecord) -> str:
    dla = f" --dla-core {record.dla_core}" if record.dla_core is not None else ""
    return f"rebuild it on this machine: liverlesion build-engine PACKAGE --precision {record.precision}{dla}"


@dataclass(frozen=True)
class EngineRecord:
    """One TensorRT plan in a package and how it was built."""

    file: str
    sha256: str
    size: int
    precision: str
    tensorrt: str
    gpu_name: str
    compute_capability: str
    profile: dict[str, Any]
    dla_core: int | None = None
    version_compatible: bool = False
    built: str = ""
    build_seconds: float | None = None
    onnx: str = ""
    calibration_cache: str | None = None
    placement: dict[str, Any] | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def max_batch(self) -> int:
        return int(self.profile["max"][0])

    @property
    def min_batch(self) -> int:
        return int(self.profile["min"][0])

    @property
    def sm(self) -> str:
        return sm_tag(parse_compute_capability(self.compute_capability))

    def file_record(self) -> FileRecord:
        """The record the package loader verifies (path, size, sha256)."""
        return FileRecord.from_dict({"path": self.file, "role": "engine", "precision": self.precision,
                                     "sha256": self.sha256, "size": self.size, "tensorrt": self.tensorrt,
                                     "compute_capability": self.compute_capability})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineRecord:
        where = f"engines[{data.get('file', '?') if isinstance(data, Mapping) else '?'}]"
        if not isinstance(data, Mapping):
            raise PackageError(f"manifest: {where} must be an object")
        try:
            gpu = data["gpu"]
            profile = dict(data["profile"])
            for key in ("min", "opt", "max"):
                profile[key] = [int(v) for v in profile[key]]
            record = cls(
                file=str(data["file"]), sha256=str(data["sha256"]), size=int(data["size"]),
                precision=str(data["precision"]), tensorrt=str(data["tensorrt"]),
                gpu_name=str(gpu.get("name", "")),
                compute_capability=format_compute_capability(parse_compute_capability(str(gpu["compute_capability"]))),
                profile=profile, dla_core=None if data.get("dla_core") is None else int(data["dla_core"]),
                version_compatible=bool(data.get("version_compatible", False)),
                built=str(data.get("built", "")),
                build_seconds=None if data.get("build_seconds") is None else float(data["build_seconds"]),
                onnx=str(data.get("onnx", "")), calibration_cache=data.get("calibration_cache"),
                placement=data.get("placement"), plan=dict(data.get("plan") or {}),
                extra={k: v for k, v in data.items() if k not in _KNOWN},
            )
            TrtVersion.parse(record.tensorrt)
            record.file_record()  # path and checksum well formed
        except (KeyError, TypeError, ValueError, AttributeError, EngineError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
            raise PackageError(f"manifest: {where} is not a valid engine record ({reason})") from None
        return record

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": self.file, "sha256": self.sha256, "size": self.size, "precision": self.precision,
            "tensorrt": self.tensorrt,
            "gpu": {"name": self.gpu_name, "compute_capability": self.compute_capability},
            "profile": self.profile, "dla_core": self.dla_core, "version_compatible": self.version_compatible,
            "built": self.built, "build_seconds": self.build_seconds, "onnx": self.onnx,
            "calibration_cache": self.calibration_cache, "placement": self.placement, "plan": self.plan,
        }
        out.update(self.extra)
        return out


def engine_records(manifest: Manifest) -> list[EngineRecord]:
    """The manifest's engine records, validated."""
    return [EngineRecord.from_dict(item) for item in manifest.engines]


def engine_compatibility(record: EngineRecord, trt_version: str | TrtVersion | None,
                         compute_capability: str | tuple[int, int] | None,
                         gpu_name: str | None = None) -> tuple[bool, str]:
    """(can this machine run the engine, why or why not)."""
    if trt_version is None:
        return False, (f"TensorRT is not installed: {install_hint('tensorrt')} (on Jetson: JetPack's "
                       "python3-libnvinfer)")
    if compute_capability is None:
        return False, "no CUDA GPU found (no NVIDIA driver, or no device)"
    runtime = trt_version if isinstance(trt_version, TrtVersion) else TrtVersion.parse(trt_version)
    cc = parse_compute_capability(compute_capability)
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
                  *, dla: bool | None = None) -> tuple[EngineRecord | None, list[tuple[EngineRecord, str]]]:
    """The first engine of ``precision`` that runs here (GPU engines before DLA ones unless
    ``dla`` says), and why each other candidate does not."""
    candidates = [r for r in records if r.precision == precision]
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
                **extra: Any) -> EngineRecord:
    """Describe an engine file already written inside the package, from its build plan."""
    written = file_record(root, engine_file, "engine", str(plan["precision"]))
    calibrator = plan.get("calibrator") or {}
    return EngineRecord(
        file=engine_file, sha256=written.sha256, size=written.size, precision=str(plan["precision"]),
        tensorrt=str(plan["tensorrt"]), gpu_name=gpu_name, compute_capability=str(plan["compute_capability"]),
        profile={k: list(v) if isinstance(v, (list, tuple)) else v for k, v in dict(plan["profile"]).items()},
        dla_core=plan.get("dla_core"), version_compatible=bool(plan.get("version_compatible", False)),
        built=utc_now(), build_seconds=build_seconds, onnx=str(plan.get("onnx", "")),
        calibration_cache=calibrator.get("cache"), placement=None if placement is None else dict(placement),
        plan=dict(plan), extra=dict(extra),
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
