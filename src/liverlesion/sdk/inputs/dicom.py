"""One CT slice from DICOM: decoded pixels, modality LUT to HU, spacing and orientation checked.

Accepted SOP classes: CT Image Storage, Enhanced CT Image Storage and Legacy Converted
Enhanced CT Image Storage. Secondary Capture is refused even with Modality CT: its IODs
require neither geometry nor a rescale to HU, and its pixels are often a rendered,
windowed screen. Single-frame CT and enhanced multi-frame CT (one frame at a time,
chosen with ``frame=``; geometry and rescale read from the functional groups) are
read. Compressed transfer syntaxes are decoded by pydicom's plugins; where none is
installed the error names the packages that would decode it.

Everything that bounds or defines the pixels is checked from the header before the
decode: Rows / Columns (:data:`liverlesion.input_limits.MAX_SIDE`), Bits Allocated 16,
Bits Stored / High Bit / Pixel Representation, Number of Frames, and a rescale to HU
(Rescale Intercept and Slope are Type 1 in the CT Image module; a CT's lie within
:data:`RESCALE_SLOPE_RANGE` and :data:`MAX_RESCALE_INTERCEPT`). The decoded values must
fit Bits Stored, and the HU must be plausible (``inputs.hu.check_hu_array``).

A file is read by pydicom whole, as stored (its compressed bytes are the file's own
size; they are decoded only after the checks). Deflated Explicit VR Little Endian is
the exception, since pydicom inflates all of it before any attribute can be read: its
file meta is read first and the rest inflated as a stream, refused beyond
``input_limits.deflate_limit`` (one 16-bit frame at the side limit plus
``DEFLATE_HEADER_BYTES``), so a 1 MB file cannot claim gigabytes.

MONOCHROME1 and MONOCHROME2 give the same HU: the modality LUT (rescale) defines HU,
and MONOCHROME1's inversion applies only to display, after the VOI LUT (PS3.3 C.7.6.3.1.2).
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from ... import input_limits
from ...errors import DicomError, InputError, install_hint
from ...grid import check_spacing
from ...input_limits import check_side, deflate_limit, regular_file
from ..geometry import MAX_TILT_DEG, orientation_from_directions
from .hu import check_hu_array
from .slice import SliceInput

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
#: RescaleType values that mean "these are Hounsfield units" (absent means HU for CT).
_HU_RESCALE_TYPES = ("HU", "")
#: The image storage SOP classes that are CT, by UID.
CT_STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
}
#: Those whose geometry and rescale live in functional groups.
_ENHANCED = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
_ACCEPTED_FILES = "a DICOM file, a NIfTI volume (.nii, .nii.gz), a pydicom Dataset or an array"
#: Rescale Slope of a CT: stored values are HU (slope 1) or finer / coarser steps of them. A slope outside
#: this range (1e-30 makes every pixel the intercept) does not give HU.
RESCALE_SLOPE_RANGE = (0.01, 100.0)
#: Largest |Rescale Intercept| of a CT (HU): -1024 and 0 are usual, -8192 on extended-scale data.
MAX_RESCALE_INTERCEPT = 8192.0


def frame_count(ds: Any, what: str = "DICOM dataset") -> int:
    """Number of Frames of a DICOM image (1 where absent), checked: 1..``input_limits.MAX_FRAMES``."""
    frames = _integer(ds, "NumberOfFrames", what, default=1)
    limit = input_limits.MAX_FRAMES
    if not 1 <= frames <= limit:
        raise DicomError(f"{what}: Number of Frames is {frames}; accepted: 1..{limit} "
                         "(liverlesion.input_limits.MAX_FRAMES)")
    return frames


def _get(ds: Any, keyword: str, what: str) -> Any:
    """``ds.get(keyword)``; a value pydicom cannot convert (wrong length, bad text) is a DicomError."""
    try:
        return ds.get(keyword)
    except Exception as exc:  # noqa: BLE001 - pydicom converts values lazily, and fails in many ways
        raise DicomError(f"{what}: its {keyword} cannot be read ({type(exc).__name__}: {str(exc)[:160]}); accepted: "
                         f"a {keyword} of the VR and length PS3.6 gives") from None


def functional_item(ds: Any, frame: int, sequence: str, what: str = "DICOM dataset") -> Any:
    """The item of functional-group ``sequence`` for ``frame`` (per-frame first, then shared), or None."""
    for groups, position in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        items = _get(ds, groups, what)
        if items is not None and len(items) > position:
            inner = _get(items[position], sequence, what)
            if inner:
                return inner[0]
    return None


def _attribute(ds: Any, frame: int | None, sequence: str, keyword: str, what: str = "DICOM dataset") -> Any:
    """A top-level attribute, or for an enhanced object the one in its functional groups."""
    if keyword in ds:
        return _get(ds, keyword, what)
    item = functional_item(ds, frame or 0, sequence, what)
    return None if item is None else _get(item, keyword, what)


def _read_file(path: Path, max_side: Any = None) -> Any:
    """The Part 10 file at ``path``; its file meta is read first, so a deflated one is inflated with a cap."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.filereader import read_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    regular_file(path, _ACCEPTED_FILES)
    try:
        meta = read_file_meta_info(path)
        if meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            return _read_deflated(path, meta, max_side)
        return pydicom.dcmread(path)
    except InvalidDicomError:
        raise DicomError(f"{path} is not a DICOM file (no 'DICM' marker after the 128-byte preamble); accepted: "
                         "DICOM CT images (Part 10 files) or NIfTI volumes (.nii, .nii.gz)") from None
    except DicomError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt files fail in many ways inside the parser
        raise DicomError(f"{path}: the DICOM file could not be parsed, it may be truncated or corrupt "
                         f"({type(exc).__name__}: {exc})") from None


