"""Which DICOM series a folder or a list holds: headers read without pixels, grouped by Series Instance UID.

Only the few attributes that place and describe an image are kept (:data:`HEADER_TAGS`,
about 8 KB per image instead of 90 KB for a whole CT header), so discovering a 2,000-slice
series costs headers, never pixels. A folder is walked recursively (DICOM media nest
PATIENT/STUDY/SERIES folders), without following links to folders; files without the Part 10
'DICM' marker, DICOMDIR files and DICOM files whose header cannot be parsed are skipped and
counted. A list names its files on purpose, so there each of those is refused instead.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DicomError, InputError
from ..geometry import MAX_TILT_DEG
from ..inputs.dicom import CT_STORAGE_CLASSES

#: Attributes discovery keeps per image: identity, description, geometry and what refuses an image early.
HEADER_TAGS = (
    "SpecificCharacterSet", "ImageType", "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "SeriesNumber", "SeriesDescription", "Modality", "InstanceNumber", "FrameOfReferenceUID",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "Rows", "Columns", "NumberOfFrames",
)
#: Media Storage Directory (DICOMDIR): an index of files, not an image; ignored.
DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: Skipped files named in a warning (the rest are counted).
NAMED_SKIPS = 3


class SeriesChoiceError(InputError):
    """The source holds no CT series to take, several of them and none chosen, or not the one asked for.

    ``series`` lists every series found (:class:`SeriesInfo`), as the message does.
    """

    def __init__(self, message: str, series: Sequence[SeriesInfo]) -> None:
        super().__init__(message)
        self.series = tuple(series)


@dataclass(frozen=True)
class SeriesInfo:
    """What identifies and describes one series (from its headers, or from a volume's file)."""

    series_uid: str | None
    description: str
    modality: str
    images: int
    #: "axial", "coronal", "sagittal", "oblique", "mixed" (images disagree) or "unknown" (no usable orientation).
    orientation: str
    series_number: int | None = None
    study_uid: str | None = None
    #: "dicom", "nifti" or "array".
    kind: str = "dicom"

    @property
    def is_ct(self) -> bool:
        return self.modality == "CT"

    def describe(self) -> str:
        """One line: UID, description, number of images, orientation, modality."""
        number = f" #{self.series_number}" if self.series_number is not None else ""
        uid = self.series_uid if self.series_uid else "(no Series Instance UID)"
        return (f"{uid}{number} '{self.description}': {self.images} image(s), {self.orientation}, "
                f"{self.modality or 'no modality'}")

    def to_dict(self) -> dict[str, Any]:
        return {"series_uid": self.series_uid, "description": self.description, "modality": self.modality,
                "images": self.images, "orientation": self.orientation, "series_number": self.series_number,
                "study_uid": self.study_uid, "kind": self.kind}


@dataclass(frozen=True, eq=False)
class DicomHeader:
    """One image as discovery found it: its file (or the Dataset given) and its small header."""

    source: Path | Any
    #: :data:`HEADER_TAGS` of the file (no pixels), or the Dataset itself when a Dataset was given.
    header: Any = field(repr=False)
    #: How messages name it: the file's path, or the Dataset's place in the list.
    name: str = ""


@dataclass(frozen=True)
class Discovery:
    """The images found, grouped by series (in listing order), and the files skipped with why."""

    groups: dict[str, list[DicomHeader]]
    series: tuple[SeriesInfo, ...]
    skipped: tuple[tuple[str, str], ...]
    #: What was searched, in words (for messages): "folder /x", "3 files", "2 datasets".
    where: str

    def skipped_summary(self) -> str | None:
        """A warning naming the first skipped files and counting the rest; None when none was skipped."""
        if not self.skipped:
            return None
        named = "; ".join(f"{name} ({why})" for name, why in self.skipped[:NAMED_SKIPS])
        more = f" and {len(self.skipped) - NAMED_SKIPS} more" if len(self.skipped) > NAMED_SKIPS else ""
        return f"{len(self.skipped)} file(s) in {self.where} skipped: {named}{more}"


def discover_folder(folder: Path) -> Discovery:
    """Every DICOM image under ``folder`` (recursive), grouped by series; non-DICOM files skipped, counted."""
    headers, skipped = [], []
    for path in _walk(folder):
        kind, value = _read_header(path)
        if kind == "image":
            headers.append(DicomHeader(path, value, str(path)))
        else:
            skipped.append((str(path), value))
    return _group(headers, tuple(skipped), f"folder {folder}")


def discover_paths(paths: Sequence[str | os.PathLike[str]]) -> Discovery:
    """The DICOM images at ``paths``, grouped by series; a path that is not one is refused, named."""
    from ...input_limits import regular_file

    headers = []
    for item in paths:
        path = regular_file(item, "a DICOM file (Part 10)")
        kind, value = _read_header(path)
        if kind != "image":
            raise DicomError(f"{path} is not a DICOM image that a series can hold: {value}; accepted: DICOM CT "
                             "images (Part 10 files)")
        headers.append(DicomHeader(path, value, str(path)))
    return _group(headers, (), f"{len(headers)} file(s)")


def discover_datasets(datasets: Sequence[Any]) -> Discovery:
    """The pydicom Datasets given, grouped by series (kept as given: no copy)."""
    headers = []
    for k, ds in enumerate(datasets):
        filename = getattr(ds, "filename", None)
        name = f"dataset {k} of the list" + (f" ({filename})" if isinstance(filename, str) and filename else "")
        headers.append(DicomHeader(ds, ds, name))
    return _group(headers, (), f"{len(headers)} dataset(s)")


def _walk(folder: Path) -> list[Path]:
    """Regular files under ``folder``, in sorted order; links to folders are not followed (no loops)."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            try:
                if stat.S_ISREG(path.stat().st_mode):  # a FIFO or device is never opened
                    found.append(path)
            except OSError:  # a dangling link, a file removed meanwhile
                continue
    return found


def _read_header(path: Path) -> tuple[str, Any]:
    """("image", small header) for a DICOM image, else ("skip", why)."""
    import pydicom

    try:
        with open(path, "rb") as handle:
            preamble = handle.read(132)
    except OSError as exc:
        return "skip", f"cannot be opened: {exc.strerror or exc}"
    if len(preamble) < 132 or preamble[128:132] != b"DICM":
        return "skip", "not a DICOM file: no 'DICM' marker after the 128-byte preamble"
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(HEADER_TAGS))
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt headers fail in many ways inside the parser
        return "skip", f"a DICOM header that cannot be parsed ({type(exc).__name__}: {str(exc)[:120]})"
    media_class = str(header.file_meta.get("MediaStorageSOPClassUID", ""))
    if media_class == DICOMDIR_CLASS or str(header.get("SOPClassUID", "")) == DICOMDIR_CLASS:
        return "skip", "a DICOMDIR (an index of files, not an image)"
    return "image", header


def text(header: Any, keyword: str) -> str:
    """A text attribute as a stripped string ('' where absent or unreadable)."""
    try:
        value = header.get(keyword)
    except Exception:  # noqa: BLE001 - a value pydicom cannot convert describes nothing
        return ""
    return "" if value is None else str(value).strip()


def _integer(header: Any, keyword: str) -> int | None:
    try:
        value = header.get(keyword)
        return None if value is None or value == "" else int(value)
    except Exception:  # noqa: BLE001 - only used to describe a series
        return None


def plane_name(orientation: Any, tolerance_deg: float = MAX_TILT_DEG) -> str:
    """"axial", "coronal", "sagittal" (normal within ``tolerance_deg`` of that axis), "oblique" or "unknown"."""
    try:
        values = [float(v) for v in orientation]
    except (TypeError, ValueError):
        return "unknown"
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        return "unknown"
    normal = np.cross(values[:3], values[3:])
    norm = float(np.linalg.norm(normal))
    if norm < 1e-6:
        return "unknown"
    axis = int(np.argmax(np.abs(normal)))
    angle = math.degrees(math.acos(min(1.0, abs(float(normal[axis])) / norm)))
    return ("sagittal", "coronal", "axial")[axis] if angle <= tolerance_deg else "oblique"


def _describe(uid: str, members: list[DicomHeader]) -> SeriesInfo:
    headers = [m.header for m in members]
    modalities = sorted({text(h, "Modality") for h in headers})
    planes = {plane_name(_orientation(h)) for h in headers}
    first = headers[0]
    return SeriesInfo(
        series_uid=uid or None, description=text(first, "SeriesDescription"),
        modality="+".join(m or "?" for m in modalities), images=len(members),
        orientation=planes.pop() if len(planes) == 1 else "mixed", series_number=_integer(first, "SeriesNumber"),
        study_uid=text(first, "StudyInstanceUID") or None, kind="dicom")


def _orientation(header: Any) -> Any:
    try:
        return header.get("ImageOrientationPatient")
    except Exception:  # noqa: BLE001
        return None


def _group(headers: list[DicomHeader], skipped: tuple[tuple[str, str], ...], where: str) -> Discovery:
    groups: dict[str, list[DicomHeader]] = {}
    for item in headers:
        groups.setdefault(text(item.header, "SeriesInstanceUID"), []).append(item)
    infos = {uid: _describe(uid, members) for uid, members in groups.items()}
    order = sorted(groups, key=lambda uid: (infos[uid].series_number is None, infos[uid].series_number or 0, uid))
    return Discovery({uid: groups[uid] for uid in order}, tuple(infos[uid] for uid in order), skipped, where)


def is_ct_image(header: Any) -> bool:
    """Modality CT and a CT image storage class (MR, SEG, SR, Secondary Capture are not)."""
    return text(header, "Modality") == "CT" and text(header, "SOPClassUID") in CT_STORAGE_CLASSES


def has_ct_images(members: Sequence[DicomHeader]) -> bool:
    """Some image of the series is a CT image (the rest are then refused when it is read, named)."""
    return any(is_ct_image(m.header) for m in members)


def _listing(series: Sequence[SeriesInfo]) -> str:
    return "".join(f"\n  - {info.describe()}" for info in series)


def choose(found: Discovery, series_uid: str | None) -> tuple[str, list[DicomHeader], list[str]]:
    """(UID, images, warnings) of the one series to read: ``series_uid``, or the only CT image series.

    Series without CT images (MR, SEG, SR, ...) are skipped when choosing, with a warning;
    several CT image series and none chosen is a :class:`SeriesChoiceError` listing every series.
    """
    if not found.groups:
        looked = f" ({len(found.skipped)} file(s) looked at, none a DICOM image)" if found.skipped else " (it is empty)"
        raise InputError(f"{found.where} holds no DICOM image{looked}; accepted: a folder, a list of files or a list "
                         "of Datasets holding a DICOM CT series (Part 10 files)")
    if series_uid is not None:
        if not isinstance(series_uid, str):
            raise InputError(f"series_uid={series_uid!r} is not accepted: give a Series Instance UID as a string")
        members = found.groups.get(series_uid.strip())
        if members is None:
            raise SeriesChoiceError(f"{found.where} holds no series {series_uid!r}; the series there are:"
                                    f"{_listing(found.series)}", found.series)
        return series_uid.strip(), members, []
    ct = [uid for uid, members in found.groups.items() if has_ct_images(members)]
    others = [info for uid, info in zip(found.groups, found.series) if uid not in ct]
    if len(ct) != 1:
        why = (f"no CT image series among its {len(found.series)} series" if not ct
               else f"{len(ct)} CT image series and none was chosen: pass series_uid= one of them")
        raise SeriesChoiceError(f"{found.where} holds {why}; the series there are:{_listing(found.series)}",
                                found.series)
    warnings = [f"series skipped (no CT images): {info.describe()}" for info in others]
    return ct[0], found.groups[ct[0]], warnings
