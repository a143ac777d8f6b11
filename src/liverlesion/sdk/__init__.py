"""The runtime an integrator embeds: slice in, liver, lesions, classes and measurements out.

:class:`LesionAnalyzer` runs it all: load a package once, then ``predict`` slices.
The path of one slice: ``inputs`` (array, DICOM or NIfTI -> :class:`SliceInput`),
``geometry`` (HU on the model grid), a backend's ``infer``, then a :class:`Postprocessor`
(outputs -> :class:`Prediction`, mapped back by ``geometry``). ``outputs`` writes DICOM
SEG/SR and overlay images from a Prediction. Nothing here imports torch; pydicom,
highdicom, nibabel and matplotlib are imported only when used.
"""

from .analyzer import LesionAnalyzer
from .geometry import MAX_TILT_DEG, Orientation
from .inputs import (
    ACCEPTED_INPUTS,
    SliceInput,
    check_hu_array,
    frame_count,
    from_array,
    load_slice,
    read_dicom,
    read_nifti_slice,
)
from .outputs import save_dicom, to_dicom_seg, to_dicom_sr, write_overlay
from .postprocess import Postprocessor, postprocess
from .prediction import Lesion, Prediction

__all__ = [
    "ACCEPTED_INPUTS",
    "MAX_TILT_DEG",
    "Lesion",
    "LesionAnalyzer",
    "Orientation",
    "Postprocessor",
    "Prediction",
    "SliceInput",
    "check_hu_array",
    "frame_count",
    "from_array",
    "load_slice",
    "postprocess",
    "read_dicom",
    "read_nifti_slice",
    "save_dicom",
    "to_dicom_seg",
    "to_dicom_sr",
    "write_overlay",
]
