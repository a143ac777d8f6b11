"""The model package: a folder (or one archive) with manifest.json and the model files.

The manifest is the single description every runtime reads; :func:`load_package`
is the one loader, and it refuses an incomplete, tampered or unbounded package, and a
manifest that disagrees with what its model files were exported for (:mod:`.binding`).
"""

from .binding import (
    BINDING_KEY,
    binding_of,
    file_identity,
    for_file,
    make_binding,
    package_binding,
    set_onnx_binding,
)
from .digest import package_digest
from .limits import DEFAULT_LIMITS, PackageLimits
from .manifest import SCHEMA_NAME, SCHEMA_VERSION, FileRecord, Manifest
from .store import ModelPackage, load_package, sha256_file, write_manifest

__all__ = [
    "BINDING_KEY", "DEFAULT_LIMITS", "SCHEMA_NAME", "SCHEMA_VERSION", "FileRecord", "Manifest", "ModelPackage",
    "PackageLimits", "binding_of", "file_identity", "for_file", "load_package", "make_binding", "package_binding",
    "package_digest", "set_onnx_binding", "sha256_file", "write_manifest",
]
