"""Results out: DICOM SEG and TID 1500 SR (``dicom``), overlay PNGs (``overlay``), checked targets.

Each writer takes a :class:`~liverlesion.sdk.prediction.Prediction`; highdicom and matplotlib
are imported only when an object is written.
"""

from .dicom import save_dicom, to_dicom_seg, to_dicom_sr
from .overlay import write_overlay

__all__ = ["save_dicom", "to_dicom_seg", "to_dicom_sr", "write_overlay"]
