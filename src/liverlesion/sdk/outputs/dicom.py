"""DICOM objects scanners and PACS store: a Segmentation and a TID 1500 measurement report.

Built with highdicom (the ``dicom`` extra, imported only here). Codes (SNOMED CT unless
noted), the ones DICOM CID 7150/7151/7153 and pydicom's code dictionary use:

=============  ===================================================  =========================
segment        segmented property category                          segmented property type
=============  ===================================================  =========================
Liver          91723000 Anatomical Structure                        10200004 Liver
Cyst           49755003 Morphologically Abnormal Structure          367643001 Cyst
Hemangioma     49755003 Morphologically Abnormal Structure          400210000 Hemangioma
Metastasis     49755003 Morphologically Abnormal Structure          14799000 Neoplasm, metastatic
=============  ===================================================  =========================

The SEG holds the whole liver (lesions included) and one segment per lesion type
present, made of the lesions the model assigned to that type (the per-lesion vote, so
SEG and SR agree). The SR holds one ROI group (TID 1411) per lesion (finding type,
finding site Liver, Area in mm2 (SCT 42798000, UCUM mm2), Probability (DCM 122157,
UCUM 1)), each referencing its type's segment (a segment-level "Referenced Segment":
an IMAGE item may carry a frame or a segment number, never both, PS3.3 C.18.4), and one
group for the liver (its area, and the slice-level class as a qualitative evaluation
named SCT 278201002 Classification); when no liver was found, an image-level group
(TID 1501) records a liver area of 0 mm2.

Why TID 1411 (Volumetric ROI) for the area of a region on one slice, not TID 1410
(Planar ROI): the region *is* a segment of the SEG, and TID 1411 references a segment
as such, while TID 1410 references a SEG frame (or a graphic region). dcmqi, the
reference TID 1500 writer, uses TID 1411 for every segmentation-based measurement, one
or many frames alike, and the series report of a later issue needs the same shape: a
lesion segment running through several slices, measured once.

Every object written passes David Clunie's ``dciodvfy`` without an error and dcmtk's
``dsrdump`` without a warning (tests/sdk/test_trust_outputs.py runs both). What the SEG
and SR copy from the source is checked first (``_check_source``), so a source that
lacks it is refused with a typed error rather than a highdicom traceback.
"""

from __future__ import annotations

import io
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ... import __version__
from ...atomic import atomic_write_bytes
from ...errors import DicomError, InputError, require
from ...labels import LABEL_COLOURS, LESION_CLASSES
from ..inputs.dicom import frame_count, functional_item, numbers
from ..prediction import Prediction
from .targets import check_file

MANUFACTURER = "liverlesion"
DEVICE_SERIAL_NUMBER = "liverlesion-sdk"
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: PS3.5 9.1: at most 64 characters; components of digits, no leading zero in a multi-digit one.
UID_MAX_LENGTH = 64
_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
#: Attributes the SEG and SR copy from the source (Patient and General Study modules, Type 1 and 2);
#: highdicom reads each one and fails with an AttributeError where one is absent.
SOURCE_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                     "FrameOfReferenceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                     "StudyDate", "StudyTime", "StudyID", "AccessionNumber")
_UID_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
#: De-identification Method (LO, at most 64 characters) written when a de-identified source names none.
DEIDENTIFIED_WITHOUT_METHOD = "de-identified source; it records no method"
#: What highdicom raises on a source it cannot use (turned into a DicomError naming the source).
BUILD_ERRORS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


def check_uid(value: Any, what: str) -> str:
    """``value`` as a DICOM UID (PS3.5 9.1), or an InputError naming ``what`` and the rule broken."""
    text = str(value) if value is not None else ""
    shown = repr(text) if len(text) <= 70 else f"{text[:40]!r}... ({len(text)} characters)"
    if not text:
        reason = "it is empty"
    elif len(text) > UID_MAX_LENGTH:
        reason = f"it has {len(text)} characters"
    elif "\0" in text:
        reason = "it contains a NUL character"
    elif _UID.fullmatch(text) is None:
        reason = "it is not digits in components separated by '.', without leading zeros"
    else:
        return text
    raise InputError(f"{what} {shown} is not a DICOM UID: {reason}; accepted: at most {UID_MAX_LENGTH} "
                     "characters, components of digits separated by '.', no leading zero in a multi-digit "
                     "component (PS3.5 9.1)")


