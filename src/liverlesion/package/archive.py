"""Unpacking a package archive (.zip): checked from its central directory before anything is written.

Every refusal is a PackageError naming the entry: duplicate names, an encrypted entry,
a compression method other than stored/deflated/bzip2/lzma, a listed entry whose size is
not the manifest's, more than the limits allow (:mod:`.limits`), or an entry that does
not decompress (zlib error, bad CRC). Entries are stream-copied with a byte bound, and a
failure leaves nothing in the temporary folder.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ..errors import ChecksumError, PackageError
from .limits import PackageLimits
from .manifest import DEVICE_BUILT_ROLES, MANIFEST_NAME, Manifest, parse_manifest

_CHUNK = 1 << 20
#: Compression methods unpacked (Python's zipfile supports exactly these).
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated", zipfile.ZIP_BZIP2: "bzip2",
           zipfile.ZIP_LZMA: "lzma"}
#: What zipfile and its decompressors raise on a damaged or unsupported entry.
_ENTRY_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError,
                                                  NotImplementedError, ValueError)
try:
    import lzma

    _ENTRY_ERRORS += (lzma.LZMAError,)
except ImportError:  # pragma: no cover - Python built without lzma
    pass


def _refuse(archive: Path, message: str) -> PackageError:
    return PackageError(f"{archive}: {message}")


def _check_entry(archive: Path, info: zipfile.ZipInfo) -> None:
    """Refuse what cannot be unpacked, from the central directory alone."""
    if info.flag_bits & 0x1:
        raise _refuse(archive, f"entry '{info.filename}' is encrypted; accepted: unencrypted entries")
    if info.compress_type not in METHODS:
        raise _refuse(archive, f"entry '{info.filename}' uses compression method {info.compress_type}; "
                               f"accepted: {', '.join(METHODS.values())}")
    if info.is_dir():
        raise _refuse(archive, f"entry '{info.filename}' is a folder, and the manifest lists it as a file")


def _copy(zf: zipfile.ZipFile, info: zipfile.ZipInfo, write: Callable[[bytes], object], archive: Path) -> None:
    """Stream one entry to ``write``, at most its declared size, its CRC checked at the end."""
    copied = 0
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                copied += len(chunk)
                if copied > info.file_size:
                    raise _refuse(archive, f"entry '{info.filename}' holds more than the {info.file_size} "
                                           "bytes its directory declares")
                write(chunk)
    except PackageError:
        raise
    except _ENTRY_ERRORS as exc:
        raise _refuse(archive, f"entry '{info.filename}' cannot be unpacked ({type(exc).__name__}: {exc}); "
                               "the archive is damaged, or uses a feature not accepted") from None
    if copied != info.file_size:
        raise _refuse(archive, f"entry '{info.filename}' holds {copied} bytes, its directory declares "
                               f"{info.file_size}; the archive is damaged")


def _read_manifest(zf: zipfile.ZipFile, infos: dict[str, zipfile.ZipInfo], archive: Path,
                   limits: PackageLimits) -> tuple[bytes, Manifest]:
    info = infos.get(MANIFEST_NAME)
    if info is None:
        raise _refuse(archive, f"the archive has no {MANIFEST_NAME} at its top level")
    _check_entry(archive, info)
    if info.file_size > limits.manifest_bytes:
        raise _refuse(archive, f"its {MANIFEST_NAME} is {info.file_size} bytes; a manifest of at most "
                               f"{limits.manifest_bytes} bytes is accepted")
    parts: list[bytes] = []
    _copy(zf, info, parts.append, archive)
    data = b"".join(parts)
    return data, parse_manifest(data, f"{archive}: {MANIFEST_NAME}", limits)


def extract_archive(archive: Path, limits: PackageLimits) -> Path:
    """Unpack the manifest and the files it lists (and nothing else) into a new temporary folder."""
    if archive.stat().st_size > limits.unpacked_bytes:
        raise _refuse(archive, f"{archive.stat().st_size} bytes; archives of at most {limits.unpacked_bytes} "
                               "bytes are accepted")
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
        raise _refuse(archive, f"not a readable package archive (.zip): {exc}") from None
    with zf:
        entries = zf.infolist()
        if len(entries) > limits.archive_entries:
            raise _refuse(archive, f"{len(entries)} entries; at most {limits.archive_entries} accepted")
        infos: dict[str, zipfile.ZipInfo] = {}
        for entry in entries:
            if entry.filename in infos:  # zipfile would silently take the last one
                raise _refuse(archive, f"the entry '{entry.filename:.200}' appears twice; a package archive "
                                       "holds each file once")
            infos[entry.filename] = entry
        data, manifest = _read_manifest(zf, infos, archive, limits)
        wanted = []
        for record in manifest.files:
            info = infos.get(record.path)
            if info is None:
                if record.role in DEVICE_BUILT_ROLES:  # checked when used, like in a folder
                    continue
                raise _refuse(archive, f"the manifest lists '{record.path}', which the archive lacks")
            _check_entry(archive, info)
            if info.file_size != record.size:
                raise ChecksumError(f"{archive}: entry '{record.path}' is {info.file_size} bytes, the manifest "
                                    f"says {record.size}; the archive is incomplete or was modified")
            wanted.append(info)
        total = len(data) + sum(i.file_size for i in wanted)
        if total > limits.unpacked_bytes:
            raise _refuse(archive, f"unpacks to {total} bytes; at most {limits.unpacked_bytes} accepted")
        target = Path(tempfile.mkdtemp(prefix="liverlesion-pkg-"))
        try:
            free = shutil.disk_usage(target).free
            if total > free:
                raise _refuse(archive, f"unpacks to {total} bytes and the temporary folder {target.parent} has "
                                       f"{free} free; free space, or set TMPDIR to a larger disk")
            (target / MANIFEST_NAME).write_bytes(data)
            for info in wanted:
                out = target / info.filename
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "xb") as dst:
                    _copy(zf, info, dst.write, archive)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
    return target
