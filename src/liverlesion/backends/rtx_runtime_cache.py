"""The TensorRT-RTX runtime cache: the kernels JIT-compiled at an engine's first load on a GPU, kept per GPU and
engine so that the next load on that GPU skips compilation.

The cache is executable code, so it is handed to TensorRT-RTX only once verified: its JSON record
beside it must name this engine (sha256), this TensorRT-RTX, this GPU (name, compute capability)
and driver, and the blob must match the record's size and sha256; both files must belong to this
user and be writable by no one else (:mod:`.trusted_files`). TensorRT-RTX checks the environment
again itself when it deserialises the blob (its version, the GPU, the driver) and refuses a
mismatch. Anything that fails is logged and answered with None: the engine JIT-compiles again and
the cache is rewritten (atomically, mode 0600).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from .trusted_files import UntrustedFile, prepare_folder, read_trusted

log = logging.getLogger("liverlesion.backends.tensorrt_rtx")

RECORD_FORMAT = "liverlesion.tensorrt-rtx-runtime-cache"
RECORD_VERSION = 1
#: NVIDIA notes that caches past ~100 MB cost more to (de)serialise than they save; ours are far smaller.
MAX_CACHE_BYTES = 512 << 20
MAX_RECORD_BYTES = 64 << 10
WITHOUT = "TensorRT-RTX compiles its kernels on every load"


@dataclass(frozen=True)
class RuntimeCacheKey:
    """What a runtime cache was made for; a record must match every field to be used."""

    engine_sha256: str
    tensorrt_rtx: str
    gpu_name: str
    compute_capability: str
    driver_version: int | None

    @property
    def stem(self) -> str:
        """The two files' name: the GPU (the folder is the engine's)."""
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower() or "gpu"
        return f"sm{self.compute_capability.replace('.', '')}-{gpu}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cache_folder(root: Path, key: RuntimeCacheKey) -> Path | None:
    """The engine's folder under ``root`` (made 0700 and checked), or None when it cannot be trusted."""
    return prepare_folder(root, root / "tensorrt-rtx" / key.engine_sha256[:32], WITHOUT)


def read_cache(folder: Path, key: RuntimeCacheKey) -> bytes | None:
    """The verified cache blob for ``key``, or None (absent, or logged why it is not used)."""
    record_path, blob_path = folder / f"{key.stem}.json", folder / f"{key.stem}.cache"
    try:
        text = read_trusted(record_path, MAX_RECORD_BYTES, "runtime-cache record")
        if text is None:
            return None
        try:
            record = json.loads(text.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise UntrustedFile(f"runtime-cache record {record_path} is not JSON") from None
        blob_info = record.get("blob") if isinstance(record, dict) else None
        if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT \
                or record.get("version") != RECORD_VERSION or not isinstance(blob_info, dict) \
                or type(blob_info.get("size")) is not int or not isinstance(blob_info.get("sha256"), str):
            raise UntrustedFile(f"runtime-cache record {record_path} is not a {RECORD_FORMAT} record")
        if record.get("key") != key.to_dict():
            raise UntrustedFile(f"runtime-cache record {record_path} was made for another engine, GPU, driver or "
                                "TensorRT-RTX")
        size = blob_info["size"]
        if not 0 < size <= MAX_CACHE_BYTES:
            raise UntrustedFile(f"runtime-cache record {record_path} names {size} bytes; 1..{MAX_CACHE_BYTES} "
                                "are accepted")
        blob = read_trusted(blob_path, size, "runtime cache")
        if blob is None or len(blob) != size or hashlib.sha256(blob).hexdigest() != blob_info["sha256"]:
            raise UntrustedFile(f"runtime cache {blob_path} is missing or does not match its record")
    except UntrustedFile as exc:
        log.warning("liverlesion: %s; TensorRT-RTX compiles the kernels anew", exc)
        return None
    except OSError as exc:
        log.warning("liverlesion: cannot read the TensorRT-RTX runtime cache in %s (%s)", folder, exc)
        return None
    return blob


def write_cache(folder: Path, key: RuntimeCacheKey, blob: bytes) -> bool:
    """Write the blob, then its record, each atomically and private; False (logged) when that fails."""
    if not 0 < len(blob) <= MAX_CACHE_BYTES:
        log.warning("liverlesion: a TensorRT-RTX runtime cache of %d bytes is not kept", len(blob))
        return False
    record = {"format": RECORD_FORMAT, "version": RECORD_VERSION, "key": key.to_dict(),
              "blob": {"file": f"{key.stem}.cache", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}}
    try:
        atomic_write_bytes(folder / f"{key.stem}.cache", blob, private=True)  # blob first, as the OpenVINO cache
        atomic_write_bytes(folder / f"{key.stem}.json", (json.dumps(record, indent=1) + "\n").encode(), private=True)
    except OSError as exc:
        log.warning("liverlesion: cannot write the TensorRT-RTX runtime cache to %s (%s)", folder, exc)
        return False
    return True
