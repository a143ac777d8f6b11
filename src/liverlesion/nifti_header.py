"""A NIfTI volume's header checked before any voxel is read: its pixdims, its affine, its size.

Shared by the SDK's slice reader and the LiTS reader. nibabel repairs a zero pixdim to
1 mm when it loads a header (and builds the affine from the repaired value), so the
pixdims are read again as stored; a NaN pixdim would reach numpy's SVD as a LinAlgError.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DataFormatError, LiverLesionError
from .input_limits import check_side


def stored_pixdims(image: Any) -> np.ndarray:
    """pixdim[1..3] (mm) exactly as the file stores them, before nibabel's repairs."""
    holder = image.file_map.get("header") or image.file_map["image"]
    with holder.get_prepare_fileobj(mode="rb") as handle:
        raw = type(image.header).from_fileobj(handle, check=False)
    return np.asarray(raw["pixdim"][1:4], dtype=float)


def check_pixdims(image: Any, what: str, error: type[LiverLesionError] = DataFormatError) -> None:
    """Refuse a header whose voxel sizes (pixdim[1..3]) are zero, NaN or infinite."""
    try:
        pixdims = stored_pixdims(image)
    except Exception as exc:  # noqa: BLE001 - a header nibabel opened once; any failure now is damage
        raise error(f"{what}: its header could not be read again ({type(exc).__name__}: {exc})") from None
    if not (np.isfinite(pixdims).all() and (pixdims != 0).all()):
        raise error(f"{what}: its voxel sizes (pixdim[1..3]) are {pixdims.tolist()} mm; accepted: finite, "
                    "non-zero voxel sizes (nibabel would read a zero as 1 mm)")


def oriented_axes(affine: Any, what: str,
                  error: type[LiverLesionError] = DataFormatError) -> tuple[np.ndarray, np.ndarray]:
    """(affine as floats, nibabel ``io_orientation``) for a finite, non-degenerate affine."""
    import nibabel as nib

    matrix = np.asarray(affine, dtype=float)
    if matrix.shape != (4, 4) or not np.isfinite(matrix).all():
        raise error(f"{what}: its affine is not a finite 4 x 4 matrix, so voxel positions are unknown")
    if (np.linalg.norm(matrix[:3, :3], axis=0) == 0).any():
        raise error(f"{what}: its affine gives a voxel axis of zero length; accepted: a non-degenerate affine")
    ornt = nib.orientations.io_orientation(matrix)
    if not np.isfinite(ornt).all() or sorted(ornt[:, 0].astype(int)) != [0, 1, 2]:
        raise error(f"{what}: its affine is degenerate, so the slice orientation is unknown")
    return matrix, ornt


def check_plane_size(shape: tuple[int, ...], ornt: np.ndarray, what: str,
                     error: type[LiverLesionError] = DataFormatError, *, max_side: Any = None) -> None:
    """Refuse a volume whose axial slices (the stored axes not running feet-head) exceed the side limit."""
    plane = [int(n) for axis, n in enumerate(shape[:3]) if int(ornt[axis, 0]) != 2]
    check_side(tuple(plane), what, error, max_side=max_side, source="header dims (axial slice)")