def finding_codes() -> dict[str, Any]:
    from pydicom.sr.codedict import codes

    return {
        "liver": codes.SCT.Liver,
        "cyst": codes.SCT.Cyst,
        "hemangioma": codes.SCT.Hemangioma,
        "metastasis": codes.SCT.NeoplasmMetastatic,
        "anatomy": codes.SCT.AnatomicalStructure,
        "abnormal": codes.SCT.MorphologicallyAbnormalStructure,
    }


def _model(prediction: Prediction) -> tuple[str, str]:
    return prediction.model.get("name") or "liverlesion", prediction.model.get("version") or __version__


def check_geometry(source: Any, frames: int, what: str = "the source image") -> None:
    """Position, orientation and spacing of every source frame, as the SEG's plane groups copy them."""
    checks = (("PlanePositionSequence", "ImagePositionPatient", 3, False),
              ("PlaneOrientationSequence", "ImageOrientationPatient", 6, False),
              ("PixelMeasuresSequence", "PixelSpacing", 2, True))
    for frame in range(frames):
        for sequence, keyword, count, positive in checks:
            if frames == 1 and keyword in source:
                value = source.get(keyword)
            else:
                item = functional_item(source, frame, sequence, what)
                value = None if item is None else item.get(keyword)
            where = keyword if frames == 1 else f"{keyword} of frame {frame}"
            numbers(value, count, what, where, positive=positive, note=" (the SEG copies it)")


def slice_thickness(source: Any, frames: int, override: Any, what: str = "the source image") -> float | None:
    """The thickness the SEG must be given (None: highdicom copies the source's own, a positive number).

    The SEG's Pixel Measures need a Slice Thickness (dciodvfy: Type 1C), which a CT may leave
    empty (Type 2); ``override`` fills it then, else the source is refused.
    """
    if frames == 1:
        recorded = source.get("SliceThickness")
    else:  # highdicom copies an enhanced source's shared pixel measures
        shared = source.get("SharedFunctionalGroupsSequence")
        measures = shared[0].get("PixelMeasuresSequence") if shared else None
        recorded = measures[0].get("SliceThickness") if measures else None
    try:
        usable = recorded is not None and recorded != "" and math.isfinite(float(recorded)) and float(recorded) > 0
    except (TypeError, ValueError):
        usable = False
    if override is not None:
        if isinstance(override, bool) or not isinstance(override, (int, float)) or not math.isfinite(override) \
                or not 0 < override <= 1000:
            raise InputError(f"slice_thickness_mm={override!r}; accepted: a number of mm, 0 < mm <= 1000")
        return None if usable else float(override)
    if not usable:
        raise DicomError(f"{what}'s Slice Thickness (0018,0050) is {recorded!r}; the SEG must state one: "
                         "pass slice_thickness_mm= (CLI: --slice-thickness MM); accepted: a positive number of mm")
    return None


def _check_source(prediction: Any, source: Any) -> int | None:
    """Refuse a source the prediction was not made on, or that lacks what SEG/SR copy; its frame if multi-frame."""
    import pydicom

    if not isinstance(prediction, Prediction):
        raise InputError("DICOM output needs a Prediction (from LesionAnalyzer.predict), "
                         f"got {type(prediction).__name__}")
    if not isinstance(source, pydicom.Dataset):
        raise InputError(f"DICOM output needs the source CT image as a pydicom Dataset (pydicom.dcmread(path)), "
                         f"got {type(source).__name__}")
    if source.get("Modality") != "CT" or "SOPInstanceUID" not in source:
        raise InputError("DICOM output needs the source CT image (a pydicom Dataset with Modality 'CT')")
    if (source.get("Rows"), source.get("Columns")) != prediction.shape:
        raise InputError(f"source image is {source.get('Rows')} x {source.get('Columns')}, the prediction "
                         f"{prediction.shape[0]} x {prediction.shape[1]}: pass the image the slice came from")
    made_on = prediction.source.get("sop_instance_uid")
    if made_on and made_on != source.SOPInstanceUID:
        raise InputError(f"the prediction was made on SOP instance {made_on}, not {source.SOPInstanceUID}")
    frames = check_source_image(source)
    if frames > 1:
        frame = prediction.source.get("frame")
        if frame is None:
            raise InputError("the source is multi-frame but the prediction records no frame index")
        return int(frame)
    return None


