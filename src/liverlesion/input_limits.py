"""Bounds on one input slice, checked from its header before any pixel is decoded, read or copied.

An array's shape, a DICOM object's Rows / Columns / Number of Frames and a NIfTI
header's dims are checked against these limits first, so a small file that claims
30000 x 30000 pixels is refused before it can allocate gigabytes. What a read may
cost where the format itself amplifies (a deflated DICOM object, a NIfTI slice
scattered through its file) is bounded too. Each default is a module constant (read
at call time, so setting it changes the default for the process); the readers also
take ``max_side=`` for one call.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, LiverLesionError

#: Largest side (rows or columns, pixels) of an input slice; CT is 512 (at most 2048 on some scanners).
MAX_SIDE = 4096
#: Most frames a multi-frame DICOM object, or axial slices a NIfTI volume, may declare (an enhanced CT
#: series holds a few thousand).
MAX_FRAMES = 16384
#: Most bytes one read of a NIfTI volume may span. A slice whose feet-head axis is not the file's slowest
#: axis is scattered through the whole file; it is gathered block by block, each at most this.
NIFTI_READ_BYTES = 32 * 2**20
#: Bytes a deflated DICOM object may inflate to beyond the pixels of one frame at the side limit
#: (``MAX_SIDE``^2 x 2 bytes): room for its header (an enhanced CT's functional groups).
DEFLATE_HEADER_BYTES = 16 * 2**20


def side_limit(max_side: Any = None) -> int:
    """The side limit of one call: ``max_side``, or :data:`MAX_SIDE` when None."""
    limit = MAX_SIDE if max_side is None else max_side
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise InputError(f"max_side={limit!r} is not accepted: give a positive integer (pixels)")
    return int(limit)


def deflate_limit(max_side: Any = None) -> int:
    """Most bytes a deflated DICOM object may inflate to: one 16-bit frame at the side limit plus its header."""
    return side_limit(max_side) ** 2 * 2 + DEFLATE_HEADER_BYTES


def check_side(shape: tuple[int, ...], what: str, error: type[LiverLesionError] = InputError, *,
               max_side: Any = None, source: str = "shape") -> None:
    """Refuse a slice whose rows or columns exceed the side limit (before anything is allocated)."""
    limit = side_limit(max_side)
    if any(int(n) > limit for n in shape):
        raise error(f"{what}: {source} {' x '.join(str(int(n)) for n in shape)} exceeds the limit of {limit} "
                    f"pixels per side; accepted: slices up to {limit} x {limit} (pass max_side= or set "
                    "liverlesion.input_limits.MAX_SIDE for larger ones)")


def regular_file(path: str | os.PathLike[str], accepted: str) -> Path:
    """``path`` if it is an existing regular file; a directory, FIFO or device is named as such and refused.

    Reading a FIFO blocks until a writer comes and a device such as /dev/zero never ends,
    so only regular files are read.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; give {accepted}") from None
    except OSError as exc:  # permission denied on a parent, a name too long, a loop of links...
        raise InputError(f"{path} cannot be accessed ({exc.strerror or exc}); give {accepted}") from None
    if stat.S_ISREG(mode):
        return path
    raise InputError(f"{path} is {file_kind(mode)}, not a regular file; only regular files are read: give {accepted}")


def file_kind(mode: int) -> str:
    """What a ``st_mode`` names, in words ("a directory", "a FIFO (named pipe)", ...)."""
    return ("a regular file" if stat.S_ISREG(mode) else "a directory" if stat.S_ISDIR(mode)
            else "a symbolic link" if stat.S_ISLNK(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode)
            else "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "a special file")
