"""A whole series as a sorted list of slices, read one at a time: :func:`open_series` and :func:`find_series`.

A source is a folder of DICOM files, a list of paths or of pydicom Datasets, a NIfTI volume
or a 3-D HU array (slices, rows, cols) with its spacing. DICOM headers are read without
pixels (``discovery``) and one series is chosen; its geometry is checked once (same
orientation, pixel spacing and size; axial; no two slices at one position), its slices
sorted by position along the slice normal, and gaps and uneven spacing reported, never
interpolated. :meth:`SeriesSlices.read` then decodes one slice through the per-slice
reader (``inputs.dicom.read_dicom``, ``inputs.array.from_array``, or the NIfTI volume opened
with the series, ``inputs.nifti.open_nifti_volume``, which inflates a .nii.gz once), so the HU
of a whole series is never held at once.

Slice 0 is the one nearest the feet: positions are distances along the slice normal turned
to point feet -> head (+z in DICOM's LPS, +S in NIfTI's RAS), the order of a NIfTI volume's
``index`` in the per-slice reader.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from numbers import Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ... import input_limits
from ...errors import DataFormatError, DicomError, InputError, LiverLesionError
from ...grid import SPACING_RANGE_MM, Spacing, check_spacing
from ...input_limits import check_side, regular_file, side_limit
from ..geometry import (
    IDENTITY,
    MAX_TILT_DEG,
    ORIENTATION_TOLERANCE,
    Orientation,
    check_max_tilt,
    orientation_from_directions,
)
from ..inputs.dicom import numbers
from ..inputs.slice import SliceInput
from .discovery import (
    DicomHeader,
    Discovery,
    SeriesChoiceError,
    SeriesInfo,
    choose,
    discover_datasets,
    discover_folder,
    discover_paths,
    is_ct_image,
    plane_name,
    text,
)

if TYPE_CHECKING:
    from ..inputs.nifti import NiftiVolume

__all__ = ["GAP_FACTOR", "SeriesChoiceError", "SeriesInfo", "SeriesSlices", "SliceGap", "SliceReadError",
           "SliceRef", "find_series", "open_series"]

#: A spacing between neighbours above this times the median spacing is a gap (a missing slice).
GAP_FACTOR = 1.5
#: Two slices closer than this along the normal (mm) are at one position: refused.
DUPLICATE_POSITION_MM = 0.01
#: Pixel spacings of one series may differ by this much (mm): rounding of the decimal strings.
SPACING_TOLERANCE_MM = 1e-3
#: Neighbour spacings (gaps aside) that differ by more than this share of the median are reported as varying.
VARYING_SPACING_SHARE = 0.01
_ACCEPTED = ("a folder of DICOM files, a list of DICOM paths or of pydicom Datasets, a NIfTI volume (.nii, .nii.gz), "
             "or a 3-D numpy array of HU (slices, rows, cols) with spacing=(slice_mm, row_mm, col_mm)")


class SliceReadError(DataFormatError):
    """One slice of a series could not be read or decoded; ``index`` is its place in the sorted series."""

    def __init__(self, message: str, *, index: int, name: str) -> None:
        super().__init__(message)
        self.index = index
        self.name = name


@dataclass(frozen=True, eq=False)
class SliceRef:
    """Where slice ``k`` of a series lies and how to read it; holds no pixels.

    ``source``: the DICOM file's path, the Dataset given, the NIfTI volume's path, or the
    3-D array given (shared by every ref, not copied); ``index``: the slice in a NIfTI
    volume or array (None for DICOM); ``header``: the small header discovery read (DICOM).
    """

    source: Any
    sop_instance_uid: str | None
    position_mm: float
    name: str
    index: int | None = None
    header: Any = None

    def __repr__(self) -> str:
        return f"SliceRef({self.name!r}, position_mm={self.position_mm:.3f})"


@dataclass(frozen=True)
class SliceGap:
    """A gap after sorted slice ``after``: ``spacing_mm`` to the next, about ``missing`` slices missing."""

    after: int
    spacing_mm: float
    missing: int

    def to_dict(self) -> dict[str, Any]:
        return {"after": self.after, "spacing_mm": self.spacing_mm, "missing": self.missing}


@dataclass(frozen=True)
class ReadOptions:
    """How :meth:`SeriesSlices.read` reads each slice (the per-slice reader's keywords)."""

    max_tilt_deg: float = MAX_TILT_DEG
    allow_non_hu: bool = False
    max_side: int | None = None


@dataclass(frozen=True, eq=False)
class SeriesSlices:
    """One series, checked and sorted feet -> head; slices are decoded one at a time by :meth:`read`.

    Holds headers and positions only (and, for a NIfTI volume, its open file): slices may be
    read from several threads at once, in any order (e.g. the next batch while the current
    one is inferred). Close it, or use ``with``, to release a NIfTI volume's file and copy.
    """

    info: SeriesInfo
    refs: tuple[SliceRef, ...]
    #: Position of each slice along the normal (mm, increasing feet -> head).
    positions_mm: tuple[float, ...]
    #: Median spacing between neighbours (mm); a one-slice series' thickness.
    slice_spacing_mm: float
    #: In-plane pixel spacing (row_mm, col_mm), as stored.
    spacing_mm: Spacing
    #: (rows, cols) of every slice, as stored.
    shape: tuple[int, int]
    orientation: Orientation
    gaps: tuple[SliceGap, ...] = ()
    warnings: tuple[str, ...] = ()
    #: Files skipped while looking for the series (not DICOM, unreadable headers, DICOMDIR).
    skipped_files: int = 0
    options: ReadOptions = ReadOptions()
    #: The open NIfTI volume the slices are read from (NIfTI sources only); :meth:`close` closes it.
    volume: NiftiVolume | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.refs)

    def close(self) -> None:
        """Release what reading holds: a NIfTI volume's file and its inflated copy (nothing for DICOM, arrays)."""
        if self.volume is not None:
            self.volume.close()

    def __enter__(self) -> SeriesSlices:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        """(slice, row, col) spacing in mm: what a voxel of the series' label volume measures."""
        return self.slice_spacing_mm, self.spacing_mm[0], self.spacing_mm[1]

    @property
    def voxel_volume_ml(self) -> float:
        return self.slice_spacing_mm * self.spacing_mm[0] * self.spacing_mm[1] / 1000.0

    @property
    def sop_instance_uids(self) -> tuple[str | None, ...]:
        return tuple(ref.sop_instance_uid for ref in self.refs)

    def read(self, k: int) -> SliceInput:
        """Slice ``k`` (0 = feet) decoded and checked by the per-slice reader; SliceReadError names its file."""
        index = self._index(k)
        ref, opts = self.refs[index], self.options
        try:
            if self.info.kind == "array":
                from ..inputs.array import from_array

                slice_input = from_array(ref.source[ref.index], self.spacing_mm, allow_non_hu=opts.allow_non_hu,
                                         max_side=opts.max_side)
            elif self.info.kind == "nifti":
                if self.volume is None:  # a series built without its open volume: one read through the file
                    from ..inputs.nifti import read_nifti_slice

                    slice_input = read_nifti_slice(ref.source, ref.index, max_tilt_deg=opts.max_tilt_deg,
                                                   allow_non_hu=opts.allow_non_hu, max_side=opts.max_side)
                else:  # the volume opened, and its header checked, with the series
                    slice_input = self.volume.slice(ref.index)
            else:
                from ..inputs.dicom import read_dicom

                slice_input = read_dicom(ref.source, max_tilt_deg=opts.max_tilt_deg,
                                         allow_non_hu=opts.allow_non_hu, max_side=opts.max_side)
        except LiverLesionError as exc:
            raise SliceReadError(f"{self._where(index)}: {exc}", index=index, name=ref.name) from exc
        found = slice_input.source.get("sop_instance_uid")
        if slice_input.shape != self.shape or (ref.sop_instance_uid is not None and found != ref.sop_instance_uid):
            # the file was replaced between discovery and this read
            raise SliceReadError(f"{self._where(index)}: it now holds a {slice_input.shape[0]} x "
                                 f"{slice_input.shape[1]} image, SOP instance {found}, not the {self.shape[0]} x "
                                 f"{self.shape[1]} image {ref.sop_instance_uid} found when the series was opened; "
                                 "open the series again", index=index, name=ref.name)
        slice_input.source.update(series_index=index, position_mm=ref.position_mm,
                                  series_instance_uid=self.info.series_uid)
        return slice_input

    def iter_slices(self) -> Iterator[SliceInput]:
        """Every slice, feet -> head, each decoded when it is reached."""
        for k in range(len(self.refs)):
            yield self.read(k)

    def header(self, k: int) -> Any:
        """Slice ``k``'s whole DICOM header without its pixels (the Dataset itself when Datasets were given)."""
        index = self._index(k)
        ref = self.refs[index]
        if self.info.kind != "dicom":
            raise InputError(f"slice {index} of a {self.info.kind} source has no DICOM header; DICOM outputs need a "
                             "DICOM series")
        if not isinstance(ref.source, Path):
            return ref.source
        import pydicom

        try:
            return pydicom.dcmread(ref.source, stop_before_pixels=True)
        except Exception as exc:  # noqa: BLE001 - a file changed or removed since the series was opened
            raise SliceReadError(f"{self._where(index)}: its header could not be read again ({type(exc).__name__}: "
                                 f"{exc})", index=index, name=ref.name) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able geometry and provenance (no pixels, no headers)."""
        return {"info": self.info.to_dict(), "slices": len(self), "positions_mm": list(self.positions_mm),
                "slice_spacing_mm": self.slice_spacing_mm, "spacing_mm": list(self.spacing_mm),
                "shape": list(self.shape), "orientation": self.orientation.to_dict(),
                "gaps": [gap.to_dict() for gap in self.gaps], "warnings": list(self.warnings),
                "skipped_files": self.skipped_files,
                "sop_instance_uids": [ref.sop_instance_uid for ref in self.refs]}

    def _index(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self.refs):
            raise InputError(f"slice {k!r} is out of range; accepted: an integer 0..{len(self.refs) - 1} "
                             "(feet to head)")
        return int(k)

    def _where(self, index: int) -> str:
        uid = f" of series {self.info.series_uid}" if self.info.series_uid else ""
        return (f"slice {index} of {len(self.refs)}{uid} ({self.refs[index].name}, at "
                f"{self.positions_mm[index]:.2f} mm)")


# -- entry points ---------------------------------------------------------------------------------
def find_series(source: Any) -> list[SeriesInfo]:
    """Every series in ``source`` (UID, description, images, orientation, modality), from headers only."""
    kind, value = _classify(source)
    if kind == "array":
        return [_array_info(value)]
    if kind == "nifti":
        return [_nifti_info(value)]
    return list(_discover(kind, value).series)


def open_series(source: Any, *, series_uid: str | None = None, spacing: Sequence[float] | None = None,
                max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False,
                max_side: int | None = None) -> SeriesSlices:
    """One series of ``source``, checked and sorted; its slices are read later, one at a time.

    ``series_uid`` picks a series where the source holds several (else the only CT image
    series is taken, series without CT images skipped with a warning). ``spacing`` =
    (slice_mm, row_mm, col_mm) is for a 3-D array only. ``max_tilt_deg``, ``allow_non_hu``
    and ``max_side`` are the per-slice reader's, applied to every slice.
    """
    check_max_tilt(max_tilt_deg)
    if not isinstance(allow_non_hu, (bool, np.bool_)):
        raise InputError(f"allow_non_hu={allow_non_hu!r} is not accepted: give True or False")
    if max_side is not None:
        side_limit(max_side)
    options = ReadOptions(float(max_tilt_deg), bool(allow_non_hu), max_side)
    kind, value = _classify(source)
    if kind != "array" and spacing is not None:
        raise InputError("spacing= is for a 3-D array only; DICOM and NIfTI sources carry their own spacing")
    if kind in ("array", "nifti") and series_uid is not None:
        raise InputError(f"series_uid= picks a DICOM series; a {'NIfTI volume' if kind == 'nifti' else '3-D array'} "
                         "holds one series and no UID")
    if kind == "array":
        return _array_series(value, spacing, options)
    if kind == "nifti":
        return _nifti_series(value, options)
    found = _discover(kind, value)
    uid, members, warnings = choose(found, series_uid)
    skipped = found.skipped_summary()
    return _dicom_series(found, uid, members, [*warnings, *([skipped] if skipped else [])], options)


def _classify(source: Any) -> tuple[str, Any]:
    """("array" | "nifti" | "folder" | "paths" | "datasets", the source normalised)."""
    if isinstance(source, np.ndarray):
        return "array", source
    if isinstance(source, (str, os.PathLike)):
        path = Path(os.fspath(source))
        if path.is_dir():
            return "folder", path
        from ..inputs.nifti import is_nifti_path

        if is_nifti_path(path):
            return "nifti", regular_file(path, "an existing NIfTI volume (.nii or .nii.gz)")
        return "paths", [regular_file(path, _ACCEPTED)]
    import pydicom

    if isinstance(source, pydicom.Dataset):
        return "datasets", [source]
    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError(f"the list of slices is empty; accepted: {_ACCEPTED}")
        if all(isinstance(item, pydicom.Dataset) for item in source):
            return "datasets", list(source)
        if all(isinstance(item, (str, os.PathLike)) for item in source):
            return "paths", list(source)
        kinds = sorted({type(item).__name__ for item in source})
        raise InputError(f"a list of {', '.join(kinds)} is not a series; accepted: a list of DICOM paths or a list of "
                         "pydicom Datasets, not mixed")
    raise InputError(f"cannot read a series from a {type(source).__name__}; accepted: {_ACCEPTED}")


def _discover(kind: str, value: Any) -> Discovery:
    if kind == "folder":
        return discover_folder(value)
    if kind == "paths":
        return discover_paths(value)
    return discover_datasets(value)


# -- DICOM ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plane:
    """One image's geometry from its header."""

    orientation: np.ndarray  # the six direction cosines
    position: np.ndarray
    spacing: tuple[float, float]
    shape: tuple[int, int]
    frame_of_reference: str


