"""DICOM outputs of a whole series: one multi-frame SEG with a segment per 3D lesion, one TID 1500 SR.

The SEG references every CT instance of the series and holds segment 1 "Liver" and one segment
per 3D lesion ("Lesion 3 (metastasis)", its type as the segmented property type, the codes of
``dicom.py``), numbered in the order of ``SeriesMeasurements.lesions``. The segments do not
overlap: "Liver" is the liver voxels outside the lesions, as in the model's label volume (and
LiTS's): a label map that highdicom encodes slice by slice from one (slices, rows, cols) array
of segment numbers (1 or 2 bytes a voxel), where overlapping segments would need a
(slices, rows, cols, segments) stack; and OHIF v3 refused overlapping SEGs until 2025
(OHIF/Viewers#3496, #4849), VolView merges them (Kitware/VolView#653). One segment per lesion,
not per type, because the SR references each lesion's own segment, and viewers show a SEG of
a hundred segments (TotalSegmentator's); empty frames are omitted.

The SR (Comprehensive 3D SR, TID 1500) holds one TID 1411 group per 3D lesion: finding type
(its lesion type), finding site Liver, Volume (SCT 118565006, UCUM ml), Long Axis and Short
Axis (SCT 103339001 / 103340004, UCUM mm; RECIST 1.1 on the slice where the lesion is largest,
which they reference) and Probability (DCM 122157, UCUM 1), referencing its
segment (segment number, no frame number, PS3.3 C.18.4) and the CT instances that segment was
made on; its tracking UID is the segment's. The whole liver (lesions included) is no single
segment, so its group is an image-level one (TID 1501) on the SEG: Volume and the lesion burden
(lesion volume / liver volume, UCUM 1; no standard code names it, so a local one, scheme
``99LIVERLESION``, declared in the SR's Coding Scheme Identification).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ... import __version__
from ...errors import DicomError, InputError, require
from ...labels import FIRST_LESION_LABEL, LABEL_COLOURS, LESION_CLASSES, LIVER
from ..series.lesions3d import Lesion3D, SeriesMeasurements
from .dicom import (
    BUILD_ERRORS,
    DEVICE_SERIAL_NUMBER,
    MANUFACTURER,
    SEG_SERIES_NUMBER,
    SR_SERIES_NUMBER,
    check_source_image,
    checked_number,
    deidentified,
    finding_codes,
    measurement_report,
    seg_references,
    segment_frames,
    slice_thickness,
)

#: Local coding scheme (PS3.16 8.2: designators starting "99" are private) for what no standard code names.
LOCAL_SCHEME = "99LIVERLESION"
LESION_BURDEN = ("LESIONBURDEN", LOCAL_SCHEME, "Lesion burden (lesion volume / liver volume)")
#: Segment numbers are US (PS3.3 C.8.20.4): the liver and at most this many lesions.
MAX_LESIONS = 65534
#: Orientations (direction cosines) and pixel spacings (mm) within this of source 0's are the same.
_ORIENTATION_TOLERANCE = 1e-4


def _model(model: Mapping[str, Any] | None) -> tuple[str, str]:
    if model is not None and not isinstance(model, Mapping):
        raise InputError(f"model={model!r}; accepted: a mapping with 'name' and 'version' (the package's model)")
    model = model or {}
    return str(model.get("name") or "liverlesion"), str(model.get("version") or __version__)


def _check_measurements(measurements: Any) -> tuple[Lesion3D, ...]:
    """The lesions of ``measurements``, each with a known type, a unique id and finite values."""
    if not isinstance(measurements, SeriesMeasurements):
        raise InputError(f"series DICOM output needs the SeriesMeasurements of the series (measure_series), "
                         f"got {type(measurements).__name__}")
    if len(measurements.lesions) > MAX_LESIONS:
        raise InputError(f"{len(measurements.lesions)} lesions; a SEG holds at most {MAX_LESIONS} (segment "
                         "numbers are 16-bit, one is the liver)")
    seen: set[int] = set()
    for lesion in measurements.lesions:
        if isinstance(lesion.id, bool) or not isinstance(lesion.id, (int, np.integer)) or lesion.id < 1 \
                or lesion.id in seen:
            raise InputError(f"lesion id {lesion.id!r}; accepted: distinct integers >= 1 (the ids in lesion_ids)")
        seen.add(int(lesion.id))
        if lesion.label not in LESION_CLASSES:
            raise InputError(f"lesion {lesion.id} has type {lesion.label!r}; accepted: one of {LESION_CLASSES}")
        values = {"volume_ml": lesion.volume_ml, "long axis (mm)": lesion.axes.long_mm,
                  "short axis (mm)": lesion.axes.short_mm, "probability": lesion.probability}
        for name, value in values.items():
            if not _finite(value) or value < 0 or (name == "probability" and value > 1):
                raise InputError(f"lesion {lesion.id}'s {name} is {value!r}; accepted: a finite number >= 0"
                                 + (" and <= 1" if name == "probability" else ""))
    for name in ("liver_volume_ml", "burden"):
        value = getattr(measurements, name)
        if not _finite(value) or value < 0:
            raise InputError(f"the series' {name} is {value!r}; accepted: a finite number >= 0")
    return measurements.lesions


def _finite(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.number)) and math.isfinite(value)


def _check_sources(sources: Any, slices: int | None = None, shape: tuple[int, int] | None = None) -> list[Any]:
    """The series' single-frame CT datasets: one study, series and frame of reference, one plane geometry,
    positions stepping along the slice normal (the volume's slice order)."""
    import pydicom

    if isinstance(sources, pydicom.Dataset) or not isinstance(sources, Sequence) or not sources:
        raise InputError(f"sources must be the series' CT datasets, a non-empty sequence of pydicom Datasets "
                         f"in the volume's slice order, got {type(sources).__name__}")
    sources = list(sources)
    if slices is not None and len(sources) != slices:
        raise InputError(f"the volumes have {slices} slices but {len(sources)} source datasets were given; "
                         "accepted: one CT dataset per slice, in the volume's slice order")
    first = sources[0]
    for k, ds in enumerate(sources):
        what = f"source {k} of the series"
        if not isinstance(ds, pydicom.Dataset):
            raise InputError(f"{what} is a {type(ds).__name__}; accepted: a pydicom Dataset (pydicom.dcmread)")
        if ds.get("Modality") != "CT":
            raise InputError(f"{what} is not a CT image (Modality {ds.get('Modality')!r}); accepted: CT images")
        if not ds.get("SOPInstanceUID"):
            raise DicomError(f"{what} has no SOP Instance UID (0008,0018), which the SEG and SR reference; "
                             "accepted: CT images with one")
        what = f"{what} ({ds.SOPInstanceUID})"
        if check_source_image(ds, what) != 1:
            raise InputError(f"{what} is multi-frame; accepted: a series of single-frame CT images")
        if shape is not None and (ds.get("Rows"), ds.get("Columns")) != shape:
            raise InputError(f"{what} is {ds.get('Rows')} x {ds.get('Columns')}, the volumes' slices "
                             f"{shape[0]} x {shape[1]}: pass the series the volumes were made from")
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
            if ds.get(keyword) != first.get(keyword):
                raise InputError(f"{what}'s {keyword} {ds.get(keyword)} is not source 0's {first.get(keyword)}; "
                                 "accepted: the images of one series")
        for keyword in ("ImageOrientationPatient", "PixelSpacing"):
            if not np.allclose(np.asarray(ds[keyword].value, float), np.asarray(first[keyword].value, float),
                               rtol=0, atol=_ORIENTATION_TOLERANCE):
                raise InputError(f"{what}'s {keyword} {list(ds[keyword].value)} is not source 0's "
                                 f"{list(first[keyword].value)}; accepted: one orientation and pixel spacing")
    uids = [str(ds.SOPInstanceUID) for ds in sources]
    if len(set(uids)) != len(uids):
        raise InputError("two source datasets share a SOP Instance UID; accepted: each image of the series once")
    orientation = np.asarray(first.ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    steps = np.diff([float(np.dot(normal, np.asarray(ds.ImagePositionPatient, float))) for ds in sources])
    if steps.size and not (np.all(steps > 0) or np.all(steps < 0)):
        k = int(np.flatnonzero(steps <= 0)[0] if steps[0] > 0 else np.flatnonzero(steps >= 0)[0])
        raise InputError(f"sources {k} and {k + 1} are not in slice order (positions along the normal step by "
                         f"{steps[k]:.3g} mm); accepted: the datasets sorted along the slice normal, as the volume")
    return sources


def _check_volumes(labels: Any, lesion_ids: Any) -> tuple[int, int, int]:
    """The shape of two (slices, rows, cols) integer volumes of one shape."""
    for name, volume in (("labels", labels), ("lesion_ids", lesion_ids)):
        if not isinstance(volume, np.ndarray) or volume.ndim != 3 or volume.dtype.kind not in "ui" \
                or 0 in volume.shape:
            got = f"{volume.dtype} {volume.shape}" if isinstance(volume, np.ndarray) else type(volume).__name__
            raise InputError(f"{name} must be a (slices, rows, cols) integer array, got {got}")
    if labels.shape != lesion_ids.shape:
        raise InputError(f"labels are {labels.shape} and lesion_ids {lesion_ids.shape}; accepted: one shape")
    slices, rows, cols = labels.shape
    return slices, rows, cols


def _segment_numbers(labels: np.ndarray, lesion_ids: np.ndarray, lesions: Sequence[Lesion3D]) -> np.ndarray:
    """(slices, rows, cols) segment numbers: 1 liver outside lesions, k + 2 the k-th lesion, 0 the rest.

    Built slice by slice (no volume-sized temporaries); lesion voxels must be the lesion labels,
    and each lesion's voxel count its ``Lesion3D.voxels``.
    """
    top = max((lesion.id for lesion in lesions), default=0)
    dtype = np.uint8 if len(lesions) + 1 <= np.iinfo(np.uint8).max else np.uint16
    lookup = np.zeros(top + 1, dtype)
    for k, lesion in enumerate(lesions):
        lookup[lesion.id] = k + 2
    counts = np.zeros(top + 1, np.int64)
    numbers = np.zeros(labels.shape, dtype)
    for z in range(labels.shape[0]):
        ids, label = lesion_ids[z], labels[z]
        if int(label.min()) < 0 or int(label.max()) > FIRST_LESION_LABEL + len(LESION_CLASSES) - 1:
            raise InputError(f"labels on slice {z} range {label.min()}..{label.max()}; accepted: "
                             f"0..{FIRST_LESION_LABEL + len(LESION_CLASSES) - 1} (background, liver, lesion types)")
        if int(ids.min()) < 0 or int(ids.max()) > top:
            raise InputError(f"lesion_ids on slice {z} reach {ids.max() if ids.max() > top else ids.min()}, "
                             f"which no Lesion3D has; accepted: 0 or an id of measurements.lesions")
        in_lesion = ids > 0
        if not np.array_equal(in_lesion, label >= FIRST_LESION_LABEL):
            raise InputError(f"on slice {z}, lesion_ids and labels disagree on which voxels are lesion; accepted: "
                             "lesion_ids > 0 exactly where labels are a lesion type")
        counts += np.bincount(ids.ravel(), minlength=top + 1)
        numbers[z] = np.where(in_lesion, lookup[ids], label == LIVER)
    for lesion in lesions:
        if counts[lesion.id] != lesion.voxels or lesion.voxels == 0:
            raise InputError(f"lesion {lesion.id} has {counts[lesion.id]} voxels in lesion_ids, its Lesion3D "
                             f"{lesion.voxels}: pass the measurements made from these volumes")
    unknown = np.flatnonzero((counts > 0) & (lookup == 0))
    unknown = unknown[unknown > 0]  # id 0 is no lesion
    if unknown.size:
        raise InputError(f"lesion_ids holds id {int(unknown[0])}, which no Lesion3D has; accepted: 0 or an id "
                         "of measurements.lesions")
    return numbers


def _descriptions(hd: Any, lesions: Sequence[Lesion3D], algorithm: Any) -> list[Any]:
    code = finding_codes()

    def segment(number: int, label: str, kind: str, tracking: str, region: bool) -> Any:
        return hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=code["anatomy" if kind == "liver" else "abnormal"],
            segmented_property_type=code[kind], algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, anatomic_regions=[code["liver"]] if region else None,
            tracking_id=tracking, tracking_uid=hd.UID(),
            display_color=hd.color.CIELabColor.from_rgb(*LABEL_COLOURS[kind]))

    liver = segment(1, "Liver", "liver", "Liver", False)
    liver.SegmentDescription = "liver outside the lesions (the lesions are their own segments)"
    return [liver, *(segment(k + 2, f"Lesion {x.id} ({x.label})", x.label, f"Lesion {x.id}", True)
                     for k, x in enumerate(lesions))]


def series_to_dicom_seg(labels: np.ndarray, lesion_ids: np.ndarray, measurements: SeriesMeasurements,
                        sources: Sequence[Any], *, model: Mapping[str, Any] | None = None,
                        backend: str | None = None, precision: str | None = None,
                        series_number: int = SEG_SERIES_NUMBER, instance_number: int = 1,
                        slice_thickness_mm: float | None = None) -> Any:
    """One BINARY multi-frame Segmentation of a series: "Liver" and one segment per 3D lesion.

    ``labels`` (slices, rows, cols) are the label volume, ``lesion_ids`` the 3D lesion ids
    (0 none), ``sources`` the series' CT datasets in the same slice order (headers suffice).
    ``slice_thickness_mm`` is used only where the sources record no usable Slice Thickness.
    """
    hd = require("highdicom", "dicom", "writing DICOM SEG")
    from pydicom.sr.codedict import codes
    from pydicom.valuerep import DS

    lesions = _check_measurements(measurements)
    slices, rows, cols = _check_volumes(labels, lesion_ids)
    sources = _check_sources(sources, slices, (rows, cols))
    numbers = _segment_numbers(labels, lesion_ids, lesions)
    thickness = slice_thickness(sources[0], 1, slice_thickness_mm, "source 0 of the series")
    series_number = checked_number(series_number, "series_number")
    instance_number = checked_number(instance_number, "instance_number")
    name, version = _model(model)
    parameters = {k: v for k, v in (("backend", backend), ("precision", precision)) if v}
    algorithm = hd.AlgorithmIdentificationSequence(
        name=name, family=codes.cid7162.ArtificialIntelligence, version=version,
        source=f"liverlesion {__version__}", parameters=parameters or None)
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=numbers, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=_descriptions(hd, lesions, algorithm), series_instance_uid=hd.UID(),
            series_number=series_number, sop_instance_uid=hd.UID(), instance_number=instance_number,
            manufacturer=MANUFACTURER, manufacturer_model_name=name, software_versions=f"liverlesion {__version__}",
            device_serial_number=DEVICE_SERIAL_NUMBER, content_label="LIVERLESION",
            content_description=f"{name} {version} liver and 3D lesion segmentation", omit_empty_frames=True,
        )
    except BUILD_ERRORS as exc:  # a source attribute our checks do not know of
        raise DicomError(f"series {sources[0].SeriesInstanceUID}: no DICOM SEG can be built on it "
                         f"({type(exc).__name__}: {exc})") from None
    if thickness is not None:
        seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness = DS(thickness, auto_format=True)
    return deidentified(seg, sources[0])