def _read_deflated(path: Path, meta: Any, max_side: Any) -> Any:
    """A Deflated Explicit VR Little Endian file, inflated as a stream up to ``input_limits.deflate_limit``."""
    from pydicom.dataset import FileDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset

    length = meta.get("FileMetaInformationGroupLength")
    if not isinstance(length, int):
        raise DicomError(f"{path}: its file meta has no File Meta Information Group Length, so where its deflated "
                         "data set starts is unknown; accepted: Part 10 files (the group length is Type 1)")
    with open(path, "rb") as handle:
        preamble = handle.read(128)
        handle.seek(128 + 4 + 12 + length)  # preamble, 'DICM', the group length element, the rest of group 2
        deflated = handle.read()
    cap = deflate_limit(max_side)
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate, PS3.5 A.5
    pieces, size, pending = [], 0, deflated
    try:
        while pending and size <= cap:  # 1 MiB at a time, whatever the ratio: a bomb stops at the cap
            pieces.append(inflater.decompress(pending, 1 << 20))
            size += len(pieces[-1])
            pending = inflater.unconsumed_tail
        if size <= cap:
            pieces.append(inflater.flush())
            size += len(pieces[-1])
    except zlib.error as exc:
        raise DicomError(f"{path}: its deflated data set cannot be inflated ({exc}); the file may be truncated "
                         "or corrupt") from None
    if size > cap:
        raise DicomError(f"{path}: its deflated data set inflates to more than {cap} bytes (one 16-bit frame at "
                         f"the side limit plus {input_limits.DEFLATE_HEADER_BYTES} bytes of header); accepted: "
                         "deflated objects up to that size (re-encode larger ones without deflate, e.g. dcmtk's "
                         "'dcmconv +te', or raise liverlesion.input_limits.DEFLATE_HEADER_BYTES)")
    buffer = DicomBytesIO(b"".join(pieces))
    pieces.clear()  # the joined copy is all that is kept
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    dataset = read_dataset(cast(BinaryIO, buffer), is_implicit_VR=False, is_little_endian=True)
    return FileDataset(str(path), dataset, preamble=preamble, file_meta=meta, is_implicit_VR=False,
                       is_little_endian=True)


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
            f"install {options} ({install_hint('dicom')} installs pylibjpeg and "
            "pylibjpeg-openjpeg, the JPEG 2000 decoders)"
        )
    return str(syntax.name)


def _integer(ds: Any, keyword: str, what: str, default: int | None = None) -> int:
    """A one-valued integer attribute; a bytes value (VR UN, a wrong length) or text is refused."""
    value = _get(ds, keyword, what)
    if value is None or value == "":
        if default is None:
            raise DicomError(f"{what} has no {keyword}; accepted: CT images with {keyword} (Type 1)")
        return default
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    raise DicomError(f"{what}: {keyword} is {value!r:.40} ({type(value).__name__}), which is not an integer "
                     f"(a value of VR UN or of the wrong length?); accepted: one integer")