def check_source_image(source: Any, what: str = "the source image") -> int:
    """Refuse a source lacking what SEG and SR copy (Patient, Study, UIDs, plane geometry); its frame count."""
    import pydicom

    missing = [k for k in SOURCE_ATTRIBUTES if k not in source]
    if missing:
        tags = ", ".join(f"{k} {pydicom.tag.Tag(k)}" for k in missing)  # e.g. PatientID (0010,0020)
        reference = " (a Segmentation and its report must share the Frame of Reference UID)" \
            if "FrameOfReferenceUID" in missing else ""
        raise DicomError(f"{what} has no {tags}, which the DICOM SEG and SR copy from it{reference}; "
                         "accepted: CT images with the Patient and General Study modules' Type 1 and 2 "
                         "attributes (Type 2 ones may be empty) and a Frame of Reference UID")
    for keyword in _UID_ATTRIBUTES:
        if not source.get(keyword):
            raise DicomError(f"{what}'s {keyword} is empty; the SEG and SR reference it, "
                             "accepted: a DICOM UID")
        try:
            check_uid(source.get(keyword), f"{what}'s {keyword}")
        except InputError as exc:
            raise DicomError(str(exc)) from None
    frames = frame_count(source, what)
    check_geometry(source, frames, what)
    return frames


def checked_number(value: Any, name: str) -> int:
    """A series or instance number (VR IS): an int 1..2^31-1."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= 2**31 - 1:
        raise InputError(f"{name}={value!r}; accepted: an integer 1..{2**31 - 1}")
    return int(value)


def deidentified(obj: Any, source: Any) -> Any:
    """A de-identified source that names no method makes its SEG/SR name one (Type 1C, PS3.3 C.7.1.1)."""
    removed = str(source.get("PatientIdentityRemoved", "") or "").strip().upper()
    if removed == "YES" and "DeidentificationMethod" not in obj and "DeidentificationMethodCodeSequence" not in obj:
        obj.DeidentificationMethod = DEIDENTIFIED_WITHOUT_METHOD
    return obj


def _segments(prediction: Prediction) -> list[tuple[str, np.ndarray]]:
    """(name, mask) of the liver and of each lesion type present, from the per-lesion votes."""
    lookup = np.zeros(len(prediction.lesions) + 1, dtype=np.int8)
    for lesion in prediction.lesions:
        lookup[lesion.id] = LESION_CLASSES.index(lesion.label) + 1
    by_type = lookup[prediction.lesion_components]
    out = [("liver", prediction.liver_mask)]
    for k, name in enumerate(LESION_CLASSES):
        mask = by_type == k + 1
        if mask.any():
            out.append((name, mask))
    return out


def to_dicom_seg(prediction: Prediction, source_dataset: Any, *, series_number: int = SEG_SERIES_NUMBER,
                 instance_number: int = 1, slice_thickness_mm: float | None = None) -> Any:
    """A BINARY DICOM Segmentation of ``prediction`` aligned with (and referencing) ``source_dataset``.

    ``slice_thickness_mm`` is used only where the source records no usable Slice Thickness.
    """
    hd = require("highdicom", "dicom", "writing DICOM SEG")
    from pydicom.sr.codedict import codes
    from pydicom.valuerep import DS

    frame = _check_source(prediction, source_dataset)
    frames = frame_count(source_dataset, "the source image")
    thickness = slice_thickness(source_dataset, frames, slice_thickness_mm)
    series_number = checked_number(series_number, "series_number")
    instance_number = checked_number(instance_number, "instance_number")
    code = finding_codes()
    name, version = _model(prediction)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name, family=codes.cid7162.ArtificialIntelligence, version=version,
        source=f"liverlesion {__version__}",
        parameters={"backend": prediction.backend or "?", "precision": prediction.precision or "?"},
    )
    segments = _segments(prediction)
    descriptions = []
    for number, (label, _) in enumerate(segments, start=1):
        is_liver = label == "liver"
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label.capitalize(),
            segmented_property_category=code["anatomy" if is_liver else "abnormal"],
            segmented_property_type=code[label], algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=None if is_liver else [code["liver"]],
            tracking_id=f"{label} {number}", tracking_uid=hd.UID(),
            display_color=hd.color.CIELabColor.from_rgb(*LABEL_COLOURS[label]),
        ))
    stack = np.stack([mask for _, mask in segments], axis=-1)[None]
    if frame is not None:  # one source frame of a multi-frame image: the others stay empty and are omitted
        full = np.zeros((frames, *stack.shape[1:]), dtype=bool)
        full[frame] = stack[0]
        stack = full
    try:
        seg = hd.seg.Segmentation(
            source_images=[source_dataset], pixel_array=stack,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
            instance_number=instance_number, manufacturer=MANUFACTURER, manufacturer_model_name=name,
            software_versions=f"liverlesion {__version__}", device_serial_number=DEVICE_SERIAL_NUMBER,
            content_label="LIVERLESION", content_description=f"{name} {version} liver and lesion segmentation",
        )
    except BUILD_ERRORS as exc:  # a source attribute our checks do not know of
        raise DicomError(f"source image {source_dataset.SOPInstanceUID}: no DICOM SEG can be built on it "
                         f"({type(exc).__name__}: {exc})") from None
    if thickness is not None:
        seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness = DS(thickness, auto_format=True)
    return deidentified(seg, source_dataset)


def _segment_numbers(seg: Any) -> dict[str, int]:
    """Lesion/liver name -> segment number, read from the SEG's segment labels."""
    return {str(item.SegmentLabel).lower(): int(item.SegmentNumber) for item in seg.SegmentSequence}


