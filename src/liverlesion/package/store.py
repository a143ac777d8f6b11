"""Reading, verifying and writing model packages on disk (folder or .zip archive)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import ChecksumError, PackageError
from .archive import extract_archive
from .binding import check_bindings
from .digest import check_digest, normalize_digest, package_digest
from .limits import CHUNK_BYTES, DEFAULT_LIMITS, PackageLimits
from .manifest import DEVICE_BUILT_ROLES, MANIFEST_NAME, FileRecord, Manifest, parse_manifest

__all__ = ["DEVICE_BUILT_ROLES", "ModelPackage", "file_record", "load_package", "parse_manifest",
           "read_manifest", "sha256_file", "write_archive", "write_manifest"]



def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_record(root: str | Path, relative: str, role: str, precision: str | None = None,
                **extra: Any) -> FileRecord:
    """Describe a file already written inside the package folder ``root``."""
    path = Path(root) / relative
    return FileRecord.from_dict({"path": relative, "role": role, "precision": precision,
                                 "sha256": sha256_file(path), "size": path.stat().st_size, **extra})


def write_manifest(root: str | Path, manifest: Manifest | dict[str, Any]) -> Manifest:
    """Validate and write ``manifest.json`` atomically; returns the validated manifest."""
    validated = manifest if isinstance(manifest, Manifest) else Manifest.from_dict(manifest)
    text = json.dumps(validated.to_dict(), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write_bytes(Path(root) / MANIFEST_NAME, text.encode())
    return validated


def _inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused if it (through symlinks) resolves outside ``root``."""
    path = root / relative
    real_root = root.resolve()
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise PackageError(f"package {root}: '{relative}' cannot be resolved ({exc})") from None
    if not real.is_relative_to(real_root):
        raise PackageError(f"package {root}: '{relative}' leads outside the package (to {real}) through a "
                           "symbolic link; a package's files must lie inside its folder: copy them in")
    return path


class ModelPackage:
    """A verified model package: its manifest and the paths of its files."""

    def __init__(self, root: Path, manifest: Manifest, *, cleanup: Path | None = None,
                 verified: bool = False) -> None:
        self.root = root
        self.manifest = manifest
        self._cleanup = cleanup
        #: Whether every exported file was checked against the manifest (and the manifest against them).
        self.verified = verified

    @property
    def digest(self) -> str:
        """The package digest (see :mod:`.digest`): what an integrator pins with ``expect_digest``."""
        return package_digest(self.manifest)

    def path(self, record: FileRecord | str) -> Path:
        """Where a listed file lies; refused if a symbolic link leads it outside the package."""
        return _inside(self.root, record.path if isinstance(record, FileRecord) else record)

    def verify(self, records: Iterable[FileRecord] | None = None) -> None:
        """Check presence, size and sha256 of the given files (all by default)."""
        for record in self.manifest.files if records is None else records:
            path = self.path(record)
            if not path.exists():
                raise PackageError(f"package {self.root}: file '{record.path}' listed in the manifest is missing")
            if not path.is_file():
                raise PackageError(f"package {self.root}: '{record.path}' listed in the manifest is not a "
                                   "regular file")
            if path.stat().st_size != record.size:
                raise ChecksumError(
                    f"package {self.root}: '{record.path}' is {path.stat().st_size} bytes, the manifest says "
                    f"{record.size}; the package is incomplete or was modified: re-export it"
                )
            if sha256_file(path) != record.sha256:
                raise ChecksumError(
                    f"package {self.root}: sha256 of '{record.path}' does not match the manifest; "
                    "the file was modified or corrupted: re-export the package or restore the file"
                )

    def close(self) -> None:
        if self._cleanup is not None:
            shutil.rmtree(self._cleanup, ignore_errors=True)
            self._cleanup = None

    def __enter__(self) -> ModelPackage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelPackage({str(self.root)!r}, model={self.manifest.model_name!r})"


def read_manifest(root: str | Path, limits: PackageLimits = DEFAULT_LIMITS) -> Manifest:
    """Parse and validate ``root/manifest.json`` without checking the files (its size is checked first)."""
    root = Path(root)
    if not (root / MANIFEST_NAME).exists():
        raise PackageError(f"{root} is not a model package: it has no {MANIFEST_NAME}")
    path = _inside(root, MANIFEST_NAME)
    if not path.is_file():
        raise PackageError(f"{path}: not a regular file; a package's {MANIFEST_NAME} is a JSON file")
    try:
        size = path.stat().st_size
        if size > limits.manifest_bytes:
            raise PackageError(f"{path}: {size} bytes; a manifest of at most {limits.manifest_bytes} bytes "
                               "is accepted")
        with open(path, "rb") as handle:
            data = handle.read(limits.manifest_bytes + 1)  # bounded even if the file grows meanwhile
    except OSError as exc:
        raise PackageError(f"{path}: not readable ({exc})") from None
    return parse_manifest(data, str(path), limits)


def load_package(path: str | Path, *, verify: bool = True, expect_digest: str | None = None,
                 limits: PackageLimits | None = None) -> ModelPackage:
    """Open a package folder or .zip archive; by default verify every file and the manifest's binding.

    ``expect_digest``: refuse (ChecksumError) any package whose digest differs (see :mod:`.digest`);
    it needs ``verify``. ``limits``: bounds other than :mod:`.limits`' defaults. Engine files are
    the exception to verification: the TensorRT backend verifies the one it opens.
    """
    limits = DEFAULT_LIMITS if limits is None else limits
    expected = None if expect_digest is None else normalize_digest(expect_digest)
    if expected is not None and not verify:
        raise PackageError("expect_digest pins the package's files too, so it needs verify=True")
    path = Path(path)
    if not path.exists():
        raise PackageError(f"model package {path} does not exist; give a package folder or its .zip archive")
    if not (path.is_dir() or path.is_file()):
        raise PackageError(f"model package {path} is neither a folder nor a file; give a package folder or "
                           "its .zip archive")
    cleanup = None
    root = path
    if path.is_file():
        root = cleanup = extract_archive(path, limits)
    try:
        package = ModelPackage(root, read_manifest(root, limits), cleanup=cleanup)
        if expected is not None:
            check_digest(package.manifest, expected, str(path))
        if verify:
            # Engines are built on devices after export and checked by the TensorRT backend
            # when it opens one: a stale engine must not block the ONNX backends.
            package.verify([f for f in package.manifest.files if f.role not in DEVICE_BUILT_ROLES])
            check_bindings(root, package.manifest, limits)
            package.verified = True
    except BaseException:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise
    return package


def write_archive(root: str | Path, archive: str | Path) -> Path:
    """Pack a verified package folder into one .zip file (atomically)."""
    import zipfile

    package = load_package(root)
    archive = Path(archive)
    fd, tmp = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(package.path(MANIFEST_NAME), MANIFEST_NAME)
            for record in package.manifest.files:
                zf.write(package.path(record), record.path)
        os.replace(tmp, archive)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return archive