def numbers(value: Any, count: int, what: str, keyword: str, *, positive: bool = False,
            note: str = "") -> list[float]:
    """``count`` finite (and, if asked, positive) numbers (a DS multi-value), or DicomError naming the attribute.

    ``note`` says why they are needed (e.g. "the SEG copies it").
    """
    try:
        values = [] if value is None or isinstance(value, (str, bytes)) else [float(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        values = []
    if (len(values) != count or not all(math.isfinite(v) for v in values)
            or (positive and not all(v > 0 for v in values))):
        kind = "positive finite numbers" if positive else "finite numbers"
        raise DicomError(f"{what}: {keyword} is {value!r:.80}{note}; accepted: {count} {kind}")
    return values


def _check_pixel_module(ds: Any, what: str, max_side: Any) -> tuple[int, int, int, int]:
    """(rows, cols, bits stored, pixel representation), checked before any pixel is decoded."""
    rows, cols = _integer(ds, "Rows", what), _integer(ds, "Columns", what)
    if rows < 1 or cols < 1:
        raise DicomError(f"{what}: Rows x Columns is {rows} x {cols}; accepted: at least one pixel")
    check_side((rows, cols), what, DicomError, max_side=max_side, source="Rows x Columns")
    allocated = _integer(ds, "BitsAllocated", what)
    if allocated != 16:
        raise DicomError(f"{what}: Bits Allocated is {allocated}; accepted: 16, as the CT Image and Enhanced CT "
                         "modules require")
    stored = _integer(ds, "BitsStored", what)
    high = _integer(ds, "HighBit", what, default=stored - 1)
    representation = _integer(ds, "PixelRepresentation", what)
    if not 1 <= stored <= allocated or high != stored - 1 or representation not in (0, 1):
        raise DicomError(f"{what}: Bits Stored {stored}, High Bit {high}, Pixel Representation {representation}; "
                         f"accepted: Bits Stored 1..{allocated}, High Bit = Bits Stored - 1, Pixel Representation "
                         "0 (unsigned) or 1 (signed)")
    return rows, cols, stored, representation


def _rescale(ds: Any, frame: int | None, what: str, allow_non_hu: bool) -> tuple[float, float] | Any:
    """(slope, intercept) that turn stored values into HU, or the Dataset holding a Modality LUT.

    Classic CT carries Rescale Intercept and Slope (Type 1); enhanced CT carries them in the
    Pixel Value Transformation functional group. Without them the stored values are not HU.
    """
    if "ModalityLUTSequence" in ds:
        lut = _get(ds, "ModalityLUTSequence", what)
        if not lut:
            raise DicomError(f"{what}: its Modality LUT Sequence is empty, so its stored values cannot be turned "
                             "into HU; accepted: CT images with Rescale Intercept and Rescale Slope (or one LUT)")
        if "RescaleSlope" in ds or "RescaleIntercept" in ds:
            raise DicomError(f"{what} has both a Modality LUT Sequence and a rescale, which PS3.3 C.11.1 forbids; "
                             "accepted: one of them")
        lut_type = str(_get(lut[0], "ModalityLUTType", what) or "").strip().upper()
        _check_rescale_type(ds, lut_type, what, allow_non_hu, "Modality LUT Type")
        return ds
    source, where = ds, ""
    if str(_get(ds, "SOPClassUID", what)) in _ENHANCED:
        item = functional_item(ds, frame or 0, "PixelValueTransformationSequence", what)
        if item is not None:
            source, where = item, " in its Pixel Value Transformation functional group"
    values = {k: _get(source, k, what) for k in ("RescaleIntercept", "RescaleSlope")}
    missing = [k for k, v in values.items() if v is None or v == ""]
    if missing:
        raise DicomError(f"{what} has no {' and no '.join(missing)}{where}, so its stored values are not HU (they "
                         "would be off by the intercept, usually 1024); accepted: CT images with Rescale Intercept "
                         "and Rescale Slope (Type 1 in the CT Image module)")
    try:
        intercept, slope = (float(v) for v in values.values())
    except (TypeError, ValueError, OverflowError):
        intercept = slope = math.nan
    if not (math.isfinite(intercept) and math.isfinite(slope)) or slope <= 0:
        raise DicomError(f"{what}: Rescale Slope {values['RescaleSlope']!r:.40} and Rescale Intercept "
                         f"{values['RescaleIntercept']!r:.40}{where} do not map stored values to HU; accepted: one "
                         "finite intercept and one finite, positive slope")
    low, high = RESCALE_SLOPE_RANGE
    if not allow_non_hu and not (low <= slope <= high and abs(intercept) <= MAX_RESCALE_INTERCEPT):
        raise DicomError(f"{what}: Rescale Slope {slope:g} and Rescale Intercept {intercept:g}{where} are not those "
                         f"of a CT; accepted: a slope within [{low:g}, {high:g}] and an intercept within "
                         f"+-{MAX_RESCALE_INTERCEPT:g} HU (pass allow_non_hu=True to use the values as HU anyway)")
    rescale_type = str(_get(source, "RescaleType", what) or "").strip().upper()
    _check_rescale_type(ds, rescale_type, what, allow_non_hu, "Rescale Type")
    return slope, intercept


def _check_rescale_type(ds: Any, rescale_type: str, what: str, allow_non_hu: bool, name: str) -> None:
    if rescale_type not in _HU_RESCALE_TYPES and not allow_non_hu:
        kind = "\\".join(str(v) for v in (_get(ds, "ImageType", what) or []))
        raise DicomError(
            f"{what}: {name} is {rescale_type!r}, so its values are not Hounsfield units (Image Type "
            f"{kind or '?'}); accepted: CT images rescaled to HU (pass allow_non_hu=True to use them as HU anyway)"
        )


def _check_j2k_unsigned(ds: Any, frame: int, frames: int, what: str) -> None:
    """Refuse a JPEG 2000 frame whose codestream is signed while Pixel Representation says unsigned.

    pydicom trusts the header there, which turns negative values (padding, air) into large
    positive ones. The opposite mismatch (signed data in an unsigned codestream, a known
    encoder bug) is corrected by pydicom and accepted.
    """
    from pydicom.uid import JPEG2000TransferSyntaxes

    if ds.file_meta.TransferSyntaxUID not in JPEG2000TransferSyntaxes:
        return
    from pydicom.encaps import get_frame
    from pydicom.pixels.utils import get_j2k_parameters

    try:
        codestream = get_frame(ds.PixelData, frame, number_of_frames=frames)
        signed = get_j2k_parameters(bytes(codestream[:1024])).get("is_signed")
    except Exception:  # noqa: BLE001 - damaged fragments: the decode below reports them
        return
    if signed:
        raise DicomError(f"{what}: Pixel Representation is 0 (unsigned) but its JPEG 2000 codestream holds signed "
                         "values, so negative values would be read as large positive ones; accepted: a Pixel "
                         "Representation that agrees with the pixel data")


def _to_hu(pixels: np.ndarray, rescale: tuple[float, float] | Any, what: str) -> np.ndarray:
    """Stored values -> HU (float32, a new array)."""
    if not isinstance(rescale, tuple):
        from pydicom.pixels import apply_modality_lut

        try:
            return np.asarray(apply_modality_lut(pixels, rescale), dtype=np.float32)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:  # a malformed LUT
            raise DicomError(f"{what}: its Modality LUT could not be applied ({exc})") from None
    slope, intercept = rescale
    if slope == 1 and intercept.is_integer() and abs(intercept) < 2 ** 24:
        hu = pixels.astype(np.float32)  # exact: 16-bit values plus an integer intercept
        hu += np.float32(intercept)
        return hu
    return (pixels * slope + intercept).astype(np.float32)  # float64, rounded once


def read_dicom(source: Any, *, frame: int | None = None, spacing: Any = None,
               max_tilt_deg: float = MAX_TILT_DEG, allow_non_hu: bool = False,
               max_side: int | None = None) -> SliceInput:
    """A CT slice from a pydicom Dataset or a DICOM file path.

    ``frame`` picks one frame of a multi-frame object (0-based; required there).
    ``spacing`` is used only when the object records no pixel spacing. ``allow_non_hu``
    accepts a Rescale Type other than HU and values that are not plausible HU;
    ``max_side`` overrides ``input_limits.MAX_SIDE`` for this call.
    """
    import pydicom

    path = None
    if isinstance(source, pydicom.Dataset):
        ds = source
        filename = getattr(ds, "filename", None)
        what = f"DICOM file {filename}" if isinstance(filename, str) and filename else "DICOM dataset"
    else:
        path = Path(os.fspath(source))
        ds = _read_file(path, max_side)
        what = f"DICOM file {path}"

    modality = _get(ds, "Modality", what)
    if modality != "CT":
        raise DicomError(f"{what}: modality is {modality!r}; accepted: CT images (Modality 'CT')")
    sop_class_uid = _get(ds, "SOPClassUID", what)
    sop_class = str(sop_class_uid or "")
    if sop_class not in CT_STORAGE_CLASSES:
        name = getattr(sop_class_uid, "name", "") or "none"
        raise DicomError(f"{what}: SOP class {sop_class or '(absent)'} ({name}) is not a CT image storage class; "
                         f"accepted: {', '.join(CT_STORAGE_CLASSES.values())} (Secondary Capture is refused: it "
                         "need not carry geometry or HU)")
    if "PixelData" not in ds:
        raise DicomError(f"{what} has no pixel data (it may be a header-only or non-image object); "
                         "accepted: CT images with (7FE0,0010) Pixel Data")
    samples = _integer(ds, "SamplesPerPixel", what, default=1)
    photometric = str(_get(ds, "PhotometricInterpretation", what) or "")
    if samples != 1 or photometric not in _MONOCHROME:
        raise DicomError(f"{what}: photometric interpretation {photometric!r} with {samples} sample(s) per pixel "
                         f"is not a grayscale CT image; accepted: {' or '.join(_MONOCHROME)}")
    rows, cols, stored, representation = _check_pixel_module(ds, what, max_side)

    frames = frame_count(ds, what)
    if frames > 1 and frame is None:
        raise DicomError(f"{what} is a multi-frame object with {frames} frames; pass frame=<0..{frames - 1}> "
                         "to pick the slice to analyse")
    if frame is not None and (isinstance(frame, bool) or not isinstance(frame, (int, np.integer))
                              or not 0 <= frame < frames):
        raise InputError(f"{what}: frame={frame!r} is out of range; accepted: an integer 0..{frames - 1}")

    # Geometry first: refusing a coronal or MR object should not cost a decode.
    orient = _attribute(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient", what)
    if orient is None:
        raise DicomError(f"{what} has no usable Image Orientation (Patient), so it cannot be checked to be "
                         "axial; accepted: CT images with ImageOrientationPatient")
    orient = numbers(orient, 6, what, "Image Orientation (Patient)")
    orientation = orientation_from_directions(orient[:3], orient[3:], max_tilt_deg=max_tilt_deg, what=what,
                                              error=DicomError)
    position = _attribute(ds, frame, "PlanePositionSequence", "ImagePositionPatient", what)
    if position is not None:
        position = numbers(position, 3, what, "Image Position (Patient)")
    recorded = _attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing", what)
    if recorded is None and spacing is None:
        raise DicomError(f"{what} records no Pixel Spacing; pass spacing=(row_mm, col_mm)")
    try:
        spacing_mm = check_spacing(recorded if recorded is not None else spacing)
    except InputError as exc:
        raise DicomError(f"{what}: {exc}") from None
    rescale = _rescale(ds, frame, what, allow_non_hu)

    syntax = _decoder_check(ds, what)
    if representation == 0:
        _check_j2k_unsigned(ds, frame or 0, frames, what)
    from pydicom.pixels import pixel_array

    try:
        # Unused high bits kept as stored, so that values beyond Bits Stored are seen (below), not masked.
        pixels = pixel_array(ds, index=frame if frames > 1 else None, correct_unused_bits=False)
    except Exception as exc:  # noqa: BLE001 - truncated data and decoder failures take many forms
        raise DicomError(f"{what}: pixel data could not be decoded ({type(exc).__name__}: {exc}); "
                         "the file may be truncated or corrupt") from None
    if pixels.shape != (rows, cols):
        raise DicomError(f"{what}: decoded pixels have shape {pixels.shape}, expected (Rows, Columns) = "
                         f"({rows}, {cols})")
    low, high = int(pixels.min()), int(pixels.max())
    lowest, highest = (-(2 ** (stored - 1)), 2 ** (stored - 1) - 1) if representation else (0, 2 ** stored - 1)
    if low < lowest or high > highest:
        raise DicomError(f"{what}: stored values {low}..{high} do not fit Bits Stored {stored} "
                         f"({'signed' if representation else 'unsigned'}: {lowest}..{highest}); Bits Stored or "
                         "Pixel Representation is wrong (or the unused bits hold retired overlays); accepted: "
                         "values within Bits Stored")
    hint = ""
    if representation == 0 and high >= 2 ** (stored - 1):
        hint = (f"Pixel Representation is 0 (unsigned) and stored values reach {high}: signed pixel data "
                "read as unsigned?")
    hu = check_hu_array(_to_hu(pixels, rescale, what), what, error=DicomError, allow_non_hu=allow_non_hu,
                        max_side=max_side, hint=hint, owned=True)

    info: dict[str, Any] = {
        "kind": "dicom",
        "path": str(path) if path is not None else None,
        "sop_class_uid": sop_class,
        "sop_instance_uid": str(_get(ds, "SOPInstanceUID", what) or ""),
        "series_instance_uid": str(_get(ds, "SeriesInstanceUID", what) or ""),
        "frame": frame if frames > 1 else None,
        "frames": frames,
        "transfer_syntax": syntax,
        "photometric_interpretation": photometric,
        "image_orientation_patient": orient,
        "image_position_patient": position,
    }
    return SliceInput(hu=hu, spacing_mm=spacing_mm, orientation=orientation, source=info, dataset=ds)
