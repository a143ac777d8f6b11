"""The manifest schema (version 1) and its validation.

The manifest is plain JSON. Validation checks what runtimes and ``inspect`` rely on
(schema, input spec, labels, file records, and the type of every section they read),
within :mod:`.limits`, and keeps every other field as written, so that producers
(export, quantize, build-engine) can add records without a schema bump. Nothing in a
manifest is ever executed.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import PackageError
from ..grid import ModelGrid
from ..preprocessing import Preprocessing
from .fields import is_kind as _is
from .fields import names as _names
from .fields import need as _need
from .fields import number as _number
from .fields import optional as _optional
from .fields import typed as _typed
from .jsonsafe import loads_bounded
from .limits import DEFAULT_LIMITS, PackageLimits
from .sections import AccuracyRecord, Calibration, InputSpec, ModelInfo, Quantization, accuracy_records

if TYPE_CHECKING:
    from .engines import EngineRecord

SCHEMA_NAME = "liverlesion.model-package"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: Roles a file may play in a package.
FILE_ROLES = ("onnx", "onnx-bare", "onnx-slice", "weights", "engine", "calibration", "calibration-cache", "other")
#: The role of a fused graph wrapped in its resampling (``export.resampling_graph``): the slice as stored in.
SLICE_ROLE = "onnx-slice"
#: The two graphs a package may hold: the fused graph (HU on the model grid in) and its slice graph.
MODEL_GRID_GRAPH, SLICE_GRAPH = "model-grid", "slice"
GRAPHS = (MODEL_GRID_GRAPH, SLICE_GRAPH)
#: File roles written on target devices after export: verified on use, and outside the package digest.
DEVICE_BUILT_ROLES = ("engine", "calibration-cache")
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")


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
    def from_dict(cls, data: Any, *, index: int | None = None, limits: PackageLimits = DEFAULT_LIMITS) -> FileRecord:
        slot = "files" if index is None else f"files[{index}]"
        if not isinstance(data, Mapping):
            raise PackageError(f"manifest: '{slot}' must be an object (path, role, sha256, size), "
                               f"got {type(data).__name__}")
        path = _need(data, "path", str, slot)
        if len(path) > limits.path_chars:
            raise PackageError(f"manifest: '{slot}.path' has {len(path)} characters; at most "
                               f"{limits.path_chars} accepted")
        if not _SAFE_NAME.match(path) or ".." in path.split("/"):
            raise PackageError(f"manifest: file path {path!r} is not a plain relative name inside the package "
                               "(letters, digits, '.', '_', '-', folders separated by '/')")
        where = f"files[{path}]"
        role = _need(data, "role", str, where)
        if role not in FILE_ROLES:
            raise PackageError(f"manifest: {where}.role {role!r:.40} is unknown; accepted: {', '.join(FILE_ROLES)}")
        digest = _need(data, "sha256", str, where)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise PackageError(f"manifest: {where}.sha256 is not 64 lowercase hex digits")
        size = _need(data, "size", int, where)
        if size < 0:
            raise PackageError(f"manifest: {where}.size is {size}; accepted: a byte count, 0 or more")
        precision = data.get("precision")
        if precision is not None and precision not in PRECISIONS:
            raise PackageError(f"manifest: {where}.precision {precision!r:.40} is unknown; accepted: {PRECISIONS}")
        known = {"path", "role", "sha256", "size", "precision"}
        return cls(path, role, digest, size, precision, {k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "role": self.role, "precision": self.precision,
                               "sha256": self.sha256, "size": self.size}
        out.update(self.extra)
        return out


def _check_schema(data: Mapping[str, Any]) -> None:
    schema = data.get("schema")
    if schema != SCHEMA_NAME:
        raise PackageError(f"manifest: schema {schema!r:.80} is not {SCHEMA_NAME!r}; this is not a model package")
    version = data.get("schema_version")
    if type(version) is not int:  # true and 1.0 equal 1 in Python: the schema says the integer
        raise PackageError(f"manifest: schema_version must be the integer {SCHEMA_VERSION}, got {version!r:.40} "
                           f"({type(version).__name__})")
    if version != SCHEMA_VERSION:
        raise PackageError(
            f"manifest: schema_version {version!r} is not supported; this liverlesion reads version "
            f"{SCHEMA_VERSION} (upgrade liverlesion, or re-export the package)"
        )


def _check_preprocessing(data: Mapping[str, Any], limits: PackageLimits) -> Preprocessing:
    spec = _need(data, "preprocessing", dict, "manifest")
    windows = _need(spec, "windows", list, "preprocessing")
    if not 0 < len(windows) <= limits.windows:
        raise PackageError(f"manifest: 'preprocessing.windows' has {len(windows)} windows; accepted: 1 to "
                           f"{limits.windows} [low_hu, high_hu] pairs")
    for k, window in enumerate(windows):
        if not _is(window, list) or len(window) != 2:
            raise PackageError(f"manifest: 'preprocessing.windows[{k}]' must be [low_hu, high_hu]")
        for value in window:
            _number(value, f"preprocessing.windows[{k}]", low=-limits.window_hu, high=limits.window_hu)
    try:
        return Preprocessing.from_dict(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise PackageError(f"manifest: bad preprocessing: {exc}") from None


def _check_sections(data: Mapping[str, Any]) -> None:
    """Optional sections kept as JSON (outputs, engine entries, versions, parity): each of the type read."""
    outputs = _optional(data, "outputs", dict, "manifest") or {}
    for name, spec in outputs.items():
        _typed(spec, dict, f"outputs.{name}")
    engines = _optional(data, "engines", list, "manifest") or []
    for k, engine in enumerate(engines):
        _typed(engine, dict, f"engines[{k}]")
    versions = _optional(data, "versions", dict, "manifest") or {}
    for name, version in versions.items():
        _typed(version, str, f"versions.{name}")
    _optional(data, "parity", dict, "manifest")


def _optional_section(data: Mapping[str, Any], key: str, parse: Any) -> Any:
    value = data.get(key)
    return None if value is None else parse(value)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest, as typed sections; ``raw`` keeps every field as written (for writing it back)."""

    raw: dict[str, Any]
    files: tuple[FileRecord, ...]
    grid: ModelGrid
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    lesion_classes: tuple[str, ...]
    input: InputSpec
    model: ModelInfo
    #: record key (``fp32``, ``int8``, ``int8-u8s8@openvino``...) -> record, in written order
    accuracy: dict[str, AccuracyRecord]
    calibration: Calibration | None = None
    quantization: Quantization | None = None

    @property
    def arch(self) -> str:
        return self.model.arch

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def input_name(self) -> str:
        return self.input.name

    @property
    def outputs(self) -> dict[str, Any]:
        """Output name -> its spec (dtype, shape) as written."""
        return dict(self.raw.get("outputs") or {})

    @property
    def versions(self) -> dict[str, str]:
        """What made the package: tool -> version."""
        return dict(self.raw.get("versions") or {})

    @property
    def slice_graph(self) -> dict[str, Any]:
        """The slice graphs' section as written (``export.slice_graphs``): sides, opset, parity; {} if none."""
        section = self.raw.get("slice_graph")
        return dict(section) if isinstance(section, dict) else {}

    @functools.cached_property
    def engines(self) -> tuple[EngineRecord, ...]:
        """The TensorRT engine records, each validated when first read (PackageError names a bad one).

        Parsed on first use rather than on load, so that a bad engine record refuses the
        engines only, as before, not a package opened with another backend.
        """
        from .engines import EngineRecord

        return tuple(EngineRecord.from_dict(item) for item in self.raw.get("engines") or [])

    @property
    def engine_count(self) -> int:
        """How many engine records the manifest lists (without parsing them)."""
        return len(self.raw.get("engines") or [])

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
    def from_dict(cls, data: Any, *, limits: PackageLimits = DEFAULT_LIMITS) -> Manifest:
        if not isinstance(data, dict):
            raise PackageError("manifest: the top level must be a JSON object")
        _check_schema(data)
        model = ModelInfo.from_dict(_need(data, "model", dict, "manifest"))
        spec = InputSpec.from_dict(_need(data, "input", dict, "manifest"), limits)
        preprocessing = _check_preprocessing(data, limits)
        labels = _names(_need(data, "labels", list, "manifest"), "labels", limits)
        if not labels:
            raise PackageError("manifest: 'labels' is empty; it must name every label of the label map")
        classes = _names(_need(data, "lesion_classes", list, "manifest"), "lesion_classes", limits)
        listed = _need(data, "files", list, "manifest")
        if len(listed) > limits.files:
            raise PackageError(f"manifest: 'files' lists {len(listed)} files; at most {limits.files} accepted")
        files = tuple(FileRecord.from_dict(f, index=k, limits=limits) for k, f in enumerate(listed))
        paths = [f.path for f in files]
        if len(set(paths)) != len(paths):
            twice = sorted({p for p in paths if paths.count(p) > 1})
            raise PackageError(f"manifest: a file is listed twice: {', '.join(twice)}")
        if not any(f.role == "onnx" for f in files):
            raise PackageError("manifest: the package lists no ONNX model file (role 'onnx')")
        _check_sections(data)
        accuracy = accuracy_records(_optional(data, "accuracy", dict, "manifest"))
        calibration = _optional_section(data, "calibration", Calibration.from_dict)
        quantization = _optional_section(data, "quantization", lambda q: Quantization.from_dict(q, limits))
        return cls(data, files, spec.grid, preprocessing, labels, classes, spec, model, accuracy,
                   calibration, quantization)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.raw)
        out["files"] = [f.to_dict() for f in self.files]
        return out


def parse_manifest(data: bytes, source: str, limits: PackageLimits = DEFAULT_LIMITS) -> Manifest:
    """Validate the bytes of a ``manifest.json`` read from ``source`` (size, JSON bounds, schema)."""
    if len(data) > limits.manifest_bytes:
        raise PackageError(f"{source}: {len(data)} bytes; a manifest of at most {limits.manifest_bytes} bytes "
                           "is accepted")
    return Manifest.from_dict(loads_bounded(data, source, limits), limits=limits)
