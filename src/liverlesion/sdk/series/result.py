"""What ``predict_series`` returns: the series' label volume, its 3D lesions, a summary per slice, and its outputs.

The label volume is (slices, rows, cols) uint8 in the series' order (slice 0 nearest the feet)
and each slice on its own stored grid, as the per-slice reader returns it: DICOM rows and
columns as stored, NIfTI slices in the radiological view (``inputs.nifti``). DICOM SEG and SR
reference the series' instances through their headers (``SeriesSlices.header``, no pixels).
"""

from __future__ import annotations

import gzip
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, require
from .lesions3d import Lesion3D, SeriesMeasurements
from .source import SeriesSlices

__all__ = ["SeriesPrediction", "SliceSummary", "json_safe", "nifti_compressed"]

#: The three LPS <-> RAS axis signs: DICOM's patient axes point left and posterior, NIfTI's right and anterior.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinite floats as None, numpy scalars as Python ones, tuples as lists."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def nifti_compressed(path: str | os.PathLike[str], what: str) -> bool:
    """Whether the NIfTI file name ``path`` is gzipped (.nii.gz) or not (.nii); any other name is refused."""
    name = os.fspath(path).lower()
    if not name.endswith((".nii", ".nii.gz")):
        raise InputError(f"{what}: {os.fspath(path)} is not a NIfTI file name; accepted: a name ending .nii or .nii.gz")
    return name.endswith(".gz")


@dataclass(frozen=True)
class SliceSummary:
    """What is kept of one slice's Prediction once its labels are in the volume."""

    index: int
    sop_instance_uid: str | None
    position_mm: float
    name: str
    slice_class: str | None
    slice_class_probability: float | None
    #: the 2-D lesions as ``Lesion.to_dict`` writes them (id, label, probability, area, bbox, axes ...)
    lesions: tuple[dict[str, Any], ...]
    liver_pixels: int
    lesion_pixels: int

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "sop_instance_uid": self.sop_instance_uid, "position_mm": self.position_mm,
                "name": self.name, "slice_class": self.slice_class,
                "slice_class_probability": self.slice_class_probability, "lesions": list(self.lesions),
                "liver_pixels": self.liver_pixels, "lesion_pixels": self.lesion_pixels}


