"""Writing the binding (``package.binding``) into the model files at export and quantize; needs ``onnx``.

:func:`bound_onnx_record` stamps a file with the package-wide binding and its own identity
taken from the very fields its manifest record is then made of, so the two cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import require
from ..package.binding import file_identity, for_file, set_onnx_binding
from ..package.manifest import FileRecord
from ..package.store import file_record


def bind_onnx_file(path: str | Path, binding: dict[str, Any]) -> Path:
    """Record ``binding`` in the ONNX file at ``path`` (rewritten in place, as one file)."""
    onnx = require("onnx", "onnxruntime", "recording the binding in an ONNX file")
    model = onnx.load(str(path))
    onnx.save_model(set_onnx_binding(model, binding), str(path), save_as_external_data=False)
    return Path(path)


def bound_onnx_record(root: str | Path, relative: str, binding: dict[str, Any], role: str,
                      precision: str | None = None, **extra: Any) -> FileRecord:
    """Stamp ``root/relative`` with ``binding`` and the identity of this record, then return the record."""
    bind_onnx_file(Path(root) / relative, for_file(binding, file_identity(role, precision, **extra)))
    return file_record(root, relative, role, precision, **extra)
