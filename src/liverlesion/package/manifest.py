"""The manifest schema (version 1) and its validation.

The manifest is plain JSON. Validation checks what runtimes and ``inspect`` rely on
(schema, input spec, labels, file records, and the type of every section they read),
within :mod:`.limits`, and keeps every other field as written, so that producers
(export, quantize, build-engine) can add records without a schema bump. Nothing in a
manifest is ever executed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, PackageError
from ..grid import SPACING_RANGE_MM, ModelGrid
from ..preprocessing import Preprocessing
from .jsonsafe import loads_bounded
from .limits import DEFAULT_LIMITS, PackageLimits

SCHEMA_NAME = "liverlesion.model-package"
SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

#: Roles a file may play in a package.
FILE_ROLES = ("onnx", "onnx-bare", "weights", "engine", "calibration", "calibration-cache", "other")
#: File roles written on target devices after export: verified on use, and outside the package digest.
DEVICE_BUILT_ROLES = ("engine", "calibration-cache")
PRECISIONS = ("fp32", "fp16", "int8", "bf16")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*$")
#: Accuracy fields that ``inspect`` and ``precision="auto"`` read as numbers.
_SCORES = ("lesion_dice", "liver_dice", "accuracy", "agreement_with_fp32")


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
             bool: "true or false"}
    if kind == (int, float):
        return "a number"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return kind is bool or (isinstance(kind, tuple) and bool in kind)
    return isinstance(value, kind)


def _need(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in data:
        raise PackageError(f"manifest: '{where}.{key}' is missing")
    return _typed(data[key], kind, f"{where}.{key}")


def _typed(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not _is(value, kind):
        raise PackageError(f"manifest: '{where}' must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _optional(data: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    value = data.get(key)
    return None if value is None else _typed(value, kind, f"{where}.{key}")


def _number(value: Any, where: str, *, low: float = -math.inf, high: float = math.inf) -> float:
    _typed(value, (int, float), where)
    if not low <= value <= high:
        raise PackageError(f"manifest: '{where}' is {value!r:.40}; accepted: a number from {low} to {high}")
    return float(value)


def _names(value: Any, where: str, limits: PackageLimits, *, distinct: bool = True) -> tuple[str, ...]:
    """A list of short non-empty strings (distinct unless told otherwise)."""
    items = _typed(value, list, where)
    for k, item in enumerate(items):
        if not _is(item, str) or not 0 < len(item) <= limits.name_chars:
            raise PackageError(f"manifest: '{where}[{k}]' must be a non-empty string of at most "
                               f"{limits.name_chars} characters, got {item!r:.60}")
    if distinct and len(set(items)) != len(items):
        raise PackageError(f"manifest: '{where}' lists a name twice: {items!r:.200}")
    return tuple(items)


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


def _check_model(data: Mapping[str, Any]) -> None:
    model = _need(data, "model", dict, "manifest")
    for key in ("name", "version", "arch"):
        _need(model, key, str, "model")
    _need(model, "config", dict, "model")
    parameters = _optional(model, "parameters", int, "model")
    if parameters is not None and parameters < 0:
        raise PackageError("manifest: 'model.parameters' must be 0 or more")
    if model.get("gflops_per_slice") is not None:
        _number(model["gflops_per_slice"], "model.gflops_per_slice", low=0)
    _optional(model, "created", str, "model")
    _optional(model, "training", dict, "model")


def _check_input(spec: Mapping[str, Any], limits: PackageLimits) -> None:
    name = _need(spec, "name", str, "input")
    if not 0 < len(name) <= limits.name_chars:
        raise PackageError(f"manifest: 'input.name' must be 1 to {limits.name_chars} characters")
    if spec.get("units") != "HU":
        raise PackageError("manifest: input.units must be 'HU'")
    max_batch = _optional(spec, "max_batch", int, "input")
    if max_batch is not None and max_batch < 1:
        raise PackageError(f"manifest: 'input.max_batch' is {max_batch}; accepted: a positive integer")
    default = _optional(spec, "default_spacing_mm", list, "input")
    if default is not None:
        if len(default) != 2:
            raise PackageError("manifest: 'input.default_spacing_mm' must be [row_mm, col_mm]")
        low, high = SPACING_RANGE_MM  # the spacing of a slice given without one: a slice's range
        for k, value in enumerate(default):
            _number(value, f"input.default_spacing_mm[{k}]", low=low, high=high)
    _optional(spec, "resample", dict, "input")
    _optional(spec, "shape", list, "input")
    _optional(spec, "dtype", str, "input")


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


def _check_accuracy(data: Mapping[str, Any]) -> None:
    """``accuracy``: precision -> record, with the fields read as numbers and verdicts well typed."""
    records = _optional(data, "accuracy", dict, "manifest") or {}
    for key, record in records.items():
        where = f"accuracy.{key}"
        _typed(record, dict, where)
        for score in _SCORES:
            if record.get(score) is not None:
                _number(record[score], f"{where}.{score}", low=0, high=1)
        _optional(record, "meets_target", bool, where)
        _optional(record, "target_misses", list, where)
        _optional(record, "data", str, where)
        slices = _optional(record, "slices", int, where)
        if slices is not None and slices < 0:
            raise PackageError(f"manifest: '{where}.slices' must be 0 or more")
        for metric, limit in (_optional(record, "target_max_loss", dict, where) or {}).items():
            _number(limit, f"{where}.target_max_loss.{metric}")


def _check_sections(data: Mapping[str, Any], limits: PackageLimits) -> None:
    """Optional sections read by the runtime or ``inspect``: each of the type they are read as."""
    outputs = _optional(data, "outputs", dict, "manifest") or {}
    for name, spec in outputs.items():
        _typed(spec, dict, f"outputs.{name}")
    engines = _optional(data, "engines", list, "manifest") or []
    for k, engine in enumerate(engines):
        _typed(engine, dict, f"engines[{k}]")
    _check_accuracy(data)
    _optional(data, "calibration", dict, "manifest")
    quantization = _optional(data, "quantization", dict, "manifest") or {}
    blocks = _optional(quantization, "extra_excluded_blocks", list, "quantization") or []
    _names(blocks, "quantization.extra_excluded_blocks", limits, distinct=False)
    versions = _optional(data, "versions", dict, "manifest") or {}
    for name, version in versions.items():
        _typed(version, str, f"versions.{name}")
    _optional(data, "parity", dict, "manifest")


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
        return dict(self.raw.get("outputs") or {})

    @property
    def engines(self) -> list[dict[str, Any]]:
        return list(self.raw.get("engines") or [])

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
        _check_model(data)
        spec = _need(data, "input", dict, "manifest")
        _check_input(spec, limits)
        try:
            grid = ModelGrid.from_dict(_need(spec, "grid", dict, "input"), side_range=limits.grid_side,
                                       spacing_range=limits.grid_spacing_mm)
        except InputError as exc:
            raise PackageError(f"manifest: input.{exc}") from None
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
        _check_sections(data, limits)
        return cls(data, files, grid, preprocessing, labels, classes)

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