@dataclass(eq=False)
class SeriesPrediction:
    """One series' result: labels (``labels.TARGET_LABELS``) and 3D lesion ids per voxel, measurements, per-slice
    summaries, timings (ms totals per stage, wall seconds, slices/s, batch size) and what ran it."""

    series: SeriesSlices = field(repr=False)
    labels: np.ndarray = field(repr=False)
    #: 0 = no lesion, k = ``measurements.lesions[k-1]`` (``measure_series``)
    lesion_ids: np.ndarray = field(repr=False)
    measurements: SeriesMeasurements
    slices: tuple[SliceSummary, ...] = field(repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)
    backend: str = ""
    precision: str = ""
    model: dict[str, str] = field(default_factory=dict)
    _sources: list[Any] | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def lesions(self) -> tuple[Lesion3D, ...]:
        return self.measurements.lesions

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: the series (UID, geometry, gaps, warnings), measurements, slices, timings; no voxels."""
        return json_safe({
            "series": self.series.to_dict(), "measurements": self.measurements.to_dict(),
            "slices": [s.to_dict() for s in self.slices], "timings": dict(self.timings),
            "backend": self.backend, "precision": self.precision, "model": dict(self.model),
            "shape": list(self.labels.shape), "voxel_mm": list(self.series.voxel_mm),
        })

    def summary(self) -> list[str]:
        """Lines for logs and the CLI: each 3D lesion, then the liver volume and the lesion burden."""
        lines = []
        for x in self.lesions:
            lines.append(f"lesion {x.id}: {x.label} (p {x.probability:.2f}), {x.volume_ml:.2f} mL, long axis "
                         f"{x.axes.long_mm:.1f} mm, short axis {x.axes.short_mm:.1f} mm, slices {x.first_slice}-"
                         f"{x.last_slice} (largest {x.largest_slice})")
        m = self.measurements
        lines.append(f"{len(self.lesions)} lesion(s), {m.lesion_volume_ml:.2f} mL; liver {m.liver_volume_ml:.1f} mL; "
                     f"burden {100.0 * m.burden:.2f}%")
        return lines

    # -- DICOM ---------------------------------------------------------------------------------------
    def sources(self) -> list[Any]:
        """The series' DICOM headers (no pixels) in slice order, read once and kept for the SEG and SR."""
        with self._lock:
            if self._sources is None:
                self._sources = [self.series.header(k) for k in range(len(self.series))]
            return self._sources

    def to_dicom_seg(self, **options: Any) -> Any:
        """One multi-frame DICOM SEG of the series (``outputs.series_dicom.series_to_dicom_seg``; its options)."""
        from ..outputs.series_dicom import series_to_dicom_seg

        options = {"model": self.model, "backend": self.backend, "precision": self.precision, **options}
        return series_to_dicom_seg(self.labels, self.lesion_ids, self.measurements, self.sources(), **options)

    def to_dicom_sr(self, seg: Any, **options: Any) -> Any:
        """A TID 1500 SR of the series referencing ``seg`` (``outputs.series_dicom.series_to_dicom_sr``)."""
        from ..outputs.series_dicom import series_to_dicom_sr

        options = {"model": self.model, **options}
        return series_to_dicom_sr(self.measurements, self.sources(), seg, **options)

    # -- NIfTI ---------------------------------------------------------------------------------------
    def to_nifti_image(self) -> Any:
        """The label volume as a nibabel image: on the source's own voxels and affine for a NIfTI input, else
        (x, y, z) = (col, row, slice) with the affine of the DICOM geometry (or of the array's spacing)."""
        nib = require("nibabel", "nifti", "writing NIfTI volumes")
        kind = self.series.info.kind
        if kind == "nifti":
            data, affine = self._nifti_layout(nib)
        else:
            data = np.ascontiguousarray(self.labels.transpose(2, 1, 0))
            affine = self._dicom_affine() if kind == "dicom" else self._array_affine()
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm")
        image.header.set_intent("label", name="liverlesion")
        return image

    def to_nifti(self, path: str | os.PathLike[str]) -> Path:
        """Write the label volume as NIfTI (.nii, or gzipped .nii.gz), atomically; returns the path."""
        from ...atomic import atomic_write_bytes
        from ..outputs.targets import check_file

        target = check_file(path, "to_nifti")
        data = self.to_nifti_bytes(compressed=nifti_compressed(target, "to_nifti"))
        try:
            atomic_write_bytes(target, data)
        except OSError as exc:
            raise InputError(f"to_nifti: cannot write {target} ({exc.strerror or exc})") from None
        return target

    def to_nifti_bytes(self, *, compressed: bool = False) -> bytes:
        """The label volume as the bytes of a .nii file (gzipped, as a .nii.gz holds them, when ``compressed``)."""
        data = self.to_nifti_image().to_bytes()
        return gzip.compress(data, compresslevel=6, mtime=0) if compressed else data

    def _nifti_layout(self, nib: Any) -> tuple[np.ndarray, np.ndarray]:
        """The labels in the source NIfTI's stored voxel order, and its affine (undoing ``inputs.nifti``'s view)."""
        from ...nifti_header import oriented_axes

        path = self.series.refs[0].source
        image = nib.load(str(path))
        affine, ornt = oriented_axes(image.affine, f"NIfTI volume {path}")
        # inputs.nifti: slice = canonical[::-1, ::-1].T with canonical axes (R, A); slices run feet -> head (S)
        canonical = self.labels.transpose(2, 1, 0)[::-1, ::-1, :]
        ras = nib.orientations.axcodes2ornt(("R", "A", "S"))
        stored = nib.orientations.apply_orientation(canonical, nib.orientations.ornt_transform(ras, ornt))
        if stored.shape != tuple(image.shape[:3]):
            raise InputError(f"to_nifti: the labels {self.labels.shape} do not fit the source volume {image.shape}")
        return np.ascontiguousarray(stored), affine

    def _dicom_affine(self) -> np.ndarray:
        """RAS affine of voxel (col, row, slice): the first slice's position, the orientation and spacings.

        Slices step by the median spacing along the normal (feet -> head); gaps the series
        reported are not in it (``series.gaps``).
        """
        first = self.series.header(0)
        orientation = np.asarray([float(v) for v in first.ImageOrientationPatient])
        position = np.asarray([float(v) for v in first.ImagePositionPatient])
        row_dir, col_dir = orientation[:3], orientation[3:]  # along a row (columns increase), along a column
        normal = np.cross(row_dir, col_dir)
        normal = normal / np.linalg.norm(normal) * (1.0 if normal[2] >= 0 else -1.0)  # as the series sorts
        row_mm, col_mm = self.series.spacing_mm
        lps = np.eye(4)
        lps[:3, 0] = row_dir * col_mm
        lps[:3, 1] = col_dir * row_mm
        lps[:3, 2] = normal * self.series.slice_spacing_mm
        lps[:3, 3] = position
        affine = np.eye(4)
        affine[:3, :] = _LPS_TO_RAS @ lps[:3, :]
        return affine

    def _array_affine(self) -> np.ndarray:
        """An array's voxels in the radiological view: columns run to the left, rows to the back, slices up."""
        row_mm, col_mm = self.series.spacing_mm
        return np.diag([-col_mm, -row_mm, self.series.slice_spacing_mm, 1.0])

    def __repr__(self) -> str:
        uid = self.series.info.series_uid or self.series.info.description
        return (f"SeriesPrediction(series={uid!r}, slices={len(self.series)}, lesions={len(self.lesions)}, "
                f"backend={self.backend!r}, precision={self.precision!r})")