def _check_seg(seg: Any, sources: Sequence[Any]) -> None:
    """Refuse anything but a Segmentation that references every source instance and no other."""
    referenced = seg_references(seg, "series_to_dicom_sr needs the DICOM Segmentation of this series "
                                     "(series_to_dicom_seg)")
    if referenced != {str(ds.SOPInstanceUID) for ds in sources}:
        raise InputError(f"the SEG {seg.get('SOPInstanceUID')} references {len(referenced)} instances, not these "
                         f"{len(sources)} sources: pass the SEG made from this series")


def _lesion_segments(seg: Any, lesions: Sequence[Lesion3D]) -> dict[int, tuple[int, str]]:
    """Lesion id -> (segment number, tracking UID), found by the segments' tracking ids ("Lesion 3")."""
    by_tracking = {str(item.get("TrackingID", "")): (int(item.SegmentNumber), str(item.get("TrackingUID", "")))
                   for item in seg.SegmentSequence}
    out = {}
    for lesion in lesions:
        found = by_tracking.get(f"Lesion {lesion.id}")
        if found is None:
            raise InputError(f"the SEG has no segment for lesion {lesion.id}: pass the SEG made from these "
                             "measurements")
        out[lesion.id] = found
    return out


def _frame_sources(seg: Any, number: int | None, sources: Sequence[Any]) -> list[Any]:
    """The source datasets that segment ``number``'s frames (all frames: None) were made on, in slice order."""
    every = range(1, len(seg.PerFrameFunctionalGroupsSequence) + 1)
    frames = segment_frames(seg, number) if number is not None else every
    used: set[str] = set()
    for frame in frames:
        item = seg.PerFrameFunctionalGroupsSequence[frame - 1]
        for derivation in item.get("DerivationImageSequence", []):
            used.update(str(ref.ReferencedSOPInstanceUID) for ref in derivation.get("SourceImageSequence", []))
    return [ds for ds in sources if str(ds.SOPInstanceUID) in used]


