"""Engine records: what each TensorRT plan of a package was built with, for which TensorRT and GPU.

An engine appears twice in ``manifest.json``: as a file (role ``engine``, so that the
loader checks its sha256 and archives carry it) and as a record under ``engines``,
parsed here; whether a record runs on this machine is ``engines.records``' question.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..engine_tags import TrtVersion, format_compute_capability, parse_compute_capability, sm_tag
from ..errors import EngineError, PackageError
from .manifest import FileRecord

_KNOWN = {"file", "sha256", "size", "precision", "tensorrt", "gpu", "profile", "dla_core",
          "version_compatible", "built", "build_seconds", "onnx", "calibration_cache", "placement", "plan"}


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
