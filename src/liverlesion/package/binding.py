"""The binding: what each model file was exported as and for, which the manifest must agree with.

The manifest is not covered by any checksum of its own, yet its labels, lesion classes,
grid, default spacing and preprocessing decide what a result means, and its file records
(role, precision, form) decide which file a runtime runs. At export each ONNX file
(metadata key ``liverlesion.binding``) and the safetensors weights (header metadata, same
key) record :func:`make_binding` of what they were built for plus their own identity
(:func:`file_identity`); :func:`check_bindings` refuses a manifest that disagrees with any
of them (a swapped ``precision`` or ``form`` between two records included), and an ONNX
graph whose input shape is not the manifest's grid. One definition, used by export,
quantize (``liverlesion.export.binding`` writes it) and the loader; the loader reads both
formats without ``onnx`` or ``safetensors`` (see :mod:`.protobuf`).

Not bound: what is measured after the files are written (the ``accuracy`` records and their
verdicts, ``parity``, ``quantization.study``). Only the package digest pins those.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import PackageError
from .jsonsafe import loads_bounded
from .limits import DEFAULT_LIMITS, PackageLimits
from .manifest import SLICE_ROLE
from .protobuf import FLOAT, OnnxHeader, ProtobufError, TensorInfo, read_onnx_header

if TYPE_CHECKING:
    from ..grid import ModelGrid
    from ..preprocessing import Preprocessing
    from .manifest import FileRecord, Manifest

#: Metadata key of the binding, in ONNX ``metadata_props`` and in safetensors ``__metadata__``.
BINDING_KEY = "liverlesion.binding"
#: 2: each file's own identity and ``input.default_spacing_mm`` joined the binding.
BINDING_VERSION = 2
#: The binding's package-wide fields and the manifest field each stands for (named in refusals).
FIELDS = {"input": "input.name", "grid": "input.grid", "default_spacing_mm": "input.default_spacing_mm",
          "labels": "labels", "lesion_classes": "lesion_classes", "preprocessing": "preprocessing"}
#: The fields of a file record that runtimes select a file by (``form``: which INT8 graph; ``format``:
#: which weights file; ``accuracy``: which accuracy record vouches for it): a file records its own.
IDENTITY_FIELDS = ("role", "precision", "form", "format", "accuracy")
_REEXPORT = "re-export the package with this liverlesion (liverlesion export, then quantize)"


def make_binding(*, input_name: str, grid: ModelGrid, labels: Sequence[str], lesion_classes: Sequence[str],
                 preprocessing: Preprocessing,
                 default_spacing_mm: Sequence[float] | None = None) -> dict[str, Any]:
    """The package-wide binding of a model exported for this input, grid, labels and preprocessing."""
    spacing = None if default_spacing_mm is None else [float(v) for v in default_spacing_mm]
    return {"version": BINDING_VERSION, "input": str(input_name), "grid": grid.to_dict(),
            "default_spacing_mm": spacing, "labels": [str(v) for v in labels],
            "lesion_classes": [str(v) for v in lesion_classes], "preprocessing": preprocessing.to_dict()}


def file_identity(role: str, precision: str | None = None, **extra: Any) -> dict[str, Any]:
    """A file's identity, from the fields of its manifest record (None where the record has none)."""
    fields = {"role": role, "precision": precision, **extra}
    return {key: fields.get(key) for key in IDENTITY_FIELDS}


def identity_of(record: FileRecord) -> dict[str, Any]:
    """The identity a manifest record claims for its file."""
    return file_identity(record.role, record.precision, **record.extra)


def for_file(binding: dict[str, Any], identity: dict[str, Any]) -> dict[str, Any]:
    """The binding one file records: the package-wide fields and the file's own identity."""
    return {**binding, "file": dict(identity)}


def package_binding(manifest: Manifest) -> dict[str, Any]:
    """The package-wide binding the files of a package with this manifest must carry."""
    return make_binding(input_name=manifest.input_name, grid=manifest.grid, labels=manifest.labels,
                        lesion_classes=manifest.lesion_classes, preprocessing=manifest.preprocessing,
                        default_spacing_mm=manifest.input.default_spacing_mm)


def binding_of(manifest: Manifest, record: FileRecord) -> dict[str, Any]:
    """The binding the file of ``record`` in a package with this manifest must carry."""
    return for_file(package_binding(manifest), identity_of(record))


