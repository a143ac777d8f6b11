"""Slices in: arrays, real DICOM files from pydicom and pydicom-data, NIfTI volumes, and bad input."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import get_decoder

from dicom_files import real
from liverlesion.errors import DataFormatError, DicomError, InputError, LiverLesionError
from liverlesion.sdk import Orientation, SliceInput, frame_count, load_slice
from liverlesion.sdk.geometry import orientation_from_directions

#: Single-frame axial CT among pydicom's test files and pydicom-data (all the CT there that is axial).
AXIAL_CT = ["CT_small.dcm", "693_J2KI.dcm", "693_UNCI.dcm", "693_UNCR.dcm", "693_J2KR.dcm", "explicit_VR-UN.dcm"]
TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"




def expected_hu(path: str) -> np.ndarray:
    """HU by the textbook formula from pydicom's own decode, independent of the SDK's code path."""
    ds = pydicom.dcmread(path)
    return ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


# -- real DICOM -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", AXIAL_CT)
def test_every_real_axial_ct_loads_as_hu_with_its_spacing(name):
    path = real(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    for source in (path, Path(path), pydicom.dcmread(path)):
        s = load_slice(source)
        assert s.hu.dtype == np.float32 and s.shape == (ds.Rows, ds.Columns)
        assert s.spacing_mm == pytest.approx(tuple(float(v) for v in ds.PixelSpacing))
        np.testing.assert_array_equal(s.hu, expected_hu(path))
        assert s.source["sop_instance_uid"] == ds.SOPInstanceUID and s.dataset is not None


def test_lossless_jpeg2000_decodes_to_the_uncompressed_pixels_and_lossy_to_its_reference():
    np.testing.assert_array_equal(load_slice(real("693_J2KR.dcm")).hu, load_slice(real("693_UNCR.dcm")).hu)
    lossy, reference = load_slice(real("693_J2KI.dcm")).hu, load_slice(real("693_UNCI.dcm")).hu
    np.testing.assert_array_equal(lossy, reference)  # UNCI is the lossy image stored uncompressed
    assert np.abs(lossy - load_slice(real("693_UNCR.dcm")).hu).mean() > 1  # and it did lose something


def test_a_flipped_axial_ct_is_mapped_to_the_radiological_view():
    s = load_slice(real("explicit_VR-UN.dcm"))  # orientation [1,0,0, 0,-1,0]: rows run posterior -> anterior
    assert s.orientation == Orientation(flip_rows=True)
    np.testing.assert_array_equal(s.canonical_hu(), s.hu[::-1])


@pytest.mark.parametrize("name", ["693_J2KI.dcm", "693_J2KR.dcm"])
def test_jpeg2000_without_a_plugin_names_the_plugin_to_install(name, monkeypatch):
    path = real(name)
    decoder = get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {"gdcm": ("gdcm>=3.0.10",),
                                                  "pylibjpeg": ("pylibjpeg>=2.0", "pylibjpeg-openjpeg>=2.0"),
                                                  "pillow": ("numpy", "pillow>=10.0")})
    with pytest.raises(DicomError, match="pylibjpeg-openjpeg") as info:
        load_slice(path)
    assert "JPEG 2000" in str(info.value) and name in str(info.value)


def test_jpeg_lossless_ct_decodes_or_names_its_missing_plugin():
    path = real("bad_sequence.dcm")  # a real CT compressed as JPEG Lossless SV1
    decoder = get_decoder(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    if decoder.is_available:
        assert load_slice(path).shape == (512, 512)
    else:
        with pytest.raises(DicomError, match="pylibjpeg-libjpeg"):
            load_slice(path)


def test_enhanced_multiframe_ct_is_read_frame_by_frame_from_its_functional_groups():
    path = real("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    assert frame_count(ds) == 2
    with pytest.raises(DicomError, match="frame="):
        load_slice(path)
    with pytest.raises(DicomError, match="Rescale Type is 'US'"):  # its frames are a perfusion map
        load_slice(path, frame=0)
    with pytest.raises(InputError, match="0..1"):
        load_slice(path, frame=2, allow_non_hu=True)
    raw = ds.pixel_array.astype(np.float64)
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    for frame in range(2):
        s = load_slice(ds, frame=frame, allow_non_hu=True)
        np.testing.assert_array_equal(s.hu, raw[frame] * float(transform.RescaleSlope)
                                      + float(transform.RescaleIntercept))
        assert s.spacing_mm == pytest.approx(tuple(float(v) for v in measures.PixelSpacing))
        assert s.orientation == Orientation(flip_cols=True)  # row direction (-1, 0, 0): towards patient right
        assert s.source["frame"] == frame


@pytest.mark.parametrize("relative, plane", [("dicomdirtests/98892001/CT2N/6293", "sagittal"),
                                             ("dicomdirtests/98892001/CT2N/6924", "coronal")])
def test_non_axial_ct_is_refused(relative, plane):
    path = TEST_FILES / relative
    with pytest.raises(DicomError, match=f"{plane} slice.*accepted: axial"):
        load_slice(path)


def test_a_tilted_ct_is_refused_unless_the_tilt_is_allowed():
    path = real("J2K_pixelrep_mismatch.dcm")  # gantry tilt of 22 degrees
    with pytest.raises(DicomError, match="22.0 degrees.*max_tilt_deg"):
        load_slice(path)
    assert load_slice(path, max_tilt_deg=25).shape == (512, 512)


def test_non_ct_modality_is_refused():
    with pytest.raises(DicomError, match="modality is 'MR'.*accepted: CT"):
        load_slice(real("MR_small.dcm"))


def test_monochrome1_gives_the_same_hu_as_monochrome2():
    original = pydicom.dcmread(real("CT_small.dcm"))
    inverted = copy.deepcopy(original)
    inverted.PhotometricInterpretation = "MONOCHROME1"
    one, two = load_slice(inverted), load_slice(original)
    np.testing.assert_array_equal(one.hu, two.hu)  # the rescale defines HU; MONOCHROME1 only inverts display
    assert one.source["photometric_interpretation"] == "MONOCHROME1"


def test_colour_images_are_refused():
    ds = pydicom.dcmread(real("CT_small.dcm"))
    ds.PhotometricInterpretation, ds.SamplesPerPixel = "RGB", 3
    with pytest.raises(DicomError, match="'RGB'.*accepted: MONOCHROME1 or MONOCHROME2"):
        load_slice(ds)


def test_dicom_without_pixel_data_is_refused(tmp_path):
    ds = pydicom.dcmread(real("CT_small.dcm"))
    del ds.PixelData
    with pytest.raises(DicomError, match="no pixel data"):
        load_slice(ds)
    with pytest.raises(DicomError, match="no pixel data"):
        load_slice(pydicom.dcmread(real("CT_small.dcm"), stop_before_pixels=True))


@pytest.mark.parametrize("fraction", [0.6, 0.9])
def test_truncated_dicom_files_are_refused_naming_the_file(tmp_path, fraction):
    data = Path(real("CT_small.dcm")).read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(DicomError, match="cut.dcm.*(truncated|corrupt)"):
        load_slice(path)


@pytest.mark.parametrize("content", [b"", b"hello, not a DICOM file\n" * 10, bytes(range(256)) * 4])
def test_non_dicom_files_are_refused(tmp_path, content):
    path = tmp_path / "scan.dcm"
    path.write_bytes(content)
    with pytest.raises(DicomError, match="scan.dcm is not a DICOM file.*accepted"):
        load_slice(path)


def test_a_missing_file_is_refused(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_slice(tmp_path / "nothing.dcm")


def test_pixel_spacing_missing_absurd_or_given():
    ds = pydicom.dcmread(real("CT_small.dcm"))
    del ds.PixelSpacing
    with pytest.raises(DicomError, match=r"spacing=\(row_mm, col_mm\)"):
        load_slice(ds)
    assert load_slice(ds, spacing=(0.7, 0.8)).spacing_mm == (0.7, 0.8)
    for absurd in ([0, 0], [50, 50], [0.7]):
        ds.PixelSpacing = absurd
        with pytest.raises(DicomError, match="spacing"):
            load_slice(ds)


def test_dataset_without_transfer_syntax_is_refused():
    ds = pydicom.dcmread(real("CT_small.dcm"))
    del ds.file_meta.TransferSyntaxUID
    with pytest.raises(DicomError, match="Transfer Syntax UID"):
        load_slice(ds)


# -- arrays -------------------------------------------------------------------------------------------
def test_an_array_is_copied_to_float32_with_its_spacing():
    hu = np.arange(-500, 500, dtype=np.int16).reshape(20, 50)
    s = load_slice(hu, spacing=(0.7, 0.8))
    assert s.hu.dtype == np.float32 and s.spacing_mm == (0.7, 0.8) and s.orientation.is_identity
    np.testing.assert_array_equal(s.hu, hu)
    hu[0, 0] = 1000
    assert s.hu[0, 0] == -500  # later changes by the caller do not reach the slice
    assert load_slice(hu, default_spacing=(0.9, 0.9)).spacing_mm == (0.9, 0.9)
    assert load_slice(hu, spacing=(0.5, 0.5), default_spacing=(0.9, 0.9)).spacing_mm == (0.5, 0.5)
    assert load_slice(s) is s


@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8, 8), np.float32), "not 2D"),
    (np.zeros(64, np.float32), "not 2D"),
    (np.zeros((0, 8), np.float32), "empty"),
    (np.full((4, 4), np.nan, np.float32), "NaN or infinite"),
    (np.array([[0.0, np.inf], [1.0, 2.0]]), "NaN or infinite"),
    (np.zeros((4, 4), bool), "dtype bool"),
    (np.zeros((4, 4), object), "dtype object"),
    (np.zeros((4, 4), complex), "dtype complex"),
    (np.full((4, 4), "100"), "dtype <U3"),
])
def test_bad_arrays_are_refused_saying_what_is_accepted(bad, message):
    with pytest.raises(InputError, match=message) as info:
        load_slice(bad, spacing=(1.0, 1.0))
    assert "accepted" in str(info.value)


@pytest.mark.parametrize("spacing", [(0.0, 1.0), (100.0, 1.0), (-1.0, 1.0), ("a", 1.0), (1.0,), (np.nan, 1.0)])
def test_absurd_spacings_are_refused(spacing):
    with pytest.raises(InputError, match="spacing"):
        load_slice(np.zeros((8, 8), np.float32), spacing=spacing)


def test_an_array_without_spacing_is_refused():
    with pytest.raises(InputError, match=r"spacing=\(row_mm, col_mm\)"):
        load_slice(np.zeros((8, 8), np.float32))


@pytest.mark.parametrize("thing", [[[0.0, 1.0], [2.0, 3.0]], {"hu": 1}, 42, None, b"DICM"])
def test_unknown_input_kinds_are_refused(thing):
    with pytest.raises(InputError, match="accepted"):
        load_slice(thing, spacing=(1.0, 1.0))


def test_every_refusal_is_a_liverlesion_error():
    for issubclass_ in (InputError, DicomError, DataFormatError):
        assert issubclass(issubclass_, LiverLesionError)


# -- orientation ---------------------------------------------------------------------------------------
def test_orientation_puts_anterior_up_and_patient_right_on_the_left():
    # Stored transposed: columns run anterior -> posterior (+y), rows run right -> left (+x).
    orient = orientation_from_directions((0, 1, 0), (1, 0, 0))
    stored = np.zeros((6, 4))  # 6 rows along x (right->left), 4 cols along y (anterior->posterior)
    stored[5, 0] = 1  # most patient-left, most anterior
    canonical = orient.to_canonical(stored)
    assert canonical.shape == (4, 6) and canonical[0, 5] == 1  # top (anterior), right of image (patient left)
    np.testing.assert_array_equal(orient.from_canonical(canonical), stored)
    assert orient.canonical_spacing((0.5, 0.8)) == (0.8, 0.5)
    # Feet-first flipped image: rows posterior -> anterior, columns left -> right.
    flipped = orientation_from_directions((-1, 0, 0), (0, -1, 0))
    assert flipped == Orientation(flip_rows=True, flip_cols=True)


def test_slice_input_resamples_the_canonical_view():
    from liverlesion.grid import ModelGrid

    hu = np.zeros((10, 20), np.float32)
    hu[0, :] = 100.0  # stored first row = posterior edge for a rows-flipped slice
    s = SliceInput(hu=hu, spacing_mm=(1.0, 1.0), orientation=Orientation(flip_rows=True))
    model = s.on_model_grid(ModelGrid(size=(10, 20), spacing_mm=(1.0, 1.0)))
    assert model[-1].min() == 100.0 and model[:-1].max() == 0.0


# -- NIfTI ----------------------------------------------------------------------------------------------
def _volume(tmp_path, affine, shape=(6, 7, 5), name="vol.nii.gz"):
    nib = pytest.importorskip("nibabel")
    data = np.random.default_rng(1).integers(-1000, 1000, size=shape).astype(np.int16)
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return nib, path


AFFINES = {
    "ras": np.diag([0.7, 0.8, 2.5, 1.0]),
    "lps": np.diag([-0.7, -0.8, 2.5, 1.0]),
    "head-first-flipped-z": np.diag([-0.7, 0.8, -2.5, 1.0]),
    "permuted": np.array([[0, 0.8, 0, 0], [-0.7, 0, 0, 0], [0, 0, 2.5, 0], [0, 0, 0, 1.0]]),
    "slices-first": np.array([[0, 0.7, 0, 0], [0, 0, 0.8, 0], [2.5, 0, 0, 0], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("kind", sorted(AFFINES))
def test_nifti_slices_match_the_lits_reader_convention(tmp_path, kind):
    nib, path = _volume(tmp_path, AFFINES[kind])
    canonical = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(canonical.dataobj)
    zooms = canonical.header.get_zooms()
    for index in range(data.shape[2]):
        s = load_slice(path, index=index)
        np.testing.assert_array_equal(s.hu, data[:, :, index].T[::-1, ::-1])
        assert s.spacing_mm == pytest.approx((zooms[1], zooms[0]))
        assert s.source == {"kind": "nifti", "path": str(path), "index": index, "slices": data.shape[2]}


def test_nifti_rows_run_anterior_to_posterior_and_columns_right_to_left(tmp_path):
    nib = pytest.importorskip("nibabel")
    data = np.full((6, 7, 3), -1000, np.int16)  # air; identity affine: RAS+, x towards patient right, y anterior
    data[0, 6, 1] = 500  # patient's far left, far anterior
    data[5, 0, 1] = 300  # patient's far right, far posterior
    path = tmp_path / "marker.nii"
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    hu = load_slice(path, index=1).hu
    assert hu[0, -1] == 500  # top of the image (anterior), right of the image (patient left)
    assert hu[-1, 0] == 300 and np.count_nonzero(hu != -1000) == 2


def test_bad_nifti_input_is_refused(tmp_path):
    _, path = _volume(tmp_path, AFFINES["ras"])
    with pytest.raises(InputError, match="index="):
        load_slice(path)
    with pytest.raises(InputError, match="0..4"):
        load_slice(path, index=5)
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti volume at all")
    with pytest.raises(DataFormatError, match="broken.nii.gz"):
        load_slice(broken, index=0)
    cut = tmp_path / "cut.nii"
    _, whole = _volume(tmp_path, AFFINES["ras"], name="whole.nii")
    cut.write_bytes(whole.read_bytes()[:400])
    with pytest.raises(DataFormatError, match="cut.nii"):
        load_slice(cut, index=4)
    _, flat = _volume(tmp_path, AFFINES["ras"], shape=(6, 7), name="flat.nii")
    with pytest.raises(DataFormatError, match="not 3D"):
        load_slice(flat, index=0)


def test_oblique_nifti_volumes_are_refused(tmp_path):
    angle = np.radians(30)
    rotation = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    affine = np.eye(4)
    affine[:3, :3] = rotation
    _, path = _volume(tmp_path, affine)
    with pytest.raises(DataFormatError, match="30.0 degrees"):
        load_slice(path, index=0)
