"""One axial slice of a NIfTI volume, in the LiTS reader's orientation.

The same convention as ``liverlesion.data.lits``, from the same nibabel functions
(``io_orientation``, ``apply_orientation``, ``voxel_sizes``): ``index`` counts axial
slices from the patient's feet to head, and the slice comes back in the radiological
view (rows anterior -> posterior, columns patient right -> left). Only that one slice
is kept, never the whole volume: where the feet-head axis is the file's slowest axis
(the usual layout) the slice is one contiguous read; otherwise its voxels are scattered
through the whole file, which is read in blocks of at most
:data:`liverlesion.input_limits.NIFTI_READ_BYTES` through one open file (a .nii.gz is
then inflated once, front to back, as any read of it must).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ... import input_limits
from ...errors import DataFormatError, InputError, require
from ...grid import check_spacing
from ...input_limits import regular_file
from ...nifti_header import check_pixdims, check_plane_size, oriented_axes
from ..geometry import MAX_TILT_DEG, check_axial
from .hu import check_hu_array
from .slice import SliceInput

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
    try:  # one open file for every block read: a .nii.gz is then inflated once, not once per block
        image = nib.load(str(path), keep_file_open=True)
        shape = tuple(int(v) for v in image.shape)
        affine = image.affine
        dtype = image.header.get_data_dtype()
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds for damaged headers
        raise DataFormatError(f"{path} is not a readable NIfTI volume ({type(exc).__name__}: {exc})") from None
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] == 1)) or min(shape) < 1:
        raise DataFormatError(f"{path}: volume shape {shape} is not 3D; accepted: a 3D CT volume in HU")
    if dtype.kind not in "iuf" or dtype.itemsize > 8:
        raise DataFormatError(f"{path}: its voxels are of type {dtype}, which is not HU; accepted: integer or "
                              "floating-point voxels of at most 8 bytes")
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
    if count > input_limits.MAX_FRAMES:
        raise DataFormatError(f"{what}: its header claims {count} axial slices; accepted: at most "
                              f"{input_limits.MAX_FRAMES} (liverlesion.input_limits.MAX_FRAMES)")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < count:
        raise InputError(f"{what}: slice index {index!r} is out of range; accepted: an integer 0..{count - 1} "
                         "(feet to head)")
    stored_index = int(index) if ornt[slice_axis, 1] > 0 else count - 1 - int(index)
    try:
        stored = _read_slice(image.dataobj, shape[:3], slice_axis, stored_index, len(shape) == 4)
    except Exception as exc:  # noqa: BLE001 - truncated gzip streams and short files fail here
        raise DataFormatError(f"{path}: slice {index} could not be read, the file may be truncated "
                              f"({type(exc).__name__}: {exc})") from None
    finally:
        del image  # closes the file kept open for the block reads
    canonical = nib.orientations.apply_orientation(stored, ornt[plane])  # axes point R, A
    hu = check_hu_array(np.ascontiguousarray(canonical[::-1, ::-1].T), what, error=DataFormatError,
                        allow_non_hu=allow_non_hu, max_side=max_side)
    info = {"kind": "nifti", "path": str(path), "index": int(index), "slices": count}
    return SliceInput(hu=hu, spacing_mm=spacing, source=info)


def _read_slice(dataobj: Any, shape: tuple[int, ...], axis: int, index: int, four_d: bool) -> np.ndarray:
    """Stored slice ``index`` along stored ``axis`` (the other two axes in stored order), read in bounded blocks.

    The file holds voxels axis 0 fastest. Along axis 2 the slice is one contiguous read; along
    axis 1 or 0 each block read spans at most ``NIFTI_READ_BYTES`` (as read, and as scaled to
    float64 where the header scales), in file order.
    """
    n0, n1, n2 = shape
    tail: tuple[int, ...] = (0,) if four_d else ()

    def read(*key: Any) -> np.ndarray:
        return np.asarray(dataobj[key + tail])

    budget = input_limits.NIFTI_READ_BYTES
    scaled = float(dataobj.slope) != 1.0 or float(dataobj.inter) != 0.0
    itemsize = 8 if scaled else dataobj.dtype.itemsize
    if axis == 2:
        return read(slice(None), slice(None), index)
    plane = n0 * n1 * itemsize  # the bytes of one index along axis 2
    if plane <= budget:  # blocks of whole planes; keep the slice's part of each
        step = max(1, budget // plane)
        parts = []
        for k in range(0, n2, step):
            ks = slice(k, min(k + step, n2))
            if axis == 1:  # each plane holds one contiguous run of the slice: nibabel reads just the runs
                parts.append(read(slice(None), index, ks))
            else:
                parts.append(read(slice(None), slice(None), ks)[index].copy())  # not a view
        return np.concatenate(parts, axis=1)
    if axis == 1:  # a plane beyond the budget: one run of n0 voxels per plane
        return np.stack([read(slice(None), index, k) for k in range(n2)], axis=1)
    rows = max(1, budget // (n0 * itemsize))  # axis 0: blocks of rows within each plane
    columns = []
    for k in range(n2):
        runs = [read(slice(None), slice(j, min(j + rows, n1)), k)[index].copy()
                for j in range(0, n1, rows)]
        columns.append(np.concatenate(runs))
    return np.stack(columns, axis=1)
