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
SEG and SR agree). The SR holds one Planar ROI group per lesion (finding type, finding
site Liver, Area in mm2 (SCT 42798000, UCUM mm2), Probability (DCM 122157, UCUM 1)),
each referencing its type's segment, and one group for the liver (its area, and the
slice-level class as a qualitative evaluation named SCT 278201002 Classification); when
no liver was found, an image-level group (TID 1501) records a liver area of 0 mm2.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..atomic import atomic_write_bytes
from ..errors import InputError, require
from ..labels import LESION_CLASSES
from .overlay import LABEL_COLOURS
from .prediction import Prediction

MANUFACTURER = "liverlesion"
DEVICE_SERIAL_NUMBER = "liverlesion-sdk"
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902


def _codes() -> dict[str, Any]:
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


def _check_source(prediction: Prediction, source: Any) -> int | None:
    """Refuse a source image the prediction was not made on; the frame index for multi-frame sources."""
    from .dicom_input import frame_count

    if source.get("Modality") != "CT" or "SOPInstanceUID" not in source:
        raise InputError("DICOM output needs the source CT image (a pydicom Dataset with Modality 'CT')")
    if (source.get("Rows"), source.get("Columns")) != prediction.shape:
        raise InputError(f"source image is {source.get('Rows')} x {source.get('Columns')}, the prediction "
                         f"{prediction.shape[0]} x {prediction.shape[1]}: pass the image the slice came from")
    made_on = prediction.source.get("sop_instance_uid")
    if made_on and made_on != source.SOPInstanceUID:
        raise InputError(f"the prediction was made on SOP instance {made_on}, not {source.SOPInstanceUID}")
    if not source.get("FrameOfReferenceUID"):  # highdicom would raise a bare ValueError; SEG requires it
        raise InputError("the source image has no Frame of Reference UID (0020,0052), which a DICOM "
                         "Segmentation and its report must share with it; accepted: CT images with a Frame "
                         "of Reference")
    if frame_count(source) > 1:
        frame = prediction.source.get("frame")
        if frame is None:
            raise InputError("the source is multi-frame but the prediction records no frame index")
        return int(frame)
    return None


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
                 instance_number: int = 1) -> Any:
    """A BINARY DICOM Segmentation of ``prediction`` aligned with (and referencing) ``source_dataset``."""
    hd = require("highdicom", "dicom", "writing DICOM SEG")
    from pydicom.sr.codedict import codes

    frame = _check_source(prediction, source_dataset)
    code = _codes()
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
        full = np.zeros((int(source_dataset.NumberOfFrames), *stack.shape[1:]), dtype=bool)
        full[frame] = stack[0]
        stack = full
    return hd.seg.Segmentation(
        source_images=[source_dataset], pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
        instance_number=instance_number, manufacturer=MANUFACTURER, manufacturer_model_name=name,
        software_versions=f"liverlesion {__version__}", device_serial_number=DEVICE_SERIAL_NUMBER,
        content_label="LIVERLESION", content_description=f"{name} {version} liver and lesion segmentation",
    )


def _segment_numbers(seg: Any) -> dict[str, int]:
    """Lesion/liver name -> segment number, read from the SEG's segment labels."""
    return {str(item.SegmentLabel).lower(): int(item.SegmentNumber) for item in seg.SegmentSequence}


def to_dicom_sr(prediction: Prediction, source_dataset: Any, seg: Any, *, series_number: int = SR_SERIES_NUMBER,
                instance_number: int = 1) -> Any:
    """A Comprehensive 3D SR (TID 1500) with each lesion's type, probability and area, referencing ``seg``."""
    hd = require("highdicom", "dicom", "writing DICOM SR")
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    frame = _check_source(prediction, source_dataset)
    if str(seg.get("SOPClassUID", "")) != "1.2.840.10008.5.1.4.1.1.66.4":
        raise InputError("to_dicom_sr needs the DICOM Segmentation made from this prediction (to_dicom_seg)")
    code = _codes()
    name, version = _model(prediction)
    numbers = _segment_numbers(seg)
    missing = {"liver", *(x.label for x in prediction.lesions)} - set(numbers)
    if missing:
        raise InputError(f"the SEG has no segment for {sorted(missing)}: pass the SEG made from this prediction")
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version)
    site = [hd.sr.FindingSite(code["liver"])]
    groups = []
    for lesion in prediction.lesions:
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
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
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
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
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[MANUFACTURER, name, version]), name=name,
            manufacturer_name=MANUFACTURER, model_name=name, serial_number=DEVICE_SERIAL_NUMBER),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[source_dataset, seg], content=report[0], series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=instance_number,
        manufacturer=MANUFACTURER, is_complete=True,
    )


def _referenced_segment(hd: Any, seg: Any, number: int, source_dataset: Any, frame: int | None) -> Any:
    """The SR's reference to segment ``number`` of ``seg`` and to the CT image it was made from.

    Built here rather than with highdicom 0.28's ``ReferencedSegmentationFrame.from_segmentation``,
    which reads each frame's segment from the per-frame functional groups only and fails on a
    one-frame SEG, which carries it in the shared ones (PS3.3 C.7.6.16).
    """
    source = hd.sr.SourceImageForSegmentation.from_source_image(
        source_dataset, referenced_frame_numbers=None if frame is None else [frame + 1])
    return hd.sr.ReferencedSegmentationFrame(seg.SOPClassUID, seg.SOPInstanceUID, _segment_frames(seg, number),
                                             number, source)


def _segment_frames(seg: Any, number: int) -> list[int]:
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
    """Write a DICOM object as a Part 10 file, atomically (readers never see half a file)."""
    import pydicom

    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path