def _axis(hd: Any, name: Any, mm: float, source: Any) -> Any:
    """A RECIST axis: its length, referencing the CT image it was measured on.

    Not its end points: TID 1411 groups take no coordinates in their measurements (highdicom
    refuses them); ``Lesion3D.axes`` keeps them for drawing.
    """
    from pydicom.sr.codedict import codes

    return hd.sr.Measurement(name=name, value=mm, unit=codes.UCUM.Millimeter,
                             referenced_images=[hd.sr.SourceImageForMeasurement.from_source_image(source)])


def series_to_dicom_sr(measurements: SeriesMeasurements, sources: Sequence[Any], seg: Any, *,
                       model: Mapping[str, Any] | None = None, series_number: int = SR_SERIES_NUMBER,
                       instance_number: int = 1) -> Any:
    """A Comprehensive 3D SR (TID 1500) of a series: one group per 3D lesion referencing its segment in
    ``seg``, and one for the liver (volume, lesion burden)."""
    hd = require("highdicom", "dicom", "writing DICOM SR")
    from pydicom import Dataset
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    lesions = _check_measurements(measurements)
    sources = _check_sources(sources)
    _check_seg(seg, sources)
    series_number = checked_number(series_number, "series_number")
    instance_number = checked_number(instance_number, "instance_number")
    segments = _lesion_segments(seg, lesions)
    code = finding_codes()
    name, version = _model(model)
    algorithm = hd.sr.AlgorithmIdentification(name=name, version=version)
    site = [hd.sr.FindingSite(code["liver"])]
    millilitre = Code("ml", "UCUM", "milliliter")
    groups = []
    for lesion in lesions:
        if not 0 <= lesion.largest_slice < len(sources):
            raise InputError(f"lesion {lesion.id}'s largest slice is {lesion.largest_slice}; the series has "
                             f"{len(sources)} slices (0..{len(sources) - 1})")
        number, tracking_uid = segments[lesion.id]
        largest = sources[lesion.largest_slice]
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid or hd.UID(),
                                                          identifier=f"Lesion {lesion.id}"),
            referenced_segment=hd.sr.ReferencedSegment(
                seg.SOPClassUID, seg.SOPInstanceUID, number,
                source_images=[hd.sr.SourceImageForSegmentation.from_source_image(ds)
                               for ds in _frame_sources(seg, number, sources)]),
            finding_type=code[lesion.label], finding_category=code["abnormal"], finding_sites=site,
            algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(name=codes.SCT.Volume, value=lesion.volume_ml, unit=millilitre),
                _axis(hd, codes.SCT.LongAxis, lesion.axes.long_mm, largest),
                _axis(hd, codes.SCT.ShortAxis, lesion.axes.short_mm, largest),
                hd.sr.Measurement(name=codes.DCM.Probability, value=lesion.probability, unit=codes.UCUM.NoUnits),
            ],
        ))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Liver"),
        finding_type=code["liver"], finding_category=code["anatomy"], algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Volume, value=measurements.liver_volume_ml, unit=millilitre),
            hd.sr.Measurement(name=Code(*LESION_BURDEN), value=measurements.burden, unit=codes.UCUM.NoUnits),
        ],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)
                       for ds in _frame_sources(seg, None, sources)],
    ))
    report = measurement_report(groups, name, version)
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*sources, seg], content=report[0], series_instance_uid=hd.UID(), series_number=series_number,
            sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER, is_complete=True,
        )
    except BUILD_ERRORS as exc:  # a source attribute our checks do not know of
        raise DicomError(f"series {sources[0].SeriesInstanceUID}: no DICOM SR can be built on it "
                         f"({type(exc).__name__}: {exc})") from None
    scheme = Dataset()
    scheme.CodingSchemeDesignator = LOCAL_SCHEME
    scheme.CodingSchemeName = "liverlesion local codes"
    scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
    sr.CodingSchemeIdentificationSequence = [scheme]
    return deidentified(sr, sources[0])
