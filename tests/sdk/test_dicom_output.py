"""DICOM SEG and TID 1500 SR from a Prediction on a real CT, written, read back and checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from dicom_files import real
from liverlesion.errors import InputError
from liverlesion.grid import ModelGrid
from liverlesion.sdk import Postprocessor, load_slice, save_dicom, to_dicom_seg

hd = pytest.importorskip("highdicom")

MODEL = {"name": "liverlesion-joint", "version": "0.1.0", "arch": "joint"}
GRID = ModelGrid(size=(64, 64), spacing_mm=(1.5, 1.5))
CODES = {"liver": "10200004", "cyst": "367643001", "hemangioma": "400210000", "metastasis": "14799000"}


@pytest.fixture
def strict(monkeypatch):
    """Make pydicom raise on invalid values while our objects are built and read (as highdicom's tests do)."""
    from pydicom import config

    monkeypatch.setattr(config.settings, "writing_validation_mode", config.RAISE)
    monkeypatch.setattr(config.settings, "reading_validation_mode", config.RAISE)




def model_labels() -> np.ndarray:
    """A liver with two metastases and a cyst, on the 64 x 64 model grid."""
    y, x = np.mgrid[:64, :64]
    labels = np.zeros((64, 64), np.int32)
    labels[((y - 32) / 20) ** 2 + ((x - 30) / 16) ** 2 < 1] = 1
    for row, col, radius, label in ((28, 26, 4, 4), (25, 38, 2, 4), (40, 36, 3, 2)):
        labels[(y - row) ** 2 + (x - col) ** 2 < radius ** 2] = label
    return labels


def predict(slice_, labels=None):
    labels = model_labels() if labels is None else labels
    probs = np.full((5, 64, 64), 0.05, np.float32)
    np.put_along_axis(probs, labels[None].astype(np.intp), 0.8, axis=0)
    return Postprocessor(GRID)({"labels": labels[None], "probabilities": probs[None]}, slice_,
                               backend="onnxruntime", precision="fp32", model=MODEL)


@pytest.fixture
def ct():
    path = real("CT_small.dcm")
    slice_ = load_slice(path)
    return slice_.dataset, predict(slice_)


def test_seg_is_aligned_with_and_references_the_source(ct, tmp_path, strict):
    source, prediction = ct
    assert [x.label for x in prediction.lesions] == ["metastasis", "metastasis", "cyst"]
    path = save_dicom(prediction.to_dicom_seg(), tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == SegmentationStorage and seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns)
    for keyword in ("StudyInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert seg[keyword].value == source[keyword].value
    shared = seg.SharedFunctionalGroupsSequence[0]
    np.testing.assert_allclose(shared.PixelMeasuresSequence[0].PixelSpacing, source.PixelSpacing)
    np.testing.assert_allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                               source.ImageOrientationPatient)
    for frame in seg.PerFrameFunctionalGroupsSequence:
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient, source.ImagePositionPatient)
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID

    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert labels == ["Liver", "Cyst", "Metastasis"]  # no hemangioma was found, so no segment for it
    for item in seg.SegmentSequence:
        name = str(item.SegmentLabel).lower()
        assert item.SegmentedPropertyTypeCodeSequence[0].CodeValue == CODES[name]
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == (
            "91723000" if name == "liver" else "49755003")
        assert item.SegmentAlgorithmType == "AUTOMATIC" and item.SegmentAlgorithmName == MODEL["name"]

    read = hd.seg.segread(path)
    masks = read.get_pixels_by_source_instance([source.SOPInstanceUID], segment_numbers=[1, 2, 3])[0]
    np.testing.assert_array_equal(masks[..., 0], prediction.liver_mask)
    for channel, kind in ((1, "cyst"), (2, "metastasis")):
        ids = [x.id for x in prediction.lesions if x.label == kind]
        np.testing.assert_array_equal(masks[..., channel], np.isin(prediction.lesion_components, ids))