def _value(header: Any, keyword: str, what: str) -> Any:
    try:
        return header.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily, and fails in many ways
        raise DicomError(f"{what}: its {keyword} cannot be read ({type(exc).__name__}: {str(exc)[:120]})") from None


def _plane(item: DicomHeader, uid: str) -> _Plane:
    """The geometry of one image of series ``uid``, or the DicomError saying why it cannot be placed."""
    header, what = item.header, item.name
    if not is_ct_image(header):
        raise DicomError(f"{what}: Modality {text(header, 'Modality') or '(none)'}, SOP class "
                         f"{text(header, 'SOPClassUID') or '(none)'} in series {uid}, which holds CT images; "
                         "accepted: a series of CT images only (Modality CT, a CT image storage class)")
    frames = _value(header, "NumberOfFrames", what)
    if frames not in (None, "", 1, "1"):
        raise DicomError(f"{what} is a multi-frame object ({frames} frames); accepted in a series: single-frame CT "
                         "images (read a multi-frame one frame at a time with load_slice(ds, frame=i))")
    note = ", which places the image in its series"
    orientation = numbers(_value(header, "ImageOrientationPatient", what), 6, what, "Image Orientation (Patient)",
                          note=note)
    position = numbers(_value(header, "ImagePositionPatient", what), 3, what, "Image Position (Patient)", note=note)
    spacing = numbers(_value(header, "PixelSpacing", what), 2, what, "Pixel Spacing", positive=True)
    shape = []
    for keyword in ("Rows", "Columns"):
        value = _value(header, keyword, what)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DicomError(f"{what}: {keyword} is {value!r:.40}; accepted: a positive integer")
        shape.append(value)
    return _Plane(np.asarray(orientation), np.asarray(position), (spacing[0], spacing[1]), (shape[0], shape[1]),
                  text(header, "FrameOfReferenceUID"))


