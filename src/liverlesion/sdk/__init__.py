"""The runtime an integrator embeds: slice in, liver, lesions, classes and measurements out.

:class:`LesionAnalyzer` runs it all: load a package once, then ``predict`` slices.
The path of one slice: :func:`load_slice` (array, DICOM or NIfTI -> :class:`SliceInput`),
``SliceInput.on_model_grid`` (HU on the model grid), a backend's ``infer``, then a
:class:`Postprocessor` (outputs -> :class:`Prediction` on the input grid). DICOM SEG/SR
and overlay images are written from a Prediction. Nothing here imports torch; pydicom,
highdicom, nibabel and matplotlib are imported only when used.
"""

from .analyzer import LesionAnalyzer
from .dicom_input import frame_count, read_dicom
from .dicom_output import save_dicom, to_dicom_seg, to_dicom_sr
from .inputs import ACCEPTED_INPUTS, from_array, load_slice
from .nifti_input import read_nifti_slice
from .overlay import write_overlay
from .postprocess import Postprocessor, postprocess
from .prediction import Lesion, Prediction
from .slice_input import MAX_TILT_DEG, Orientation, SliceInput, check_hu_array

__all__ = [
    "ACCEPTED_INPUTS", "MAX_TILT_DEG", "Lesion", "LesionAnalyzer", "Orientation", "Postprocessor",
    "Prediction", "SliceInput", "check_hu_array", "frame_count", "from_array", "load_slice", "postprocess",
    "read_dicom", "read_nifti_slice", "save_dicom", "to_dicom_seg", "to_dicom_sr", "write_overlay",
]