def binding_text(binding: dict[str, Any]) -> str:
    """The binding as stored: compact JSON with sorted keys."""
    return json.dumps(binding, sort_keys=True, separators=(",", ":"), allow_nan=False)


def set_onnx_binding(model: Any, binding: dict[str, Any]) -> Any:
    """Record ``binding`` in an ``onnx.ModelProto``'s metadata (replacing any earlier one); returns the model."""
    kept = [(p.key, p.value) for p in model.metadata_props if p.key != BINDING_KEY]
    del model.metadata_props[:]
    for key, value in [*kept, (BINDING_KEY, binding_text(binding))]:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model


# -- reading, without onnx or safetensors ----------------------------------------------------------
def read_safetensors_metadata(path: str | Path, limits: PackageLimits = DEFAULT_LIMITS) -> dict[str, str]:
    """The ``__metadata__`` map of a safetensors file, from its JSON header (bounded; tensors not read)."""
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise PackageError(f"{path.name}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        size = path.stat().st_size
        if length > min(limits.safetensors_header_bytes, size - 8):
            raise PackageError(f"{path.name}: safetensors header of {length} bytes is larger than the file or "
                               f"the limit of {limits.safetensors_header_bytes} bytes")
        header = loads_bounded(handle.read(length), f"{path.name} (safetensors header)", limits)
    if not isinstance(header, dict):
        raise PackageError(f"{path.name}: the safetensors header is not a JSON object")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise PackageError(f"{path.name}: the safetensors __metadata__ is not a map of strings")
    return metadata


def _recorded(text: str | None, where: str, limits: PackageLimits) -> dict[str, Any]:
    if text is None:
        raise PackageError(f"{where} records no '{BINDING_KEY}' (what it was exported for), so the manifest "
                           f"cannot be checked against it: {_REEXPORT}")
    found = loads_bounded(text.encode(), f"{where} ({BINDING_KEY})", limits)
    if not isinstance(found, dict) or found.get("version") != BINDING_VERSION:
        version = found.get("version") if isinstance(found, dict) else None
        raise PackageError(f"{where}: binding version {version!r} is not {BINDING_VERSION}; upgrade liverlesion "
                           f"or {_REEXPORT}")
    return found


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(", ", ": "))


def _compare(expected: dict[str, Any], found: dict[str, Any], where: str) -> None:
    for key, field in FIELDS.items():
        if found.get(key) != expected[key]:
            raise PackageError(
                f"manifest field '{field}' is {_compact(expected[key]):.200} but {where} was exported with "
                f"{_compact(found.get(key)):.200}; the manifest was edited or belongs to another model: "
                "restore it or re-export the package")
    claimed, stamped = expected["file"], found.get("file")
    if stamped != claimed:
        raise PackageError(
            f"the manifest's record of '{where}' says {_compact(claimed):.200} but the file was exported as "
            f"{_compact(stamped):.200}; the manifest's file records were edited (two swapped?): restore the "
            "manifest or re-export the package")


def _dims(info: TensorInfo) -> str:
    return "no shape" if info.dims is None else "[" + ", ".join(str(d) for d in info.dims) + "]"


def _check_graph(header: OnnxHeader, manifest: Manifest, record: FileRecord) -> None:
    """The fused graph's input is the manifest's (name, float32, N x 1 x rows x cols); outputs fit the labels."""
    rows, cols = manifest.grid.size
    name = manifest.input_name
    found = [i for i in header.inputs if i.name == name]
    if not found:
        names = ", ".join(repr(i.name) for i in header.inputs) or "none"
        raise PackageError(f"manifest field 'input.name' is {name!r} but the graph {record.path} has no such "
                           f"input (it has {names}); restore the manifest or re-export the package")
    info = found[-1]
    dims = info.dims
    if info.elem_type != FLOAT or dims is None or len(dims) != 4 or dims[1] != 1 or tuple(dims[2:]) != (rows, cols):
        raise PackageError(f"manifest field 'input.grid' says {rows} x {cols} pixels but the graph {record.path} "
                           f"takes '{name}' of shape {_dims(info)} (element type {info.elem_type}); expected "
                           f"float32 [N, 1, {rows}, {cols}]: restore the manifest or re-export the package")
    _check_outputs(header, manifest, record)


