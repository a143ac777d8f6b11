"""Bounds on what a model package may hold, checked before anything is read, unpacked or allocated.

Each default is a module constant; pass ``limits=PackageLimits(...)`` to
``load_package`` (or ``LesionAnalyzer.load``) to change them for one call.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..grid import GRID_SIDE_RANGE, SPACING_RANGE_MM

#: ``manifest.json`` (a folder's file or an archive's entry): refused above this, before it is read.
#: Exported manifests are about 13 KB (a quantization study included); JSON parsing costs ~50x its size in memory.
MAX_MANIFEST_BYTES = 1 << 20
#: JSON nesting (objects and lists) of a manifest; exported manifests nest about 8 deep.
MAX_JSON_DEPTH = 64
#: Digits of one JSON integer (a file size needs 20).
MAX_INT_DIGITS = 32
#: Characters of a file path inside the package (a common file-name limit).
MAX_PATH_CHARS = 255
#: Characters of a name (model, label, input) in the manifest.
MAX_NAME_CHARS = 255
#: HU windows (input channels) a preprocessing may declare.
MAX_WINDOWS = 16
#: Largest magnitude of a window bound (HU); CT values lie within the signed 16-bit range.
MAX_WINDOW_HU = 1e5
#: Files a manifest may list.
MAX_FILES = 1024
#: Entries an archive may hold (listed or not).
MAX_ARCHIVE_ENTRIES = 4096
#: An archive's central directory (46 bytes per entry plus its name and extra fields): read from the
#: archive's tail and refused above this before zipfile parses it. 4096 entries of 255-character names
#: with the usual extra fields need about 1.5 MiB.
MAX_CENTRAL_DIRECTORY_BYTES = 16 << 20
#: Bytes an archive may unpack in total (sum of the listed entries' sizes); also its own size on disk.
MAX_UNPACKED_BYTES = 8 * 2**30
#: The JSON header of a safetensors file (its tensor table and metadata).
MAX_SAFETENSORS_HEADER_BYTES = 16 * 2**20
#: Bytes read, hashed or copied at a time (not a limit: the chunk of every streamed read).
CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class PackageLimits:
    """The bounds one load applies; every default is the module constant of the same meaning."""

    manifest_bytes: int = MAX_MANIFEST_BYTES
    json_depth: int = MAX_JSON_DEPTH
    int_digits: int = MAX_INT_DIGITS
    path_chars: int = MAX_PATH_CHARS
    name_chars: int = MAX_NAME_CHARS
    windows: int = MAX_WINDOWS
    window_hu: float = MAX_WINDOW_HU
    files: int = MAX_FILES
    archive_entries: int = MAX_ARCHIVE_ENTRIES
    central_directory_bytes: int = MAX_CENTRAL_DIRECTORY_BYTES
    unpacked_bytes: int = MAX_UNPACKED_BYTES
    safetensors_header_bytes: int = MAX_SAFETENSORS_HEADER_BYTES
    grid_side: tuple[int, int] = GRID_SIDE_RANGE
    #: Spacing of the model grid, mm (by default ``grid.SPACING_RANGE_MM``, the range of every slice).
    grid_spacing_mm: tuple[float, float] = SPACING_RANGE_MM


DEFAULT_LIMITS = PackageLimits()
