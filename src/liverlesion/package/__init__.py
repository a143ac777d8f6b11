"""The model package: a folder (or one archive) with manifest.json and the model files.

The manifest is the single description every runtime reads; :func:`load_package`
is the one loader, and it refuses an incomplete or tampered package.
"""

from .manifest import SCHEMA_NAME, SCHEMA_VERSION, FileRecord, Manifest
from .store import ModelPackage, load_package, sha256_file, write_manifest

__all__ = [
    "SCHEMA_NAME", "SCHEMA_VERSION", "FileRecord", "Manifest", "ModelPackage",
    "load_package", "sha256_file", "write_manifest",
]