def _check_outputs(header: OnnxHeader, manifest: Manifest, record: FileRecord) -> None:
    """The probabilities output has one channel per manifest label."""
    for out in header.outputs:
        if out.name == "probabilities" and out.dims is not None and len(out.dims) == 4 \
                and isinstance(out.dims[1], int) and out.dims[1] != len(manifest.labels):
            raise PackageError(f"manifest field 'labels' lists {len(manifest.labels)} labels but the graph "
                               f"{record.path} outputs {out.dims[1]} probabilities per pixel; restore the "
                               "manifest or re-export the package")


def _check_bare(header: OnnxHeader, manifest: Manifest, record: FileRecord) -> None:
    """The bare network (channels in, logits out) runs on the same grid."""
    dims = header.inputs[0].dims if header.inputs else None
    if dims is None or len(dims) != 4 or tuple(dims[2:]) != manifest.grid.size:
        rows, cols = manifest.grid.size
        raise PackageError(f"manifest field 'input.grid' says {rows} x {cols} pixels but the bare graph "
                           f"{record.path} takes {dims}; restore the manifest or re-export the package")


#: The slice graph's inputs (``export.resampling_graph.INPUTS``) and the dims each must have, N/H/W symbolic.
SLICE_INPUTS = {"pixels": ("N", 1, "H", "W"), "rescale": ("N", 2), "theta": ("N", 2, 3), "theta_back": ("N", 2, 3)}


def _check_slice_graph(header: OnnxHeader, manifest: Manifest, record: FileRecord) -> None:
    """A slice graph takes the stored slice and its affines, and returns labels on the stored grid too."""
    found = {i.name: i for i in header.inputs}
    for name, want in SLICE_INPUTS.items():
        info = found.get(name)
        dims = None if info is None else info.dims
        if info is None or info.elem_type != FLOAT or dims is None or len(dims) != len(want) or any(
                isinstance(w, int) and d != w for d, w in zip(dims, want)):
            got = "no such input" if info is None else f"{_dims(info)} (element type {info.elem_type})"
            raise PackageError(f"{record.path} is recorded as a slice graph ({record.role}) but its input {name!r} "
                               f"is {got}; expected float32 [{', '.join(map(str, want))}]: {_REEXPORT}")
    if not any(o.name == "labels_input" for o in header.outputs):
        raise PackageError(f"{record.path} is recorded as a slice graph ({record.role}) but has no output "
                           f"'labels_input'; {_REEXPORT}")
    _check_outputs(header, manifest, record)


def check_file_binding(root: Path, manifest: Manifest, record: FileRecord,
                       limits: PackageLimits = DEFAULT_LIMITS) -> None:
    """Refuse (PackageError) a manifest that disagrees with what one model file was exported for."""
    path = root / record.path
    expected = binding_of(manifest, record)
    if record.role in ("onnx", "onnx-bare", SLICE_ROLE):
        try:
            header = read_onnx_header(path)
        except (ProtobufError, OSError, ValueError) as exc:
            raise PackageError(f"{record.path} is not a readable ONNX model ({exc}); {_REEXPORT}") from None
        values = header.metadata.get(BINDING_KEY)
        if values is not None and len(values) > 1:
            raise PackageError(f"{record.path} records '{BINDING_KEY}' {len(values)} times; {_REEXPORT}")
        _compare(expected, _recorded(values[0] if values else None, record.path, limits), record.path)
        check = {"onnx": _check_graph, "onnx-bare": _check_bare, SLICE_ROLE: _check_slice_graph}[record.role]
        check(header, manifest, record)
    elif is_safetensors(record):
        metadata = read_safetensors_metadata(path, limits)
        _compare(expected, _recorded(metadata.get(BINDING_KEY), record.path, limits), record.path)


def is_safetensors(record: FileRecord) -> bool:
    return record.role == "weights" and (record.extra.get("format") == "safetensors"
                                         or record.path.endswith(".safetensors"))


def check_bindings(root: Path, manifest: Manifest, limits: PackageLimits = DEFAULT_LIMITS) -> None:
    """:func:`check_file_binding` of every ONNX graph and safetensors weights file the manifest lists."""
    for record in manifest.files:
        check_file_binding(root, manifest, record, limits)

