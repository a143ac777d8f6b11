"""Slices in: every accepted kind (array, DICOM, NIfTI) becomes a checked :class:`SliceInput`.

:func:`load_slice` dispatches; ``array``, ``dicom`` and ``nifti`` read one kind each; ``hu``
checks the values all of them return. pydicom and nibabel are imported only when used.
"""

from .array import from_array
from .dicom import frame_count, read_dicom
from .hu import check_hu_array
from .load import ACCEPTED_INPUTS, load_slice
from .nifti import read_nifti_slice
from .slice import SliceInput

__all__ = ["ACCEPTED_INPUTS", "SliceInput", "check_hu_array", "frame_count", "from_array", "load_slice",
           "read_dicom", "read_nifti_slice"]