def test_sr_carries_each_lesion_and_references_the_seg(ct, tmp_path, strict):
    source, prediction = ct
    seg = to_dicom_seg(prediction, source)
    path = save_dicom(prediction.to_dicom_sr(source, seg), tmp_path / "sr.dcm")
    raw = pydicom.dcmread(path)
    assert raw.SOPClassUID == Comprehensive3DSRStorage
    evidence = {item.ReferencedSOPInstanceUID
                for study in raw.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence for item in series.ReferencedSOPSequence}
    assert evidence == {source.SOPInstanceUID, seg.SOPInstanceUID}

    segment_names = {int(s.SegmentNumber): str(s.SegmentLabel).lower() for s in seg.SegmentSequence}
    content = hd.sr.srread(path).content
    assert not content.get_planar_roi_measurement_groups()  # segment-level references: TID 1411 groups
    groups = {g.tracking_identifier: g for g in content.get_volumetric_roi_measurement_groups()}
    assert set(groups) == {f"Lesion {x.id}" for x in prediction.lesions} | {"Liver"}
    for lesion in prediction.lesions:
        group = groups[f"Lesion {lesion.id}"]
        assert group.finding_type.value == CODES[lesion.label]
        values = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
        assert values["Area"][0] == pytest.approx(lesion.area_mm2) and values["Area"][1] == "mm2"
        assert values["Probability"][0] == pytest.approx(lesion.probability)
        segment = group.referenced_segment
        assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert segment.referenced_frame_numbers is None  # a segment reference carries no frame number
        assert [segment_names[n] for n in segment.referenced_segment_numbers] == [lesion.label]
    liver = groups["Liver"]
    assert liver.get_measurements()[0].value == pytest.approx(prediction.liver_area_mm2)
    verdict = [q for q in liver.get_qualitative_evaluations() if q.name.value == "278201002"]
    assert verdict[0].value.value == CODES[prediction.slice_class]


def test_one_frame_of_an_enhanced_ct_gets_a_seg_on_that_frame(tmp_path):
    slice_ = load_slice(real("eCT_Supplemental.dcm"), frame=1, allow_non_hu=True)
    prediction = predict(slice_)
    seg = prediction.to_dicom_seg()
    frame_position = slice_.dataset.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    for frame in seg.PerFrameFunctionalGroupsSequence:
        reference = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert int(reference.ReferencedFrameNumber) == 2
        np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient,
                                   frame_position.ImagePositionPatient)
    save_dicom(prediction.to_dicom_sr(None, seg), tmp_path / "sr.dcm")
    assert pydicom.dcmread(tmp_path / "sr.dcm").SOPClassUID == Comprehensive3DSRStorage
    groups = hd.sr.srread(tmp_path / "sr.dcm").content.get_volumetric_roi_measurement_groups()
    assert groups
    for group in groups:
        sources = group.referenced_segment.source_images_for_segmentation
        assert [s.referenced_frame_numbers for s in sources] == [[2]]  # the CT frame the slice came from


def test_an_empty_prediction_still_gives_a_seg_and_a_report(ct, tmp_path):
    source, _ = ct
    prediction = predict(load_slice(source), np.zeros((64, 64), np.int32))
    seg = prediction.to_dicom_seg(source)
    sr = hd.sr.srread(save_dicom(prediction.to_dicom_sr(source, seg), tmp_path / "sr.dcm"))
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1 and groups[0].get_measurements()[0].value == 0.0


def test_dicom_output_refuses_the_wrong_source_or_seg(ct):
    source, prediction = ct
    other = pydicom.dcmread(real("693_UNCR.dcm"))
    with pytest.raises(InputError, match="512 x 512"):
        prediction.to_dicom_seg(other)
    renamed = pydicom.dcmread(real("CT_small.dcm"))
    renamed.SOPInstanceUID = pydicom.uid.generate_uid()
    with pytest.raises(InputError, match="SOP instance"):
        prediction.to_dicom_seg(renamed)
    with pytest.raises(InputError, match="Segmentation"):
        prediction.to_dicom_sr(source, source)
    no_cyst = predict(load_slice(source), np.where(model_labels() == 2, 1, model_labels()))
    with pytest.raises(InputError, match="no segment"):
        prediction.to_dicom_sr(source, no_cyst.to_dicom_seg())
    from_array = predict(load_slice(np.full((128, 128), -1000.0, np.float32), spacing=(0.66, 0.66)))
    with pytest.raises(InputError, match="source image"):
        from_array.to_dicom_seg()


def test_save_dicom_leaves_no_temporary_file(ct, tmp_path):
    source, prediction = ct
    save_dicom(prediction.to_dicom_seg(source), tmp_path / "seg.dcm")
    assert [p.name for p in Path(tmp_path).iterdir()] == ["seg.dcm"]


def test_a_liver_only_prediction_reports_its_one_segment(ct, tmp_path, strict):
    """A one-segment SEG has one frame, whose segment sits in the shared functional groups."""
    source, _ = ct
    liver_only = np.where(model_labels() > 0, 1, 0).astype(np.int32)
    prediction = predict(load_slice(source), liver_only)
    assert not prediction.lesions and prediction.liver_area_mm2 > 0
    seg = prediction.to_dicom_seg(source)
    assert int(seg.NumberOfFrames) == 1
    path = save_dicom(prediction.to_dicom_sr(source, seg), tmp_path / "sr.dcm")
    groups = hd.sr.srread(path).content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Liver"]
    segment = groups[0].referenced_segment
    assert segment.referenced_sop_instance_uid == seg.SOPInstanceUID and segment.referenced_segment_numbers == [1]
    assert groups[0].get_measurements()[0].value == pytest.approx(prediction.liver_area_mm2)