def seg_references(seg: Any, needs: str) -> set[str]:
    """The SOP instances a DICOM Segmentation references; anything but a Segmentation is refused (``needs``: the
    caller and the SEG it takes, for the message)."""
    import pydicom

    if not isinstance(seg, pydicom.Dataset) or str(seg.get("SOPClassUID", "")) != SEGMENTATION_STORAGE \
            or "SegmentSequence" not in seg or "PerFrameFunctionalGroupsSequence" not in seg:
        got = type(seg).__name__ if not isinstance(seg, pydicom.Dataset) else f"SOP class {seg.get('SOPClassUID')}"
        raise InputError(f"{needs}, got {got}; store that SEG too, the SR references it")
    return {str(item.get("ReferencedSOPInstanceUID", "")) for series in seg.get("ReferencedSeriesSequence", [])
            for item in series.get("ReferencedInstanceSequence", [])}


def _check_seg(seg: Any, source: Any) -> None:
    """Refuse anything but the DICOM Segmentation made on ``source`` (what to_dicom_seg returns)."""
    referenced = seg_references(seg, "to_dicom_sr needs the DICOM Segmentation made from this prediction "
                                     "(to_dicom_seg)")
    if str(source.SOPInstanceUID) not in referenced:
        raise InputError(f"the SEG {seg.get('SOPInstanceUID')} was not made on source image "
                         f"{source.SOPInstanceUID}: pass the SEG made from this prediction")


def to_dicom_sr(prediction: Prediction, source_dataset: Any, seg: Any, *, series_number: int = SR_SERIES_NUMBER,
                instance_number: int = 1) -> Any:
    """A Comprehensive 3D SR (TID 1500) with each lesion's type, probability and area, referencing ``seg``."""
    hd = require("highdicom", "dicom", "writing DICOM SR")
    from pydicom.sr.codedict import codes

    frame = _check_source(prediction, source_dataset)
    _check_seg(seg, source_dataset)
    series_number = checked_number(series_number, "series_number")
    instance_number = checked_number(instance_number, "instance_number")
    code = finding_codes()
    name, version = _model(prediction)
    numbers = _segment_numbers(seg)
    missing = {"liver", *(x.label for x in prediction.lesions)} - set(numbers)
    if missing:
        raise InputError(f"the SEG has no segment for {sorted(missing)}: pass the SEG made from this prediction")
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version)
    site = [hd.sr.FindingSite(code["liver"])]
    groups = []
    for lesion in prediction.lesions:
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Lesion {lesion.id}"),
            referenced_segment=_referenced_segment(hd, seg, numbers[lesion.label], source_dataset, frame),
            finding_type=code[lesion.label], finding_category=code["abnormal"], finding_sites=site,
            algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(name=codes.SCT.Area, value=lesion.area_mm2, unit=codes.UCUM.SquareMillimeter),
                hd.sr.Measurement(name=codes.DCM.Probability, value=lesion.probability, unit=codes.UCUM.NoUnits),
            ],
        ))
    evaluations = None
    if prediction.slice_class is not None:
        evaluations = [hd.sr.QualitativeEvaluation(codes.SCT.Classification, code[prediction.slice_class])]
    if prediction.liver_area_mm2 > 0:  # an empty segment has no frame to reference
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Liver"),
            referenced_segment=_referenced_segment(hd, seg, numbers["liver"], source_dataset, frame),
            finding_type=code["liver"], finding_category=code["anatomy"], algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(name=codes.SCT.Area, value=prediction.liver_area_mm2,
                                            unit=codes.UCUM.SquareMillimeter)],
            qualitative_evaluations=evaluations,
        ))
    else:  # TID 1500 needs one group: an image-level one saying the liver area found is zero
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Liver"),
            finding_type=code["liver"], algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(name=codes.SCT.Area, value=0.0, unit=codes.UCUM.SquareMillimeter)],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(
                source_dataset, referenced_frame_numbers=None if frame is None else [frame + 1])],
        ))
    report = measurement_report(groups, name, version)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[source_dataset, seg], content=report[0], series_instance_uid=hd.UID(),
            series_number=series_number, sop_instance_uid=hd.UID(), instance_number=instance_number,
            manufacturer=MANUFACTURER, is_complete=True,
        )
    except BUILD_ERRORS as exc:  # a source attribute our checks do not know of
        raise DicomError(f"source image {source_dataset.SOPInstanceUID}: no DICOM SR can be built on it "
                         f"({type(exc).__name__}: {exc})") from None
    return deidentified(sr, source_dataset)


