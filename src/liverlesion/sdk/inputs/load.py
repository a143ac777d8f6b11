"""Turn whatever a scanner-side caller has into a :class:`SliceInput`: the one entry of every input.

Accepted: a 2D numpy array in HU (with ``spacing`` or a ``default_spacing``); a
pydicom Dataset; a path to a DICOM file; a path to a NIfTI volume with ``index``;
or a SliceInput (returned unchanged).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from ..geometry import MAX_TILT_DEG, check_max_tilt
from .array import from_array
from .slice import SliceInput

ACCEPTED_INPUTS = ("a 2D numpy array of HU (with spacing=(row_mm, col_mm)), a pydicom Dataset, a path to a "
                   "DICOM file, or a path to a NIfTI volume (.nii, .nii.gz) with index=<slice>")


def load_slice(source: Any, *, spacing: Sequence[float] | None = None,
               default_spacing: Sequence[float] | None = None, index: int | None = None,
               frame: int | None = None, max_tilt_deg: float = MAX_TILT_DEG,
               allow_non_hu: bool = False, max_side: int | None = None) -> SliceInput:
    """Validate one slice of any accepted kind; every refusal is a LiverLesionError subclass.

    ``spacing`` is the array's pixel spacing (for DICOM, only a fallback when the file has
    none); ``default_spacing`` (the package's) is used for arrays given without one.
    ``index`` picks the axial slice of a NIfTI volume, ``frame`` the frame of a
    multi-frame DICOM object. ``allow_non_hu`` takes values that are not plausible CT HU
    (or a DICOM Rescale Type other than HU) as HU anyway; ``max_side`` overrides
    ``liverlesion.input_limits.MAX_SIDE`` (pixels per side) for this call.
    """
    if isinstance(source, SliceInput):
        return source
    check_max_tilt(max_tilt_deg)
    if not isinstance(allow_non_hu, (bool, np.bool_)):
        raise InputError(f"allow_non_hu={allow_non_hu!r} is not accepted: give True or False")
    allow = bool(allow_non_hu)
    if isinstance(source, np.ndarray):
        return from_array(source, spacing, default_spacing=default_spacing, allow_non_hu=allow, max_side=max_side)
    if isinstance(source, (str, os.PathLike)):
        from .nifti import is_nifti_path, read_nifti_slice

        if is_nifti_path(source):
            if index is None:
                raise InputError(f"{source} is a NIfTI volume: pass index=<slice> (0 = the slice nearest the feet)")
            return read_nifti_slice(source, index, max_tilt_deg=max_tilt_deg, allow_non_hu=allow,
                                    max_side=max_side)
        from .dicom import read_dicom

        return read_dicom(source, frame=frame, spacing=spacing, max_tilt_deg=max_tilt_deg,
                          allow_non_hu=allow, max_side=max_side)
    import pydicom

    if isinstance(source, pydicom.Dataset):
        from .dicom import read_dicom

        return read_dicom(source, frame=frame, spacing=spacing, max_tilt_deg=max_tilt_deg,
                          allow_non_hu=allow, max_side=max_side)
    raise InputError(f"cannot analyse a {type(source).__name__}; accepted: {ACCEPTED_INPUTS}")
