"""The OpenVINO compiled-model cache: a blob is imported only once it is verified, else it is rebuilt.

Each compiled model is two files in the package file's cache folder: the blob
(``CompiledModel.export_model()``) and a JSON record beside it saying what it was compiled
from and for (:class:`CacheKey`: the source file's sha256, the input shape, OpenVINO's
version, the device and CPU, the precision and the compile config) and what its
convolutions executed in, with the blob's size and sha256. :func:`read_entry` gives a blob
back only when the record matches what is asked, the blob matches the record, and both
files (and the folders they are in) belong to this user and are writable by no one else;
anything else is logged and answered with None, so the caller compiles anew and
:func:`write_entry` replaces both files (atomically, mode 0600).

Not verified: a user (or root) who rewrites blob and record together can make it run
their blob; that is the trust already given to the user's own files. The cache root
itself ($LIVERLESION_CACHE) is not checked, only the folders this module creates in it.
Where the OS has no user ids (Windows), ownership and modes are not checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from .trusted_files import UntrustedFile, prepare_folder, read_trusted, untrusted

__all__ = ["CacheEntry", "CacheKey", "prepare_folder", "read_entry", "untrusted", "write_entry"]

log = logging.getLogger("liverlesion.backends.openvino")

RECORD_FORMAT = "liverlesion.openvino-compiled-model"
RECORD_VERSION = 1
#: Largest blob read back (the tiny test models export ~0.1-0.3 MB, the paper's a few MB);
#: a larger file is not read at all. Callers may pass another limit to :func:`read_entry`.
MAX_BLOB_BYTES = 1 << 30
#: Largest record read back (a record is a few hundred bytes).
MAX_RECORD_BYTES = 64 << 10


@dataclass(frozen=True)
class CacheKey:
    """Everything a compiled model depends on: a record must match every field to be used."""

    source_path: str
    source_sha256: str
    input_shape: tuple[int, ...]
    openvino: str
    device: str
    cpu: str
    capabilities: tuple[str, ...]
    precision: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        """The two files' name: precision, hint, threads and shape (the folder is the source file's)."""
        hint = str(self.config.get("PERFORMANCE_HINT", "default")).lower()
        threads = self.config.get("INFERENCE_NUM_THREADS", 0)
        shape = "x".join(str(d) for d in self.input_shape)
        return f"{self.precision}-{hint}-{threads}t-{shape}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (tuples as lists, as a record read back has them)."""
        return json.loads(json.dumps(asdict(self)))


@dataclass(frozen=True)
class CacheEntry:
    """A verified blob and what its record says the compiled model executed."""

    blob: bytes
    executed_precision: str
    runtime_precisions: dict[str, int]


def read_entry(folder: Path, key: CacheKey, max_bytes: int = MAX_BLOB_BYTES) -> CacheEntry | None:
    """The verified blob for ``key``, or None (absent, or logged why it is not used: the caller rebuilds)."""
    record_path, blob_path = folder / f"{key.stem}.json", folder / f"{key.stem}.blob"
    try:
        text = read_trusted(record_path, MAX_RECORD_BYTES, "cache record")
        if text is None:
            return None
        record = _parse_record(text, record_path)
        differs = _first_difference(record.get("key"), key.to_dict())
        if differs is not None:
            raise UntrustedFile(f"cache record {record_path} was made for another {differs}")
        size, digest = record["blob"]["size"], record["blob"]["sha256"]
        if size > max_bytes:
            raise UntrustedFile(f"cache record {record_path} names a blob of {size} bytes, more than the "
                             f"{max_bytes} accepted")
        blob = read_trusted(blob_path, size, "cached blob")
        if blob is None:
            raise UntrustedFile(f"cached blob {blob_path} is missing")
        if len(blob) != size:
            raise UntrustedFile(f"cached blob {blob_path} is {len(blob)} bytes, its record says {size}")
        if hashlib.sha256(blob).hexdigest() != digest:
            raise UntrustedFile(f"cached blob {blob_path} does not match the sha256 in its record")
    except UntrustedFile as exc:
        log.warning("liverlesion: %s; compiling %s anew", exc, key.source_path)
        return None
    except OSError as exc:
        log.warning("liverlesion: cannot read the compiled-model cache in %s (%s); compiling %s anew",
                    folder, exc, key.source_path)
        return None
    return CacheEntry(blob, record["executed_precision"], dict(record["runtime_precisions"]))


def _parse_record(text: bytes, path: Path) -> dict[str, Any]:
    """The record's fields, checked for shape (a record is data from disk like any other)."""
    try:
        record = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UntrustedFile(f"cache record {path} is not JSON ({type(exc).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT \
            or record.get("version") != RECORD_VERSION:
        raise UntrustedFile(f"cache record {path} is not a {RECORD_FORMAT} record, version {RECORD_VERSION}")
    blob, runtime = record.get("blob"), record.get("runtime_precisions")
    if not isinstance(blob, dict) or not isinstance(blob.get("sha256"), str) \
            or type(blob.get("size")) is not int or blob["size"] < 1 \
            or not isinstance(record.get("executed_precision"), str) or not isinstance(runtime, dict) \
            or not all(isinstance(k, str) and type(v) is int for k, v in runtime.items()):
        raise UntrustedFile(f"cache record {path} lacks a blob size and sha256 or what the blob executed")
    return record


def _first_difference(recorded: Any, wanted: dict[str, Any]) -> str | None:
    """The first field of the key the record differs in, in words ("openvino 2025.0 (asked: 2026.4)")."""
    if not isinstance(recorded, dict):
        return "key (it has none)"
    for name, value in wanted.items():
        if recorded.get(name) != value:
            return f"{name.replace('_', ' ')}: {recorded.get(name)!r} (asked: {value!r})"
    extra = sorted(set(recorded) - set(wanted))
    return f"key (unknown fields {', '.join(extra)})" if extra else None


def write_entry(folder: Path, key: CacheKey, blob: bytes, executed: str, runtime: dict[str, int]) -> bool:
    """Write the blob, then its record, each atomically; False (logged) when the cache cannot take them."""
    record = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "key": key.to_dict(),
              "blob": {"file": f"{key.stem}.blob", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()},
              "executed_precision": executed, "runtime_precisions": dict(runtime)}
    try:
        # blob first: a reader between the two sees the old record, whose sha256 the new blob fails
        atomic_write_bytes(folder / f"{key.stem}.blob", blob, private=True)
        atomic_write_bytes(folder / f"{key.stem}.json", (json.dumps(record, indent=1) + "\n").encode(),
                           private=True)
    except OSError as exc:
        log.warning("liverlesion: cannot write the compiled model of %s to the cache %s (%s); the next load "
                    "compiles again", key.source_path, folder, exc)
        return False
    return True