def _check_same(planes: list[_Plane], members: list[DicomHeader], uid: str) -> None:
    """Refuse a series whose images differ in orientation, pixel spacing, size or frame of reference."""
    first, name = planes[0], members[0].name
    for plane, item in zip(planes[1:], members[1:]):
        if plane.shape != first.shape:
            raise DicomError(f"series {uid}: {item.name} is {plane.shape[0]} x {plane.shape[1]} pixels but {name} is "
                             f"{first.shape[0]} x {first.shape[1]}; accepted: a series of slices of one size")
        if np.abs(plane.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise DicomError(f"series {uid}: {item.name} has orientation {_numbers(plane.orientation)} but {name} "
                             f"has {_numbers(first.orientation)}; accepted: one orientation for every slice (within "
                             f"{ORIENTATION_TOLERANCE:g} per direction cosine)")
        if max(abs(a - b) for a, b in zip(plane.spacing, first.spacing)) > SPACING_TOLERANCE_MM:
            raise DicomError(f"series {uid}: {item.name} has pixel spacing {_numbers(plane.spacing)} mm but {name} "
                             f"has {_numbers(first.spacing)} mm; accepted: one pixel spacing for every slice")
        if plane.frame_of_reference != first.frame_of_reference:
            raise DicomError(f"series {uid}: {item.name} is in frame of reference "
                             f"{plane.frame_of_reference or '(none)'} but {name} in "
                             f"{first.frame_of_reference or '(none)'}; accepted: one frame of reference for a series")


def _numbers(values: Any) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _dicom_series(found: Discovery, uid: str, members: list[DicomHeader], warnings: list[str],
                  options: ReadOptions) -> SeriesSlices:
    planes = [_plane(item, uid) for item in members]
    _check_same(planes, members, uid)
    first = planes[0]
    what = f"series {uid}"
    check_side(first.shape, what, DicomError, max_side=options.max_side, source="Rows x Columns")
    row, col = first.orientation[:3], first.orientation[3:]
    orientation = orientation_from_directions(row, col, max_tilt_deg=options.max_tilt_deg, what=what,
                                              error=DicomError)
    try:
        spacing = check_spacing(first.spacing)
    except InputError as exc:
        raise DicomError(f"{what}: {exc}") from None
    normal = np.cross(row, col)
    normal = normal / np.linalg.norm(normal)
    if normal[2] < 0:  # point feet -> head (LPS +z), the way a NIfTI volume's index runs
        normal = -normal
    along = np.array([float(plane.position @ normal) for plane in planes])
    order = np.argsort(along, kind="stable")
    positions = along[order]
    sorted_members = [members[k] for k in order]
    _check_duplicates(positions, sorted_members, uid)
    offsets = np.array([planes[k].position for k in order]) - positions[:, None] * normal
    drift = float(np.linalg.norm(offsets - offsets[0], axis=1).max())
    if drift > 0.5 * min(spacing):
        warnings.append(f"{what}: slices are shifted in-plane by up to {drift:.2f} mm from the first (a gantry tilt or "
                        "a misplaced slice); they are stacked as stored, not resampled")
    slice_mm, gaps, notes = _spacing(positions, lambda: _thickness(sorted_members[0]), what)
    refs = tuple(SliceRef(item.source, text(item.header, "SOPInstanceUID") or None, float(z), item.name,
                          header=item.header) for item, z in zip(sorted_members, positions))
    info = next(info for key, info in zip(found.groups, found.series) if key == uid)
    return SeriesSlices(info, refs, tuple(float(z) for z in positions), slice_mm, spacing, first.shape, orientation,
                        gaps, tuple(warnings + notes), len(found.skipped), options)


def _check_duplicates(positions: np.ndarray, members: list[DicomHeader], uid: str) -> None:
    close = np.flatnonzero(np.diff(positions) < DUPLICATE_POSITION_MM)
    if close.size:
        k = int(close[0])
        raise DicomError(f"series {uid}: {members[k].name} and {members[k + 1].name} are both at {positions[k]:.3f} mm "
                         f"along the slice normal ({close.size} such pair(s)); accepted: one slice per position "
                         f"(at least {DUPLICATE_POSITION_MM} mm apart)")


def _thickness(item: DicomHeader) -> float:
    """A one-slice series' slice spacing: Spacing Between Slices, else Slice Thickness."""
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(_value(item.header, keyword, item.name))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    raise DicomError(f"{item.name} is the only slice of its series and records neither Spacing Between Slices nor "
                     "Slice Thickness, so its voxels have no depth; accepted: a one-slice series with either, or "
                     "more slices")


def _spacing(positions: np.ndarray, thickness: Any, what: str) -> tuple[float, tuple[SliceGap, ...], list[str]]:
    """(median spacing, gaps, notes): a gap is a step above GAP_FACTOR x the median; notes report the rest."""
    if len(positions) == 1:
        depth = float(thickness())
        return depth, (), [f"{what} has one slice: its voxels are taken as {depth:g} mm deep (its thickness)"]
    steps = np.diff(positions)
    median = float(np.median(steps))
    gaps = tuple(SliceGap(int(k), float(steps[k]), max(1, round(float(steps[k]) / median) - 1))
                 for k in np.flatnonzero(steps > GAP_FACTOR * median))
    notes = []
    if gaps:
        listed = ", ".join(f"after slice {g.after} ({g.spacing_mm:.2f} mm, ~{g.missing} missing)" for g in gaps[:5])
        notes.append(f"{what}: {len(gaps)} gap(s) in the slices (a step above {GAP_FACTOR:g} x the median "
                     f"{median:.3f} mm): {listed}{' ...' if len(gaps) > 5 else ''}; not interpolated")
    regular = np.delete(steps, [g.after for g in gaps])
    if regular.size and float(regular.max() - regular.min()) > VARYING_SPACING_SHARE * median:
        notes.append(f"{what}: slice spacing varies from {float(regular.min()):.3f} to {float(regular.max()):.3f} mm "
                     f"(median {median:.3f} mm, used for volumes)")
    return median, gaps, notes


# -- NIfTI ----------------------------------------------------------------------------------------
def _nifti_info(path: Path, volume: NiftiVolume | None = None) -> SeriesInfo:
    if volume is None:  # listing: the header only, any orientation described, none refused
        from ..inputs.nifti import open_nifti_volume

        with open_nifti_volume(path, max_tilt_deg=None) as listed:
            return _nifti_info(path, listed)
    return SeriesInfo(None, path.name, "", volume.count, plane_name(volume.direction_cosines), kind="nifti")


def _nifti_series(path: Path, options: ReadOptions) -> SeriesSlices:
    from ..inputs.nifti import open_nifti_volume

    volume = open_nifti_volume(path, max_tilt_deg=options.max_tilt_deg, allow_non_hu=options.allow_non_hu,
                               max_side=options.max_side)  # its header checked once; every slice read from it
    try:
        what = f"NIfTI volume {path}"
        positions = np.asarray(volume.positions_mm)
        slice_mm, gaps, notes = _spacing(positions, lambda: volume.slice_mm, what)
        refs = tuple(SliceRef(path, None, float(z), f"{path} slice {k}", index=k) for k, z in enumerate(positions))
        return SeriesSlices(_nifti_info(path, volume), refs, volume.positions_mm, slice_mm, volume.spacing_mm,
                            volume.shape, IDENTITY, gaps, tuple(notes), 0, options, volume)
    except BaseException:
        volume.close()
        raise


# -- 3-D array ------------------------------------------------------------------------------------
def _check_volume(volume: np.ndarray, max_side: int | None = None) -> None:
    if volume.ndim != 3:
        hint = " (one slice: use predict / load_slice)" if volume.ndim == 2 else ""
        raise InputError(f"an array series must be 3-D (slices, rows, cols), got shape {volume.shape}{hint}")
    if volume.dtype.kind not in "iuf":
        raise InputError(f"an array series of dtype {volume.dtype} is not HU; accepted: integer or floating-point HU")
    if min(volume.shape) < 1:
        raise InputError(f"the array series of shape {volume.shape} is empty; accepted: at least one slice of pixels")
    check_side(volume.shape[1:], "3-D array", max_side=max_side)
    if volume.shape[0] > input_limits.MAX_FRAMES:
        raise InputError(f"the array series has {volume.shape[0]} slices; accepted: at most {input_limits.MAX_FRAMES} "
                         "(liverlesion.input_limits.MAX_FRAMES)")


def _volume_spacing(spacing: Any) -> tuple[float, Spacing]:
    """(slice_mm, (row_mm, col_mm)) from spacing=(slice_mm, row_mm, col_mm), or InputError."""
    if spacing is None:
        raise InputError("a 3-D array needs its voxel spacing: pass spacing=(slice_mm, row_mm, col_mm)")
    if isinstance(spacing, (str, bytes, dict, set)) or not hasattr(spacing, "__len__") or len(spacing) != 3:
        raise InputError(f"spacing={spacing!r:.80} is not accepted for a 3-D array: give (slice_mm, row_mm, col_mm)")
    slice_mm, *in_plane = list(spacing)
    lo, hi = SPACING_RANGE_MM
    if not (isinstance(slice_mm, (Real, Decimal)) and not isinstance(slice_mm, (bool, np.bool_))
            and math.isfinite(float(slice_mm)) and lo <= float(slice_mm) <= hi):
        raise InputError(f"slice spacing {slice_mm!r:.40} is not plausible: give slice_mm between {lo} and {hi} mm")
    return float(slice_mm), check_spacing(in_plane)


def _array_info(volume: np.ndarray) -> SeriesInfo:
    _check_volume(volume)
    return SeriesInfo(None, "3-D array", "", int(volume.shape[0]), "axial", kind="array")


def _array_series(volume: np.ndarray, spacing: Any, options: ReadOptions) -> SeriesSlices:
    _check_volume(volume, options.max_side)
    slice_mm, in_plane = _volume_spacing(spacing)
    count = int(volume.shape[0])
    positions = tuple(k * slice_mm for k in range(count))
    notes = (f"3-D array has one slice: its voxels are taken as {slice_mm:g} mm deep",) if count == 1 else ()
    refs = tuple(SliceRef(volume, None, z, f"array slice {k}", index=k) for k, z in enumerate(positions))
    return SeriesSlices(_array_info(volume), refs, positions, slice_mm, in_plane,
                        (int(volume.shape[1]), int(volume.shape[2])), IDENTITY, (), notes, 0, options)
