"""Unpacking a package archive (.zip): checked from its central directory before anything is written.

Before ``zipfile`` parses anything, the end-of-central-directory record (and its zip64
form) is read from the archive's tail, and an archive whose entry count or central
directory is over the limits is refused: zipfile would build a ZipInfo for every entry
first (300,000 empty entries: 2 s and 160 MB). The count is also checked by walking the
directory's fixed-size headers, so a record that understates it does not get past.
Then every refusal is a PackageError naming the entry: duplicate names, an encrypted entry,
a compression method other than stored/deflated/bzip2/lzma, a listed entry whose size is
not the manifest's, more than the limits allow (:mod:`.limits`), or an entry that does
not decompress (zlib error, bad CRC). Entries are stream-copied with a byte bound, and a
failure leaves nothing in the temporary folder.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ..errors import ChecksumError, PackageError
from .limits import CHUNK_BYTES, PackageLimits
from .manifest import DEVICE_BUILT_ROLES, MANIFEST_NAME, Manifest, parse_manifest

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


# The end-of-central-directory records (APPNOTE.TXT 4.3.14-4.3.16), as zipfile reads them.
_EOCD = struct.Struct("<4s4H2LH")  # signature, disk, CD disk, entries here, entries, CD size, CD offset, comment
_LOCATOR = struct.Struct("<4sLQL")  # zip64 locator: signature, disk, offset of the zip64 record, disks
_EOCD64 = struct.Struct("<4sQ2H2L4Q")  # signature, size, versions, disks, entries here, entries, CD size, offset
_CENTRAL = struct.Struct("<4s24x3H12x")  # a central header: signature, name / extra / comment lengths
_MAX_COMMENT = 0xFFFF


def _directory_extent(handle: BinaryIO, size: int) -> tuple[int, int, int] | None:
    """(entries, central directory size, where it starts) from the archive's tail; None without a record."""
    tail_start = max(0, size - _EOCD.size - _MAX_COMMENT)
    handle.seek(tail_start)
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    while at >= 0 and (len(tail) - at < _EOCD.size
                       or at + _EOCD.size + _EOCD.unpack_from(tail, at)[-1] != len(tail)):
        at = tail.rfind(b"PK\x05\x06", 0, at)  # a signature inside the comment: look further back
    if at < 0:
        return None
    _, _, _, _, entries, cd_size, _, _ = _EOCD.unpack_from(tail, at)
    record_at = tail_start + at
    locator_at = record_at - _LOCATOR.size
    if locator_at >= 0:
        handle.seek(locator_at)
        locator = handle.read(_LOCATOR.size)
        if locator[:4] == b"PK\x06\x07":
            record_at = locator_at - _EOCD64.size  # the zip64 record lies just before its locator
            handle.seek(record_at)
            zip64 = handle.read(_EOCD64.size)
            if len(zip64) != _EOCD64.size or zip64[:4] != b"PK\x06\x06":
                return None  # zipfile refuses it as well
            _, _, _, _, _, _, _, entries, cd_size, _ = _EOCD64.unpack(zip64)
    return entries, cd_size, record_at - cd_size


def _entries_in(directory: bytes, stop: int) -> int:
    """Central headers in ``directory`` counted one by one, up to ``stop`` (zipfile reads all there are)."""
    count = pos = 0
    while pos + _CENTRAL.size <= len(directory) and count < stop:
        signature, name, extra, comment = _CENTRAL.unpack_from(directory, pos)
        if signature != b"PK\x01\x02":
            break  # damaged: zipfile refuses it
        count += 1
        pos += _CENTRAL.size + name + extra + comment
    return count


def check_directory(archive: Path, limits: PackageLimits) -> None:
    """Refuse an archive whose entries or central directory are over the limits, from its tail alone."""
    try:
        with open(archive, "rb") as handle:
            size = handle.seek(0, 2)
            extent = _directory_extent(handle, size)
            if extent is None:
                raise _refuse(archive, "not a readable package archive (.zip): it has no end-of-central-"
                                       "directory record")
            entries, cd_size, start = extent
            if entries > limits.archive_entries:
                raise _refuse(archive, f"{entries} entries; at most {limits.archive_entries} accepted")
            if cd_size > limits.central_directory_bytes:
                raise _refuse(archive, f"a central directory of {cd_size} bytes; at most "
                                       f"{limits.central_directory_bytes} accepted")
            if not 0 <= start <= size - cd_size:
                raise _refuse(archive, "not a readable package archive (.zip): its central directory lies "
                                       "outside the file")
            handle.seek(start)
            counted = _entries_in(handle.read(cd_size), limits.archive_entries + 1)
    except OSError as exc:
        raise _refuse(archive, f"not readable ({exc})") from None
    if counted > limits.archive_entries:
        raise _refuse(archive, f"more than {limits.archive_entries} entries (its end record says {entries}); "
                               f"at most {limits.archive_entries} accepted")


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
            while chunk := src.read(CHUNK_BYTES):
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
    check_directory(archive, limits)
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
