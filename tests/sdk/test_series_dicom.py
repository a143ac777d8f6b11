"""Issue 15, outputs: one DICOM SEG and one TID 1500 SR for a whole series, on a synthetic CT series.

The series: 12 slices of 64 x 64 (1 mm pixels, 2 mm slices) with a liver ellipsoid holding two
balls, a metastasis (lesion 3) and a cyst (lesion 7); the label volumes are drawn directly, not
predicted, so every expected mask and reference is known independently of the code under test.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pydicom
import pytest

from dicom_validators import dciodvfy, dsrdump
from liverlesion.errors import DicomError, InputError, LiverLesionError
from liverlesion.sdk.diameters import AxialDiameters
from liverlesion.sdk.outputs.dicom import DEIDENTIFIED_WITHOUT_METHOD, save_dicom
from liverlesion.sdk.outputs.series_dicom import series_to_dicom_seg, series_to_dicom_sr
from liverlesion.sdk.series.lesions3d import Lesion3D, SeriesMeasurements
from series_files import ct_series, sphere_volume, write_series

hd = pytest.importorskip("highdicom")

SHAPE = (12, 64, 64)
SPACING, SLICE_MM = (1.0, 1.0), 2.0
MODEL = {"name": "liverlesion-joint", "version": "0.1.0"}
CODES = {"liver": "10200004", "cyst": "367643001", "metastasis": "14799000"}
VOLUME, LONG_AXIS, SHORT_AXIS, PROBABILITY = "118565006", "103339001", "103340004", "122157"
#: (id, type, label value, centre (slice, row, col) in mm from the first voxel, radius mm, made-up measures)
BALLS = ((3, "metastasis", 4, (10.0, 24.0, 24.0), 6.0, (0.904, 12.5, 11.25, 0.82)),
         (7, "cyst", 2, (14.0, 42.0, 40.0), 4.0, (0.268, 8.75, 7.5, 0.64)))


def _volumes() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """labels, lesion_ids and the true mask of each segment (the liver outside the balls, each ball)."""
    z, y, x = np.ogrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    liver = ((z - 5.5) / 7.0) ** 2 + ((y - 32) / 26.0) ** 2 + ((x - 32) / 24.0) ** 2 < 1
    labels = np.where(liver, 1, 0).astype(np.uint8)
    ids = np.zeros(SHAPE, np.uint16)
    masks = {}
    for lesion_id, _, value, centre, radius, _ in BALLS:
        ball = sphere_volume(SHAPE, centre, radius, SPACING, SLICE_MM)
        labels[ball], ids[ball] = value, lesion_id
        masks[f"Lesion {lesion_id}"] = ball
    masks["Liver"] = liver & (ids == 0)
    return labels, ids, masks


def _measurements(ids: np.ndarray, lesions=BALLS) -> SeriesMeasurements:
    out = []
    for lesion_id, label, _, _, _, (volume, long_mm, short_mm, probability) in lesions:
        slices = np.flatnonzero((ids == lesion_id).any(axis=(1, 2)))
        axes = AxialDiameters(long_mm, short_mm, ((20.0, 18.0), (28.0, 30.0)), ((24.0, 19.0), (24.0, 29.0)))
        out.append(Lesion3D(id=lesion_id, label=label, probability=probability, volume_ml=volume,
                            voxels=int((ids == lesion_id).sum()), first_slice=int(slices[0]),
                            last_slice=int(slices[-1]), largest_slice=int(slices[len(slices) // 2]),
                            largest_area_mm2=100.0, axes=axes))
    return SeriesMeasurements(lesions=tuple(out), liver_volume_ml=21.5, lesion_volume_ml=1.172, burden=0.0545,
                              connectivity="26-connected")


@pytest.fixture(scope="module")
def series():
    labels, ids, masks = _volumes()
    sources = ct_series(np.full(SHAPE, 60.0), SPACING, SLICE_MM, first_z_mm=-50.0)
    return labels, ids, masks, _measurements(ids), sources


@pytest.fixture(scope="module")
def written(series, tmp_path_factory):
    labels, ids, _, measurements, sources = series
    folder = tmp_path_factory.mktemp("series_dicom")
    seg = series_to_dicom_seg(labels, ids, measurements, sources, model=MODEL, backend="onnxruntime",
                              precision="fp32")
    sr = series_to_dicom_sr(measurements, sources, seg, model=MODEL)
    return save_dicom(seg, folder / "seg.dcm"), save_dicom(sr, folder / "sr.dcm")


def _items(dataset):
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _items(item)


def _groups(sr) -> dict[str, pydicom.Dataset]:
    """Measurement groups by tracking identifier."""
    out = {}
    for item in _items(sr):
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "125007":
            ids = [x.TextValue for x in item.ContentSequence if x.ConceptNameCodeSequence[0].CodeValue == "112039"]
            out[ids[0]] = item
    return out


def _children(group, code: str) -> list[pydicom.Dataset]:
    return [x for x in group.ContentSequence if x.ConceptNameCodeSequence[0].CodeValue == code]


def _num(group, code: str) -> tuple[float, str]:
    (item,) = _children(group, code)
    value = item.MeasuredValueSequence[0]
    return float(value.NumericValue), value.MeasurementUnitsCodeSequence[0].CodeValue


# -- validators -------------------------------------------------------------------------------------------------
def test_the_series_seg_and_sr_pass_dciodvfy_and_dsrdump(written):
    seg_path, sr_path = written
    for path in (seg_path, sr_path):
        dciodvfy(path)
    dsrdump(sr_path)


def test_a_series_without_lesions_gets_a_seg_and_sr_that_pass_the_validators(series, tmp_path):
    labels, ids, _, _, sources = series
    labels = np.where(labels > 0, 1, 0).astype(np.uint8)
    measurements = _measurements(ids, lesions=())
    seg = series_to_dicom_seg(labels, np.zeros_like(ids), measurements, sources, model=MODEL)
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == ["Liver"]
    sr = series_to_dicom_sr(measurements, sources, seg, model=MODEL)
    assert list(_groups(sr)) == ["Liver"]
    seg_path, sr_path = save_dicom(seg, tmp_path / "seg.dcm"), save_dicom(sr, tmp_path / "sr.dcm")
    for path in (seg_path, sr_path):
        dciodvfy(path)
    dsrdump(sr_path)


# -- the SEG -------------------------------------------------------------------------------------------------------
def test_seg_references_every_source_instance_and_each_frame_the_slice_at_its_position(series, written):
    *_, sources = series
    seg = pydicom.dcmread(written[0])
    assert seg.SegmentationType == "BINARY" and seg.SegmentsOverlap == "NO"
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == \
        {ds.SOPInstanceUID for ds in sources}
    by_position = {tuple(np.round(np.asarray(ds.ImagePositionPatient, float), 3)): ds.SOPInstanceUID
                   for ds in sources}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        position = tuple(np.round(np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, float), 3))
        (source,) = frame.DerivationImageSequence[0].SourceImageSequence
        assert source.ReferencedSOPInstanceUID == by_position[position]


def test_seg_pixels_are_the_input_masks_one_segment_per_lesion(series, written):
    _, _, masks, _, sources = series
    seg = pydicom.dcmread(written[0])
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    assert labels == {1: "Liver", 2: "Lesion 3 (metastasis)", 3: "Lesion 7 (cyst)"}
    types = {str(s.SegmentLabel): s.SegmentedPropertyTypeCodeSequence[0].CodeValue for s in seg.SegmentSequence}
    assert types == {"Liver": CODES["liver"], "Lesion 3 (metastasis)": CODES["metastasis"],
                     "Lesion 7 (cyst)": CODES["cyst"]}
    slice_of = {ds.SOPInstanceUID: k for k, ds in enumerate(sources)}
    pixels = seg.pixel_array.reshape(-1, *SHAPE[1:])
    found = {name: np.zeros(SHAPE, bool) for name in masks}
    frames_of = {name: [] for name in masks}
    for frame, item in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        name = labels[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)].split(" (")[0]
        k = slice_of[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert frame.any(), "empty frames are omitted"
        found[name][k] = frame.astype(bool)
        frames_of[name].append(k)
    for name, mask in masks.items():
        np.testing.assert_array_equal(found[name], mask, err_msg=name)
        assert sorted(frames_of[name]) == list(np.flatnonzero(mask.any(axis=(1, 2)))), name  # one frame a slice


def test_seg_from_headers_only_matches_the_one_from_full_images(series, tmp_path):
    labels, ids, _, measurements, sources = series
    paths = write_series(tmp_path / "ct", sources)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    assert "PixelData" not in headers[0]
    seg = series_to_dicom_seg(labels, ids, measurements, headers, model=MODEL)
    full = series_to_dicom_seg(labels, ids, measurements, sources, model=MODEL)
    assert seg.NumberOfFrames == full.NumberOfFrames and seg.PixelData == full.PixelData


# -- the SR --------------------------------------------------------------------------------------------------------
def test_each_sr_group_references_its_lesions_segment_and_carries_its_measurements(series, written):
    _, _, _, measurements, sources = series
    seg, sr = pydicom.dcmread(written[0]), pydicom.dcmread(written[1])
    groups = _groups(sr)
    assert sorted(groups) == ["Lesion 3", "Lesion 7", "Liver"]
    segments = {str(s.TrackingID): s for s in seg.SegmentSequence}
    for number, lesion in enumerate(measurements.lesions, start=2):
        group = groups[f"Lesion {lesion.id}"]
        (reference,) = [x for x in group.ContentSequence if x.ValueType == "IMAGE"
                        and x.ConceptNameCodeSequence[0].CodeValue == "121191"]  # Referenced Segment
        (ref,) = reference.ReferencedSOPSequence
        assert ref.ReferencedSOPInstanceUID == seg.SOPInstanceUID and int(ref.ReferencedSegmentNumber) == number
        assert "ReferencedFrameNumber" not in ref  # PS3.3 C.18.4: a segment or frames, never both
        assert int(segments[f"Lesion {lesion.id}"].SegmentNumber) == number
        (uid,) = _children(group, "112040")  # Tracking UID: the segment's own
        assert uid.UID == segments[f"Lesion {lesion.id}"].TrackingUID
        (finding,) = _children(group, "121071")
        assert finding.ConceptCodeSequence[0].CodeValue == CODES[lesion.label]
        (site,) = _children(group, "363698007")
        assert site.ConceptCodeSequence[0].CodeValue == CODES["liver"]
        assert _num(group, VOLUME) == (pytest.approx(lesion.volume_ml), "ml")
        assert _num(group, LONG_AXIS) == (pytest.approx(lesion.axes.long_mm), "mm")
        assert _num(group, SHORT_AXIS) == (pytest.approx(lesion.axes.short_mm), "mm")
        assert _num(group, PROBABILITY) == (pytest.approx(lesion.probability), "1")
        for axis in (LONG_AXIS, SHORT_AXIS):  # measured on the slice where the lesion is largest
            (image,) = [x for x in _children(group, axis)[0].ContentSequence if x.ValueType == "IMAGE"]
            assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
                sources[lesion.largest_slice].SOPInstanceUID
        made_on = [x.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for x in _children(group, "121233")]
        assert made_on == [ds.SOPInstanceUID for ds in sources[lesion.first_slice:lesion.last_slice + 1]]


def test_the_liver_group_carries_the_liver_volume_and_the_lesion_burden(series, written):
    _, _, _, measurements, _ = series
    liver = _groups(pydicom.dcmread(written[1]))["Liver"]
    (finding,) = _children(liver, "121071")
    assert finding.ConceptCodeSequence[0].CodeValue == CODES["liver"]
    assert _num(liver, VOLUME) == (pytest.approx(measurements.liver_volume_ml), "ml")
    assert _num(liver, "LESIONBURDEN") == (pytest.approx(measurements.burden), "1")
    (burden,) = _children(liver, "LESIONBURDEN")
    assert burden.ConceptNameCodeSequence[0].CodingSchemeDesignator == "99LIVERLESION"
    sr = pydicom.dcmread(written[1])
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence] == ["99LIVERLESION"]


# -- bad input -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keyword", ["PatientID", "FrameOfReferenceUID", "ImagePositionPatient", "StudyDate"])
def test_a_source_lacking_what_the_seg_needs_is_a_typed_error(series, keyword):
    labels, ids, _, measurements, sources = series
    sources = [copy.deepcopy(ds) for ds in sources]
    del sources[4][keyword]
    with pytest.raises(DicomError, match=rf"source 4 of the series .*{keyword}"):
        series_to_dicom_seg(labels, ids, measurements, sources, model=MODEL)
    with pytest.raises(DicomError, match=keyword):
        series_to_dicom_sr(measurements, sources, None)


def test_a_source_without_slice_thickness_needs_one_for_the_seg(series):
    labels, ids, _, measurements, sources = series
    sources = [copy.deepcopy(ds) for ds in sources]
    for ds in sources:
        ds.SliceThickness = None
    with pytest.raises(DicomError, match="Slice Thickness.*slice_thickness_mm"):
        series_to_dicom_seg(labels, ids, measurements, sources)
    seg = series_to_dicom_seg(labels, ids, measurements, sources, slice_thickness_mm=2.0)
    assert float(seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].SliceThickness) == 2.0


def test_volumes_and_sources_of_different_lengths_are_a_typed_error(series):
    labels, ids, _, measurements, sources = series
    with pytest.raises(InputError, match="12 slices but 11 source datasets"):
        series_to_dicom_seg(labels, ids, measurements, sources[:-1])
    with pytest.raises(InputError, match="labels are .* and lesion_ids"):
        series_to_dicom_seg(labels, ids[:-1], measurements, sources)


def _shuffled(sources):
    return [sources[1], sources[0], *sources[2:]]


def _other_series(sources):
    moved = copy.deepcopy(sources[5])
    moved.SeriesInstanceUID = pydicom.uid.generate_uid()
    return [*sources[:5], moved, *sources[6:]]


def _tilted(sources):
    tilted = copy.deepcopy(sources[3])
    tilted.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 0.9, 0.43589]
    return [*sources[:3], tilted, *sources[4:]]


BAD_SOURCES = {
    "out of slice order": (_shuffled, "not in slice order"),
    "two series": (_other_series, "SeriesInstanceUID .* accepted: the images of one series"),
    "two orientations": (_tilted, "ImageOrientationPatient .* one orientation"),
    "not datasets": (lambda s: [str(x.SOPInstanceUID) for x in s], "is a str; accepted: a pydicom Dataset"),
    "one dataset": (lambda s: s[0], "non-empty sequence of pydicom Datasets"),
    "the same instance twice": (lambda s: [*s[:11], s[0]], "not in slice order|share a SOP Instance UID"),
}


@pytest.mark.parametrize("name", BAD_SOURCES)
def test_sources_that_are_not_one_sorted_series_are_typed_errors(series, name):
    labels, ids, _, measurements, sources = series
    change, message = BAD_SOURCES[name]
    with pytest.raises(InputError, match=message):
        series_to_dicom_seg(labels, ids, measurements, change(sources))


def _bad_volumes(name: str, labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, ids = labels.copy(), ids.copy()
    if name == "lesion voxel without an id":
        ids[ids == 7] = 0
    elif name == "id outside the lesion labels":
        ids[0, 0, 0] = 3
    elif name == "id no Lesion3D has":
        ids[ids == 7] = 9
    elif name == "labels beyond the lesion types":
        labels[0, 0, 0] = 5
    elif name == "float labels":
        labels = labels.astype(np.float32)
    elif name == "2-D labels":
        labels, ids = labels[0], ids[0]
    return labels, ids


BAD_VOLUMES = {"lesion voxel without an id": "disagree on which voxels are lesion",
               "id outside the lesion labels": "disagree on which voxels are lesion",
               "id no Lesion3D has": "reach 9, which no Lesion3D has",
               "labels beyond the lesion types": "accepted: 0..4",
               "float labels": "integer array, got float32",
               "2-D labels": "slices but|integer array"}


@pytest.mark.parametrize("name", BAD_VOLUMES)
def test_volumes_that_disagree_with_each_other_are_typed_errors(series, name):
    labels, ids, _, measurements, sources = series
    labels, ids = _bad_volumes(name, labels, ids)
    with pytest.raises(InputError, match=BAD_VOLUMES[name]):
        series_to_dicom_seg(labels, ids, measurements, sources)


def test_measurements_that_are_not_of_these_volumes_are_typed_errors(series):
    labels, ids, _, measurements, sources = series
    lesion = measurements.lesions[0]
    wrong = {"voxel count": (replace(lesion, voxels=lesion.voxels + 1), "has \\d+ voxels in lesion_ids"),
             "type": (replace(lesion, label="tumour"), "type 'tumour'"),
             "probability": (replace(lesion, probability=float("nan")), "probability is nan"),
             "volume": (replace(lesion, volume_ml=-1.0), "volume_ml is -1.0")}
    for changed, message in wrong.values():
        bad = replace(measurements, lesions=(changed, *measurements.lesions[1:]))
        with pytest.raises(InputError, match=message):
            series_to_dicom_seg(labels, ids, bad, sources)
    with pytest.raises(InputError, match="SeriesMeasurements"):
        series_to_dicom_seg(labels, ids, measurements.to_dict(), sources)
    twice = replace(measurements, lesions=(lesion, lesion))
    with pytest.raises(InputError, match="distinct integers"):
        series_to_dicom_seg(labels, ids, twice, sources)


def test_the_sr_needs_the_seg_of_these_sources_and_measurements(series):
    labels, ids, _, measurements, sources = series
    seg = series_to_dicom_seg(labels, ids, measurements, sources, model=MODEL)
    with pytest.raises(InputError, match="DICOM Segmentation of this series.*got SOP class"):
        series_to_dicom_sr(measurements, sources, sources[0])
    with pytest.raises(InputError, match="references 12 instances, not these 11 sources"):
        series_to_dicom_sr(measurements, sources[:-1], seg)
    only_liver = _measurements(ids, lesions=())
    liver_seg = series_to_dicom_seg(np.where(labels > 0, 1, 0).astype(np.uint8), np.zeros_like(ids), only_liver,
                                    sources)
    with pytest.raises(InputError, match="no segment for lesion 3"):
        series_to_dicom_sr(measurements, sources, liver_seg)
    late = replace(measurements.lesions[0], largest_slice=12)
    with pytest.raises(InputError, match="largest slice is 12"):
        series_to_dicom_sr(replace(measurements, lesions=(late, *measurements.lesions[1:])), sources, seg)


@pytest.mark.parametrize("name, value", [("series_number", 0), ("instance_number", True), ("series_number", 2.5)])
def test_bad_series_and_instance_numbers_are_typed_errors(series, name, value):
    labels, ids, _, measurements, sources = series
    with pytest.raises(InputError, match=name):
        series_to_dicom_seg(labels, ids, measurements, sources, **{name: value})


def test_every_refusal_is_a_liverlesion_error(series):
    """No highdicom traceback leaks: a model that is not a mapping is refused too."""
    labels, ids, _, measurements, sources = series
    with pytest.raises(LiverLesionError, match="model="):
        series_to_dicom_seg(labels, ids, measurements, sources, model="liverlesion")


# -- de-identified sources -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [None, "site profile 7"])
def test_a_deidentified_series_gives_outputs_that_name_a_deidentification_method(series, tmp_path, method):
    labels, ids, _, measurements, sources = series
    sources = [copy.deepcopy(ds) for ds in sources]
    for ds in sources:
        ds.PatientIdentityRemoved = "YES"
        if method:
            ds.DeidentificationMethod = method
    seg = series_to_dicom_seg(labels, ids, measurements, sources, model=MODEL)
    sr = series_to_dicom_sr(measurements, sources, seg, model=MODEL)
    for obj in (seg, sr):
        assert obj.PatientIdentityRemoved == "YES"
        assert obj.DeidentificationMethod == (method or DEIDENTIFIED_WITHOUT_METHOD)
    seg_path, sr_path = save_dicom(seg, tmp_path / "seg.dcm"), save_dicom(sr, tmp_path / "sr.dcm")
    for path in (seg_path, sr_path):
        dciodvfy(path)
    dsrdump(sr_path)
