"""The manifest schema (version 1) and its validation.

The manifest is plain JSON. Validation checks what runtimes rely on (schema,
input spec, labels, file records) and keeps every other field as written, so
that producers (export, quantize, build-engine) can add records without a
schema bump. Nothing in a manifest is ever executed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import PackageError
from ..grid import ModelGrid
from ..preprocessing import Preprocessing

SCHEMA_NAME = "liverlesion.model-package"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: Roles a file may play in a package.
FILE_ROLES = ("onnx", "onnx-bare", "weights", "engine", "calibration", "calibration-cache", "other")
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise PackageError(f"manifest: '{where}.{key}' is missing")
    value = data[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PackageError(f"manifest: '{where}.{key}' must be {names}, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class FileRecord:
    """One file of the package: where it is, what it is, and its checksum."""

    path: str
    role: str
    sha256: str
    size: int
    precision: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FileRecord:
        where = f"files[{data.get('path', '?')}]"
        path = _need(data, "path", str, where)
        if not _SAFE_NAME.match(path) or ".." in path.split("/"):
            raise PackageError(f"manifest: file path {path!r} is not a plain relative name inside the package")
        role = _need(data, "role", str, where)
        if role not in FILE_ROLES:
            raise PackageError(f"manifest: {where}.role {role!r} is unknown; accepted: {', '.join(FILE_ROLES)}")
        digest = _need(data, "sha256", str, where)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise PackageError(f"manifest: {where}.sha256 is not 64 lowercase hex digits")
        size = _need(data, "size", int, where)
        precision = data.get("precision")
        if precision is not None and precision not in PRECISIONS:
            raise PackageError(f"manifest: {where}.precision {precision!r} is unknown; accepted: {PRECISIONS}")
        known = {"path", "role", "sha256", "size", "precision"}
        return cls(path, role, digest, size, precision, {k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "role": self.role, "precision": self.precision,
                               "sha256": self.sha256, "size": self.size}
        out.update(self.extra)
        return out


@dataclass(frozen=True)
class Manifest:
    """A validated manifest; ``raw`` keeps every field as written."""

    raw: dict[str, Any]
    files: tuple[FileRecord, ...]
    grid: ModelGrid
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    lesion_classes: tuple[str, ...]

    @property
    def arch(self) -> str:
        return str(self.raw["model"]["arch"])

    @property
    def model_name(self) -> str:
        return str(self.raw["model"]["name"])

    @property
    def input_name(self) -> str:
        return str(self.raw["input"]["name"])

    @property
    def outputs(self) -> dict[str, Any]:
        return dict(self.raw.get("outputs", {}))

    @property
    def engines(self) -> list[dict[str, Any]]:
        return list(self.raw.get("engines", []))

    def onnx_files(self, role: str = "onnx") -> list[FileRecord]:
        return [f for f in self.files if f.role == role]

    def find(self, *, role: str, precision: str | None = None, **extra: Any) -> FileRecord | None:
        """The first file with this role (and precision, and extra fields), or None."""
        for record in self.files:
            if record.role != role or (precision is not None and record.precision != precision):
                continue
            if all(record.extra.get(k) == v for k, v in extra.items()):
                return record
        return None

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise PackageError("manifest: the top level must be a JSON object")
        schema = data.get("schema")
        if schema != SCHEMA_NAME:
            raise PackageError(f"manifest: schema {schema!r} is not {SCHEMA_NAME!r}; this is not a model package")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise PackageError(
                f"manifest: schema_version {version!r} is not supported; this liverlesion reads version "
                f"{SCHEMA_VERSION} (upgrade liverlesion, or re-export the package)"
            )
        model = _need(data, "model", dict, "manifest")
        for key in ("name", "version", "arch"):
            _need(model, key, str, "model")
        _need(model, "config", dict, "model")
        spec = _need(data, "input", dict, "manifest")
        _need(spec, "name", str, "input")
        if spec.get("units") != "HU":
            raise PackageError("manifest: input.units must be 'HU'")
        try:
            grid = ModelGrid.from_dict(_need(spec, "grid", dict, "input"))
            preprocessing = Preprocessing.from_dict(_need(data, "preprocessing", dict, "manifest"))
        except (KeyError, TypeError, ValueError) as exc:
            raise PackageError(f"manifest: bad input grid or preprocessing: {exc}") from None
        labels = tuple(_need(data, "labels", list, "manifest"))
        classes = tuple(_need(data, "lesion_classes", list, "manifest"))
        files = tuple(FileRecord.from_dict(f) for f in _need(data, "files", list, "manifest"))
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            raise PackageError("manifest: a file is listed twice")
        if not any(f.role == "onnx" for f in files):
            raise PackageError("manifest: the package lists no ONNX model file (role 'onnx')")
        return cls(data, files, grid, preprocessing, labels, classes)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.raw)
        out["files"] = [f.to_dict() for f in self.files]
        return out
