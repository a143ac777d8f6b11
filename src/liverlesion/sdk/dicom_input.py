"""One CT slice from DICOM: decoded pixels, modality LUT to HU, spacing and orientation checked.

Single-frame CT (CT Image Storage) and enhanced multi-frame CT (one frame at a time,
chosen with ``frame=``; geometry and rescale read from the functional groups) are
accepted. Compressed transfer syntaxes are decoded by pydicom's plugins; where none is
installed the error names the packages that would decode it.

MONOCHROME1 and MONOCHROME2 give the same HU: the modality LUT (rescale) defines HU,
and MONOCHROME1's inversion applies only to display, after the VOI LUT (PS3.3 C.7.6.3.1.2).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DicomError, InputError
from ..grid import check_spacing
from .slice_input import MAX_TILT_DEG, SliceInput, check_hu_array, orientation_from_directions

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
#: RescaleType values that mean "these are Hounsfield units" (absent means HU for CT).
_HU_RESCALE_TYPES = ("HU", "")


def frame_count(ds: Any) -> int:
    """Number of frames of a DICOM image (1 for a single-frame object)."""
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def _functional_item(ds: Any, frame: int, sequence: str) -> Any:
    """The item of functional-group ``sequence`` for ``frame`` (per-frame first, then shared), or None."""
    for groups, position in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is not None and len(items) > position:
            inner = items[position].get(sequence)
            if inner:
                return inner[0]
    return None


def _attribute(ds: Any, frame: int | None, sequence: str, keyword: str) -> Any:
    """A top-level attribute, or for an enhanced object the one in its functional groups."""
    if keyword in ds:
        return ds.get(keyword)
    item = _functional_item(ds, frame or 0, sequence)
    return None if item is None else item.get(keyword)


def _read_file(path: Path) -> Any:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not path.is_file():
        raise InputError(f"{path}: no such file; give a DICOM file, a NIfTI volume, a pydicom Dataset or an array")
    try:
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise DicomError(f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble); accepted: "
                         "DICOM CT images (Part 10 files) or NIfTI volumes (.nii, .nii.gz)") from None
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt files fail in many ways inside the parser
        raise DicomError(f"{path}: the DICOM file could not be parsed, it may be truncated or corrupt "
                         f"({type(exc).__name__}: {exc})") from None


def _decoder_check(ds: Any, what: str) -> str:
    """The transfer syntax's name, after checking that some installed plugin decodes it."""
    from pydicom.pixels import get_decoder

    meta = getattr(ds, "file_meta", None)
    syntax = None if meta is None else meta.get("TransferSyntaxUID")
    if syntax is None:
        raise DicomError(f"{what} has no (0002,0010) Transfer Syntax UID in its file meta, so its pixel data "
                         "cannot be decoded; set ds.file_meta.TransferSyntaxUID")
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise DicomError(f"{what}: pixel data in transfer syntax {syntax.name} ({syntax}) cannot be decoded by "
                         "pydicom; accepted: uncompressed, RLE, JPEG, JPEG-LS and JPEG 2000 syntaxes") from None
    if not decoder.is_available:
        options = "; or ".join(dep.split(" - requires ", 1)[-1] for dep in decoder.missing_dependencies)
        raise DicomError(
            f"{what}: its pixel data is compressed as {syntax.name} and no installed pydicom plugin decodes it; "
            f"install {options} (pip install 'liverlesion[dicom]' installs pylibjpeg and "
            "pylibjpeg-openjpeg, the JPEG 2000 decoders)"
        )
    return str(syntax.name)


def _to_hu(ds: Any, pixels: np.ndarray, frame: int | None, what: str, allow_non_hu: bool) -> np.ndarray:
    """Apply the modality LUT (rescale slope/intercept or LUT), from the functional groups if enhanced."""
    from pydicom.pixels import apply_modality_lut

    source = ds
    if "RescaleSlope" not in ds and "ModalityLUTSequence" not in ds:
        item = _functional_item(ds, frame or 0, "PixelValueTransformationSequence")
        source = ds if item is None else item
    rescale_type = str(source.get("RescaleType", "") or "").strip().upper()
    if rescale_type not in _HU_RESCALE_TYPES and not allow_non_hu:
        kind = "\\".join(str(v) for v in (ds.get("ImageType") or []))
        raise DicomError(
            f"{what}: Rescale Type is {rescale_type!r}, so its values are not Hounsfield units (Image Type "
            f"{kind or '?'}); accepted: CT images rescaled to HU (pass allow_non_hu=True to use them as HU anyway)"
        )
    try:
        return np.asarray(apply_modality_lut(pixels, source), dtype=np.float32)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # a malformed LUT or rescale
        raise DicomError(f"{what}: the modality LUT / rescale could not be applied ({exc})") from None


