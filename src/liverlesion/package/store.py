"""Reading, verifying and writing model packages on disk (folder or .zip archive)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import ChecksumError, PackageError
from .manifest import MANIFEST_NAME, FileRecord, Manifest

_CHUNK = 1 << 20
#: File roles written on target devices, verified on use rather than at load.
DEVICE_BUILT_ROLES = ("engine", "calibration-cache")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
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
    text = json.dumps(validated.to_dict(), indent=2, sort_keys=False) + "\n"
    atomic_write_bytes(Path(root) / MANIFEST_NAME, text.encode())
    return validated


class ModelPackage:
    """A verified model package: its manifest and the paths of its files."""

    def __init__(self, root: Path, manifest: Manifest, *, cleanup: Path | None = None) -> None:
        self.root = root
        self.manifest = manifest
        self._cleanup = cleanup

    def path(self, record: FileRecord | str) -> Path:
        return self.root / (record.path if isinstance(record, FileRecord) else record)

    def verify(self, records: Iterable[FileRecord] | None = None) -> None:
        """Check presence, size and sha256 of the given files (all by default)."""
        for record in self.manifest.files if records is None else records:
            path = self.path(record)
            if not path.is_file():
                raise PackageError(f"package {self.root}: file '{record.path}' listed in the manifest is missing")
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


def read_manifest(root: str | Path) -> Manifest:
    """Parse and validate ``root/manifest.json`` without checking the files."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise PackageError(f"{root} is not a model package: it has no {MANIFEST_NAME}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{path}: not readable JSON ({exc})") from None
    return Manifest.from_dict(data)


def _extract_archive(archive: Path) -> Path:
    """Unpack the manifest and the files it lists (and nothing else) into a temporary folder."""
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as exc:
        raise PackageError(f"{archive}: not a readable package archive (.zip): {exc}") from None
    target = Path(tempfile.mkdtemp(prefix="liverlesion-pkg-"))
    try:
        with zf:
            names = set(zf.namelist())
            if MANIFEST_NAME not in names:
                raise PackageError(f"{archive}: the archive has no {MANIFEST_NAME} at its top level")
            (target / MANIFEST_NAME).write_bytes(zf.read(MANIFEST_NAME))
            manifest = read_manifest(target)  # validates every path before anything else is unpacked
            for record in manifest.files:
                if record.path in names:
                    out = target / record.path
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(record.path) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def load_package(path: str | Path, *, verify: bool = True) -> ModelPackage:
    """Open a package folder or .zip archive; by default verify every file's checksum.

    Engine files are the exception: the TensorRT backend verifies the one it opens.
    """
    path = Path(path)
    if not path.exists():
        raise PackageError(f"model package {path} does not exist; give a package folder or its .zip archive")
    cleanup = None
    root = path
    if path.is_file():
        root = cleanup = _extract_archive(path)
    try:
        package = ModelPackage(root, read_manifest(root), cleanup=cleanup)
        if verify:
            # Engines are built on devices after export and checked by the TensorRT backend
            # when it opens one: a stale engine must not block the ONNX backends.
            package.verify([f for f in package.manifest.files if f.role not in DEVICE_BUILT_ROLES])
    except BaseException:
        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        raise
    return package


def write_archive(root: str | Path, archive: str | Path) -> Path:
    """Pack a verified package folder into one .zip file (atomically)."""
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
