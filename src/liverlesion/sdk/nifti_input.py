"""One axial slice of a NIfTI volume, in the LiTS reader's orientation.

The same convention as ``liverlesion.data.lits``, from the same nibabel functions
(``io_orientation``, ``apply_orientation``, ``voxel_sizes``): ``index`` counts axial
slices from the patient's feet to head, and the slice comes back in the radiological
view (rows anterior -> posterior, columns patient right -> left). Only that one slice
is read from disk, not the whole volume.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import DataFormatError, InputError, require
from ..grid import check_spacing
from ..input_limits import regular_file
from ..nifti_header import check_pixdims, check_plane_size, oriented_axes
from .slice_input import MAX_TILT_DEG, SliceInput, check_axial, check_hu_array

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike[str]) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def read_nifti_slice(path: str | os.PathLike[str], index: Any, *, max_tilt_deg: float = MAX_TILT_DEG,
                     allow_non_hu: bool = False, max_side: int | None = None) -> SliceInput:
    """Axial slice ``index`` (feet -> head) of a NIfTI volume as a :class:`SliceInput`.

    The header (pixdims, affine, size; ``input_limits.MAX_SIDE`` or ``max_side``) is checked
    before the slice is read; the values must be plausible HU unless ``allow_non_hu``.
    """
    nib = require("nibabel", "nifti", "reading NIfTI volumes")
    path = regular_file(path, "an existing NIfTI volume (.nii or .nii.gz)")
    what = f"NIfTI volume {path}"
    try:
        image = nib.load(str(path))
        shape = tuple(int(v) for v in image.shape)
        affine = image.affine
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for damaged headers
        raise DataFormatError(f"{path} is not a readable NIfTI volume ({type(exc).__name__}: {exc})") from None
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)) or min(shape) < 1:
        raise DataFormatError(f"{path}: volume shape {shape} is not 3D; accepted: a 3D CT volume in HU")
    check_pixdims(image, what)
    affine, ornt = oriented_axes(affine, what)  # per stored axis: (RAS axis it runs along, +1 / -1)
    check_plane_size(shape, ornt, what, max_side=max_side)
    slice_axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    plane = [a for a in range(3) if a != slice_axis]
    check_axial(affine[:3, plane[1]], affine[:3, plane[0]], max_tilt_deg=max_tilt_deg, what=what,
                error=DataFormatError, unit=False)
    zooms = nib.affines.voxel_sizes(affine)
    canonical_zooms = {int(ornt[a, 0]): float(zooms[a]) for a in plane}
    try:
        spacing = check_spacing((canonical_zooms[1], canonical_zooms[0]))
    except InputError as exc:
        raise DataFormatError(f"{what}: {exc} (read from the NIfTI affine)") from None
    count = shape[slice_axis]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise InputError(f"{what}: slice index {index!r} is out of range; accepted: an integer 0..{count - 1} "
                         "(feet to head)")
    selector: list[Any] = [slice(None)] * len(shape)
    selector[slice_axis] = int(index) if ornt[slice_axis, 1] > 0 else count - 1 - int(index)
    if len(shape) == 4:
        selector[3] = 0
    try:
        stored = np.asarray(image.dataobj[tuple(selector)])
    except Exception as exc:  # noqa: BLE001 - truncated gzip streams and short files fail here
        raise DataFormatError(f"{path}: slice {index} could not be read, the file may be truncated "
                              f"({type(exc).__name__}: {exc})") from None
    canonical = nib.orientations.apply_orientation(stored, ornt[plane])  # axes point R, A
    hu = check_hu_array(np.ascontiguousarray(canonical[::-1, ::-1].T), what, error=DataFormatError,
                        allow_non_hu=allow_non_hu, max_side=max_side)
    info = {"kind": "nifti", "path": str(path), "index": int(index), "slices": count}
    return SliceInput(hu=hu, spacing_mm=spacing, source=info)