def measurement_report(groups: list[Any], name: str, version: str) -> Any:
    """TID 1500 content: ``groups`` observed by this SDK as a device (its UID stable per model name and version)."""
    hd = require("highdicom", "dicom", "DICOM SR output")
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[MANUFACTURER, name, version]), name=name,
            manufacturer_name=MANUFACTURER, model_name=name, serial_number=DEVICE_SERIAL_NUMBER),
    )
    return hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups,
    )


def _referenced_segment(hd: Any, seg: Any, number: int, source_dataset: Any, frame: int | None) -> Any:
    """The SR's segment-level reference to segment ``number`` of ``seg``, and to the CT image it was made on.

    A "Referenced Segment" item (TID 1411) carries the segment number and no frame number:
    highdicom's frame-level ``ReferencedSegmentationFrame`` writes both, which PS3.3 C.18.4
    forbids (dciodvfy: "Shall not be present when ReferencedFrameNumber is present").
    """
    segment_frames(seg, number)
    source = hd.sr.SourceImageForSegmentation.from_source_image(
        source_dataset, referenced_frame_numbers=None if frame is None else [frame + 1])
    return hd.sr.ReferencedSegment(seg.SOPClassUID, seg.SOPInstanceUID, number, source_images=[source])


def segment_frames(seg: Any, number: int) -> list[int]:
    """The SEG frames (1-based) of segment ``number``, from the per-frame or the shared functional groups."""
    shared = seg.get("SharedFunctionalGroupsSequence")
    shared_ids = shared[0].get("SegmentIdentificationSequence") if shared else None
    frames = []
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        ids = item.get("SegmentIdentificationSequence") or shared_ids
        if ids and int(ids[0].ReferencedSegmentNumber) == number:
            frames.append(index + 1)
    if not frames:
        raise InputError(f"the SEG has no frame for segment {number}: pass the SEG made from this prediction")
    return frames


def save_dicom(dataset: Any, path: str | os.PathLike[str]) -> Path:
    """Write a DICOM object as a Part 10 file, atomically (readers never see half a file).

    The folder must exist (a missing one is refused rather than created, so that an
    unmounted share is not silently replaced by a local folder).
    """
    import pydicom

    if not isinstance(dataset, pydicom.Dataset):
        raise InputError(f"save_dicom needs a pydicom Dataset (to_dicom_seg / to_dicom_sr), "
                         f"got {type(dataset).__name__}")
    path = check_file(path, "save_dicom")
    buffer = io.BytesIO()
    try:
        pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    except (ValueError, TypeError, AttributeError, KeyError, OverflowError) as exc:
        raise DicomError(f"save_dicom: the dataset cannot be written as a DICOM Part 10 file "
                         f"({type(exc).__name__}: {exc})") from None
    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as exc:
        raise InputError(f"save_dicom: cannot write {path} ({exc.strerror or exc})") from None
    return path