def read_dicom(source: Any, *, frame: int | None = None, spacing: Any = None,
               max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False) -> SliceInput:
    """A CT slice from a pydicom Dataset or a DICOM file path.

    ``frame`` picks one frame of a multi-frame object (0-based; required there).
    ``spacing`` is used only when the object records no pixel spacing.
    """
    import pydicom

    path = None
    if isinstance(source, pydicom.Dataset):
        ds = source
        filename = getattr(ds, "filename", None)
        what = f"DICOM file {filename}" if isinstance(filename, str) and filename else "DICOM dataset"
    else:
        path = Path(os.fspath(source))
        ds = _read_file(path)
        what = f"DICOM file {path}"

    modality = ds.get("Modality")
    if modality != "CT":
        raise DicomError(f"{what}: modality is {modality!r}; accepted: CT images (Modality 'CT')")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomError(f"{what} has no pixel data (it may be a header-only or non-image object); "
                         "accepted: CT images with pixel data")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "") or "")
    if samples != 1 or photometric not in _MONOCHROME:
        raise DicomError(f"{what}: photometric interpretation {photometric!r} with {samples} sample(s) per pixel "
                         f"is not a grayscale CT image; accepted: {' or '.join(_MONOCHROME)}")

    frames = frame_count(ds)
    if frames > 1 and frame is None:
        raise DicomError(f"{what} is a multi-frame object with {frames} frames; pass frame=<0..{frames - 1}> "
                         "to pick the slice to analyse")
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer))
                              or not 0 <= frame < frames):
        raise InputError(f"{what}: frame={frame!r} is out of range; accepted: an integer 0..{frames - 1}")

    # Geometry first: refusing a coronal or MR object should not cost a decode.
    orient = _attribute(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    if orient is None or len(orient) != 6:
        raise DicomError(f"{what} has no usable Image Orientation (Patient), so it cannot be checked to be "
                         "axial; accepted: CT images with ImageOrientationPatient")
    orientation = orientation_from_directions(orient[:3], orient[3:], max_tilt_deg=max_tilt_deg, what=what,
                                              error=DicomError)
    recorded = _attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing")
    if recorded is None and spacing is None:
        raise DicomError(f"{what} records no Pixel Spacing; pass spacing=(row_mm, col_mm)")
    try:
        spacing_mm = check_spacing(recorded if recorded is not None else spacing)
    except InputError as exc:
        raise DicomError(f"{what}: {exc}") from None

    syntax = _decoder_check(ds, what)
    from pydicom.pixels import pixel_array

    try:
        pixels = pixel_array(ds, index=frame if frames > 1 else None)
    except Exception as exc:  # noqa: BLE001 - truncated data and decoder failures take many forms
        raise DicomError(f"{what}: pixel data could not be decoded ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or corrupt") from None
    rows, cols = ds.get("Rows"), ds.get("Columns")
    if pixels.shape != (rows, cols):
        raise DicomError(f"{what}: decoded pixels have shape {pixels.shape}, expected (Rows, Columns) = "
                         f"({rows}, {cols})")
    hu = check_hu_array(_to_hu(ds, pixels, frame, what, allow_non_hu), what, error=DicomError)

    position = _attribute(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    info: dict[str, Any] = {
        "kind": "dicom",
        "path": str(path) if path is not None else None,
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "frame": frame if frames > 1 else None,
        "frames": frames,
        "transfer_syntax": syntax,
        "photometric_interpretation": photometric,
        "image_orientation_patient": [float(v) for v in orient],
        "image_position_patient": None if position is None else [float(v) for v in position],
    }
    return SliceInput(hu=hu, spacing_mm=spacing_mm, orientation=orientation, source=info, dataset=ds)
