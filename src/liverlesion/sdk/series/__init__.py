"""Whole series: reading a DICOM folder or a volume slice by slice, 3D lesions, series outputs.

``source`` opens a series (:func:`open_series`, :func:`find_series`) and reads it one slice at a
time; ``lesions3d`` joins and measures lesions across slices (:func:`measure_series`). The names
below are imported on first use (PEP 562): importing the package loads none of its modules.
"""

from __future__ import annotations

from ...lazy import lazy_exports

#: Names importable from here, and the module each lives in.
_LAZY = {
    "SeriesChoiceError": "liverlesion.sdk.series.discovery",
    "SeriesInfo": "liverlesion.sdk.series.discovery",
    "SeriesSlices": "liverlesion.sdk.series.source",
    "SliceReadError": "liverlesion.sdk.series.source",
    "find_series": "liverlesion.sdk.series.source",
    "open_series": "liverlesion.sdk.series.source",
    "AxialDiameters": "liverlesion.sdk.diameters",
    "Lesion3D": "liverlesion.sdk.series.lesions3d",
    "SeriesMeasurements": "liverlesion.sdk.series.lesions3d",
    "measure_series": "liverlesion.sdk.series.lesions3d",
}
__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
