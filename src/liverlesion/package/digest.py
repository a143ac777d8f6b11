"""One digest of a whole package, for an integrator to pin.

The digest is the sha256 of the manifest in a canonical form: parsed, without what
devices add after export (the ``engines`` records and the files of
:data:`DEVICE_BUILT_ROLES`), written by ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)`` as UTF-8. The manifest lists every exported file's sha256 and size,
and the loader checks each file against it, so a pinned digest pins every exported file.
Whitespace and key order of ``manifest.json`` do not change it; building an engine on a
device does not either. So a pin does not cover what devices build (TensorRT engines,
calibration caches, compiled-model caches): ``LesionAnalyzer.load`` does not use them under
a pin unless told to trust them (``trust_device_builds``, docs/model-package.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from ..errors import ChecksumError, InputError
from .manifest import DEVICE_BUILT_ROLES, Manifest

_HEX = re.compile(r"[0-9a-f]{64}")
PREFIX = "sha256:"


def canonical_manifest(manifest: Manifest) -> bytes:
    """The bytes the digest is the sha256 of."""
    data: dict[str, Any] = {k: v for k, v in manifest.raw.items() if k != "engines"}
    data["files"] = [f for f in manifest.raw["files"] if f.get("role") not in DEVICE_BUILT_ROLES]
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def package_digest(manifest: Manifest) -> str:
    """The package digest: 64 lowercase hex digits."""
    return hashlib.sha256(canonical_manifest(manifest)).hexdigest()


def normalize_digest(value: Any) -> str:
    """A digest as given by a user (hex, any case, optionally ``sha256:``), as 64 lowercase hex digits."""
    if not isinstance(value, str):
        raise InputError(f"expect_digest must be a string of 64 hex digits (as liverlesion inspect prints), "
                         f"got {type(value).__name__}")
    text = value.strip().lower().removeprefix(PREFIX)
    if not _HEX.fullmatch(text):
        raise InputError(f"expect_digest {value!r:.80} is not a package digest: give the 64 hex digits "
                         "liverlesion inspect prints (optionally prefixed 'sha256:')")
    return text


def check_digest(manifest: Manifest, expected: str, source: str) -> None:
    """Refuse (ChecksumError) a package whose digest is not ``expected``."""
    actual = package_digest(manifest)
    if actual != expected:
        raise ChecksumError(f"package {source} has digest {actual}, not the expected {expected}: it is another "
                            "package, or its manifest or files were changed")


def pinned_onnx(manifest: Manifest) -> set[str]:
    """The sha256 of every ONNX graph a pin covers: an engine built from none of them is another model's."""
    return {f.sha256 for f in manifest.files if f.role == "onnx"}
