"""Issue 11, inputs: plausible CT HU, sane geometry, bounded sizes, and no bare traceback on odd slices."""

from __future__ import annotations

import copy
import gzip
import os
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import RLELossless

from dicom_files import real
from liverlesion.errors import DataFormatError, DicomError, InputError
from liverlesion.grid import ModelGrid, check_spacing
from liverlesion.sdk import geometry as geo
from liverlesion.sdk import load_slice
from liverlesion.sdk.geometry import Orientation

GRID = ModelGrid((64, 64), (4.0, 4.0))


def ct(name: str = "CT_small.dcm") -> pydicom.Dataset:
    return pydicom.dcmread(real(name))


def body(shape=(64, 64), tissue=40.0, dtype=np.float32) -> np.ndarray:
    """A plausible slice: tissue in an ellipse, air around it."""
    rows, cols = shape
    yy, xx = np.mgrid[:rows, :cols]
    inside = ((yy - rows / 2) / (0.4 * rows)) ** 2 + ((xx - cols / 2) / (0.45 * cols)) ** 2 < 1
    return np.where(inside, tissue, -1000.0).astype(dtype)


# -- 1. HU that are not HU: DICOM -----------------------------------------------------------------
def _drop(*keywords):
    def change(ds):
        for k in keywords:
            delattr(ds, k)
    return change


def _set(**values):
    def change(ds):
        for k, v in values.items():
            setattr(ds, k, v)
    return change


def _empty_lut(ds):
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.ModalityLUTSequence = pydicom.Sequence([])


NOT_HU = {
    "no intercept": (_drop("RescaleIntercept"), "no RescaleIntercept"),
    "no slope": (_drop("RescaleSlope"), "no RescaleSlope"),
    "neither": (_drop("RescaleIntercept", "RescaleSlope"), "no RescaleIntercept and no RescaleSlope"),
    "empty slope": (_set(RescaleSlope=""), "no RescaleSlope"),
    "empty modality LUT": (_empty_lut, "Modality LUT Sequence is empty"),
    "slope 0": (_set(RescaleSlope=0), "positive slope"),
    "slope -1": (_set(RescaleSlope=-1), "positive slope"),
    "slope 1e30": (_set(RescaleSlope=1e30), "not those of a CT"),
    "intercept 1e6": (_set(RescaleIntercept=1e6), "not those of a CT"),
    "slope 1e-30 (a constant slice)": (_set(RescaleSlope=1e-30), "not those of a CT"),
    "slope 0.001": (_set(RescaleSlope=0.001), r"slope within \[0.01, 100\]"),
    "slope 101": (_set(RescaleSlope=101), "not those of a CT"),
    "intercept -30000": (_set(RescaleIntercept=-30000), r"intercept within \+-8192"),
    "intercept 8193": (_set(RescaleIntercept=8193), "not those of a CT"),
    "bits stored 8 on 16-bit data": (_set(BitsStored=8, HighBit=7), "do not fit Bits Stored 8"),
    "bits allocated 8": (_set(BitsAllocated=8), "Bits Allocated is 8"),
    "high bit": (_set(HighBit=11), "High Bit 11"),
}


@pytest.mark.parametrize("case", NOT_HU)
def test_a_ct_whose_stored_values_do_not_give_hu_is_refused(case):
    change, message = NOT_HU[case]
    ds = ct()
    change(ds)
    with pytest.raises(DicomError, match=message) as info:
        load_slice(ds)
    assert "accepted" in str(info.value)


@pytest.mark.parametrize("slope, intercept", [(0.01, -8192), (100, 8192), (0.5, -1024), (1, 0)])
def test_a_ct_rescale_within_the_bounds_is_applied(slope, intercept):
    ds = ct()
    stored = ds.pixel_array.astype(np.float64)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    hu = load_slice(ds, allow_non_hu=True).hu  # the bounds hold; whether the values are HU is another check
    np.testing.assert_allclose(hu, stored * slope + intercept, rtol=1e-6)


def test_a_rescale_outside_the_bounds_is_taken_when_allowed():
    ds = ct()
    ds.RescaleSlope = 0.001
    assert load_slice(ds, allow_non_hu=True).hu.max() < 3  # used as asked, not silently corrected


@pytest.mark.parametrize("name", ["693_UNCR.dcm", "693_J2KR.dcm"])  # Bits Stored 14 (native) and 16 (JPEG 2000)
def test_signed_pixel_data_labelled_unsigned_is_refused(name):
    ds = ct(name)
    assert ds.PixelRepresentation == 1 and load_slice(copy.deepcopy(ds)).hu.min() == -3024  # padding: signed
    ds.PixelRepresentation = 0
    with pytest.raises(DicomError, match="Bits Stored|Pixel Representation is 0"):
        load_slice(ds)


def test_enhanced_ct_takes_its_rescale_from_the_functional_groups_and_needs_it():
    ds = ct("eCT_Supplemental.dcm")
    assert "RescaleSlope" not in ds  # only in the Pixel Value Transformation functional group
    transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    raw = ds.pixel_array[1].astype(np.float64)
    expected = raw * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    np.testing.assert_array_equal(load_slice(ds, frame=1, allow_non_hu=True).hu, expected)
    del transform.RescaleIntercept
    with pytest.raises(DicomError, match="no RescaleIntercept in its Pixel Value Transformation"):
        load_slice(ds, frame=1, allow_non_hu=True)


# -- 1. HU that are not HU: arrays and NIfTI ---------------------------------------------------------
def test_raw_stored_values_given_as_hu_are_refused_unless_allowed():
    ds = ct()
    raw = (load_slice(ds).hu + 1024).astype(np.uint16)  # what ds.pixel_array of a scanner's file holds
    with pytest.raises(InputError, match=r"only 0.00% of its pixels are air or fat.*from 128 to.*allow_non_hu=True"):
        load_slice(raw, spacing=(0.7, 0.7))
    accepted = load_slice(raw, spacing=(0.7, 0.7), allow_non_hu=True)
    np.testing.assert_array_equal(accepted.hu, raw)


@pytest.mark.parametrize("value", [3e38, -3e38, 40000.0, -40000.0, 1e300])
def test_values_no_ct_can_hold_are_refused(value):
    hu = body(dtype=np.float64)
    hu[10, 10] = value
    with pytest.raises(InputError, match="not CT Hounsfield units|overflow"):
        load_slice(hu, spacing=(0.7, 0.7))


@pytest.mark.parametrize("hu", [
    body(dtype=np.int16),
    np.array([[-32768, 32767], [-1000, 40]], np.int16),  # the whole signed 16-bit range
    np.array([[-100.0, 60.0]], np.float32),  # fat only: the limit of "air or fat"
    body(tissue=1200.0),
])
def test_plausible_ct_values_are_accepted(hu):
    np.testing.assert_array_equal(load_slice(hu, spacing=(0.7, 0.7)).hu, hu)


def test_allow_non_hu_must_be_a_bool():
    with pytest.raises(InputError, match="allow_non_hu"):
        load_slice(body(), spacing=(0.7, 0.7), allow_non_hu="yes")


def _nifti(tmp_path, data, name="vol.nii", affine=None, pixdim=None, codes=None):
    """A NIfTI-1 file; ``pixdim`` (3 values) and ``codes`` (qform, sform) patched into its header as stored."""
    nib = pytest.importorskip("nibabel")
    path = tmp_path / name
    image = nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.5, 1.0]) if affine is None else affine)
    raw = bytearray(image.to_bytes())
    if pixdim is not None:
        struct.pack_into("<3f", raw, 80, *pixdim)
    if codes is not None:
        struct.pack_into("<2h", raw, 252, *codes)
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    return path


def test_a_nifti_of_raw_stored_values_is_refused_unless_allowed(tmp_path):
    path = _nifti(tmp_path, (body((6, 7)) + 1024).astype(np.int16)[:, :, None].repeat(3, axis=2))
    with pytest.raises(DataFormatError, match="too little air or fat"):
        load_slice(path, index=1)
    assert load_slice(path, index=1, allow_non_hu=True).hu.min() >= 0


# -- 2. Geometry -------------------------------------------------------------------------------------
@pytest.mark.parametrize("orientation, message", [
    ((1, 0, 0, 0.9999, 0.01414, 0), "degrees apart"),  # nearly parallel rows
    ((1, 0, 0, 0.1, 0.995, 0), "degrees apart"),  # 84 degrees
    ((2, 0, 0, 0, 1, 0), "unit vectors"),
    ((1, 0, 0, 0, 0.9, 0), "unit vectors"),
    ((1, 0, 0, 1, 0, 0), "degrees apart"),  # parallel
])
def test_non_orthonormal_image_orientations_are_refused(orientation, message):
    ds = ct()
    ds.ImageOrientationPatient = list(orientation)
    with pytest.raises(DicomError, match=message):
        load_slice(ds)


def test_a_real_in_plane_rotation_written_to_six_decimals_is_accepted():
    ds = ct()
    c, s = round(np.cos(np.radians(1.0)), 6), round(np.sin(np.radians(1.0)), 6)
    ds.ImageOrientationPatient = [c, s, 0, -s, c, 0]
    assert load_slice(ds).orientation == Orientation()


@pytest.mark.parametrize("tilt", [float("nan"), float("inf"), "15", True, -1, 91, None, [15]])
def test_max_tilt_deg_must_be_a_number_of_degrees(tilt):
    for source in (ct(), body()):
        with pytest.raises(InputError, match="max_tilt_deg"):
            load_slice(source, spacing=(0.7, 0.7), max_tilt_deg=tilt)


def test_max_tilt_deg_still_refuses_and_allows_a_tilt():
    path = real("J2K_pixelrep_mismatch.dcm")  # tilted 22 degrees
    with pytest.raises(DicomError, match="22.0 degrees"):
        load_slice(path, max_tilt_deg=np.float32(15))
    assert load_slice(path, max_tilt_deg=90).shape == (512, 512)


@pytest.mark.parametrize("name", ["vol.nii", "vol.nii.gz"])
@pytest.mark.parametrize("codes", [(1, 0), (0, 0)])  # the affine from the qform, or nibabel's fallback
@pytest.mark.parametrize("pixdim", [(0.0, 0.0, 0.0), (0.7, 0.0, 2.5), (np.nan, np.nan, np.nan), (0.7, np.inf, 2.5)])
def test_a_nifti_with_zero_or_nan_voxel_sizes_is_refused(tmp_path, name, codes, pixdim):
    path = _nifti(tmp_path, body((6, 7), dtype=np.int16)[:, :, None].repeat(3, axis=2), name, pixdim=pixdim,
                  codes=codes)
    with pytest.raises(DataFormatError, match=r"voxel sizes \(pixdim\[1..3\]\)"):
        load_slice(path, index=0)


def test_the_lits_reader_refuses_a_zero_pixdim_too(tmp_path):
    from liverlesion.data.lits import find_lits_cases, read_lits_case

    volume = body((6, 7), dtype=np.int16)[:, :, None].repeat(3, axis=2)
    _nifti(tmp_path, volume, "volume-0.nii", pixdim=(0.0, 0.0, 0.0), codes=(1, 0))
    _nifti(tmp_path, np.zeros((6, 7, 3), np.uint8), "segmentation-0.nii")
    with pytest.raises(DataFormatError, match="pixdim"):
        read_lits_case(find_lits_cases(tmp_path)[0])


def test_a_nifti_with_sheared_slices_is_refused(tmp_path):
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[0, 1] = 0.2  # the column axis leans 14 degrees towards the row axis
    path = _nifti(tmp_path, body((6, 7), dtype=np.int16)[:, :, None].repeat(3, axis=2), affine=affine)
    with pytest.raises(DataFormatError, match="orthogonal"):
        load_slice(path, index=0)


BAD_SPACINGS = ["11", b"11", {1: 0, 2: 0}, {0.7: "a", 0.8: "b"}, (True, True), [np.bool_(True), 1.0],
                np.array([True, True]), {0.7, 0.8}, 0.7, np.array([[0.7], [0.8]]), (0.7, "0.8")]


@pytest.mark.parametrize("spacing", BAD_SPACINGS, ids=repr)
def test_spacings_that_are_not_two_numbers_are_refused(spacing):
    with pytest.raises(InputError, match="two numbers"):
        check_spacing(spacing)
    with pytest.raises(InputError, match="spacing"):
        load_slice(body(), spacing=spacing)


def test_two_numbers_of_any_real_kind_are_a_spacing():
    ds = ct()
    expected = tuple(float(v) for v in ds.PixelSpacing)
    for spacing in (ds.PixelSpacing, [0.7, 0.8], (np.float32(0.5), np.int64(1)), np.array([0.7, 0.8])):
        assert check_spacing(spacing) == tuple(float(v) for v in spacing)
    assert load_slice(ds).spacing_mm == expected


def test_a_masked_array_is_refused_unless_nothing_is_masked():
    hu = body()
    masked = np.ma.masked_array(hu, mask=hu < -500)
    with pytest.raises(InputError, match="masked pixel.*filled"):
        load_slice(masked, spacing=(0.7, 0.7))
    plain = load_slice(np.ma.masked_array(hu), spacing=(0.7, 0.7))
    assert type(plain.hu) is np.ndarray
    np.testing.assert_array_equal(plain.hu, hu)


def test_a_matrix_is_resampled_as_an_array_not_as_matrix_products():
    hu = body((50, 60))
    with pytest.warns(PendingDeprecationWarning):
        matrix = np.matrix(hu)
    s = load_slice(matrix, spacing=(0.7, 0.7))
    assert type(s.hu) is np.ndarray
    np.testing.assert_array_equal(s.on_model_grid(GRID), load_slice(hu, spacing=(0.7, 0.7)).on_model_grid(GRID))


# -- 3. Size limits before decoding or allocating --------------------------------------------------
def test_a_huge_array_is_refused_from_its_shape_before_any_copy():
    huge = np.broadcast_to(np.int16(-1000), (20000, 20000))  # 800 MB as int16, 1.6 GB as float32: no memory
    with pytest.raises(InputError, match="20000 x 20000 exceeds the limit of 4096"):
        load_slice(huge, spacing=(0.7, 0.7))


def test_the_side_limit_is_a_module_constant_and_an_argument(monkeypatch):
    from liverlesion import input_limits

    hu = body((100, 100))
    monkeypatch.setattr(input_limits, "MAX_SIDE", 64)
    with pytest.raises(InputError, match="limit of 64"):
        load_slice(hu, spacing=(0.7, 0.7))
    assert load_slice(hu, spacing=(0.7, 0.7), max_side=128).shape == (100, 100)
    for bad in (0, -5, 1.5, True, "64"):
        with pytest.raises(InputError, match="max_side"):
            load_slice(hu, spacing=(0.7, 0.7), max_side=bad)


def rle_ct(rows: int, cols: int) -> pydicom.Dataset:
    """CT_small's header on an RLE Lossless frame of rows x cols zeros: a few hundred KB for 5000 x 5000."""
    ds = ct()
    segments = []
    for _ in range(2):  # high bytes, then low bytes, each as runs of 128 zeros
        runs, rest = divmod(rows * cols, 128)
        segment = b"\x81\x00" * runs + (bytes([(1 - rest) & 0xFF, 0]) if rest else b"")
        segments.append(segment + b"\x00" * (len(segment) % 2))
    header = struct.pack("<16I", 2, 64, 64 + len(segments[0]), *([0] * 13))
    ds.PixelData = encapsulate([header + b"".join(segments)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows, ds.Columns = rows, cols
    return ds


def test_a_small_rle_dicom_claiming_a_huge_image_is_refused_before_decoding(monkeypatch):
    import pydicom.pixels

    from liverlesion import input_limits

    def no_decode(*args, **kwargs):
        raise AssertionError("pixel data decoded before Rows x Columns were checked")

    ds = rle_ct(5000, 5000)
    monkeypatch.setattr(pydicom.pixels, "pixel_array", no_decode)
    with pytest.raises(DicomError, match="Rows x Columns 5000 x 5000 exceeds the limit of 4096"):
        load_slice(ds)
    monkeypatch.undo()
    monkeypatch.setattr(input_limits, "MAX_SIDE", 256)  # the same check on a frame small enough to decode here
    small = rle_ct(300, 300)
    with pytest.raises(DicomError, match="limit of 256"):
        load_slice(small)
    assert load_slice(small, max_side=300).shape == (300, 300)


def test_a_multiframe_dicom_may_not_claim_absurdly_many_frames():
    ds = ct("eCT_Supplemental.dcm")
    ds.NumberOfFrames = 10 ** 7
    with pytest.raises(DicomError, match="Number of Frames is 10000000"):
        load_slice(ds, frame=0, allow_non_hu=True)


def test_a_nifti_header_claiming_a_huge_slice_is_refused_before_reading(tmp_path):
    nib = pytest.importorskip("nibabel")
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 1))
    header.set_data_dtype(np.int16)
    header.set_zooms((0.7, 0.7, 2.5))
    header.set_qform(np.diag([0.7, 0.7, 2.5, 1.0]), code=1)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4) + bytes(1 << 16)))  # 64 KB of the 1.8 GB
    with pytest.raises(DataFormatError, match="30000 x 30000 exceeds the limit of 4096"):
        load_slice(path, index=0)
    with pytest.raises(DataFormatError, match="truncated"):  # a raised limit lets it read, and find it short
        load_slice(path, index=0, max_side=30000)


@pytest.mark.parametrize("cache, budget, shape", [
    ("_SOURCE_INDEX", 4 * 2**20, (300, 300)),  # 352 KiB int32 maps, 24 of them: 8.3 MiB if all were kept
    ("_SEPARABLE_INDEX", 64 * 2**10, (300, 300)),  # about 5 KiB each: 120 KiB if all were kept
])
def test_the_geometry_caches_are_bounded_by_bytes(monkeypatch, cache, budget, shape):
    """What each cache holds stays within its budget while the maps asked for add up to more."""
    held = getattr(geo, cache)
    monkeypatch.setattr(geo, "GEOMETRY_CACHE_BYTES", budget)
    geo.clear_geometry_caches()
    made = 0
    for k in range(24):
        geometry = (GRID, (shape[0] + k, shape[1]), (0.4, 0.4), Orientation())
        value = geo.source_index(*geometry) if cache == "_SOURCE_INDEX" else geo.separable_index(*geometry)
        made += geo._nbytes(value)
        assert held.nbytes <= budget, f"{cache} holds {held.nbytes} bytes after {k + 1} maps"
    assert made > 1.5 * budget  # the bound was needed
    assert held.nbytes == sum(size for _, size in held._items.values())  # its count of bytes is true
    assert 0 < len(held) < 24
    last = (GRID, (shape[0] + 23, shape[1]), (0.4, 0.4), Orientation())
    get = geo.source_index if cache == "_SOURCE_INDEX" else geo.separable_index
    assert get(*last) is get(*last)  # the latest stay cached


def test_a_geometry_too_large_for_the_cache_is_not_kept(monkeypatch):
    geo.clear_geometry_caches()
    monkeypatch.setattr(geo, "GEOMETRY_CACHE_BYTES", 1 << 20)  # quarter: 256 KB, a 256 x 256 map
    small = geo.source_index(GRID, (100, 100), (1.0, 1.0), Orientation())
    big = geo.source_index(GRID, (400, 400), (1.0, 1.0), Orientation())
    assert geo.source_index(GRID, (100, 100), (1.0, 1.0), Orientation()) is small
    again = geo.source_index(GRID, (400, 400), (1.0, 1.0), Orientation())
    assert again is not big
    np.testing.assert_array_equal(again, big)


# -- 4. No bare traceback -----------------------------------------------------------------------
def _patched_file(tmp_path, name, old: bytes, new: bytes) -> Path:
    data = Path(real("CT_small.dcm")).read_bytes()
    assert data.count(old) == 1
    path = tmp_path / name
    path.write_bytes(data.replace(old, new))
    return path


def test_an_image_position_that_is_not_numbers_is_refused(tmp_path):
    ds = ct()
    ds["ImagePositionPatient"] = pydicom.DataElement(0x00200032, "LO", "a\\b\\c")
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian  # read back with the dictionary's DS
    ds.save_as(tmp_path / "ipp.dcm", enforce_file_format=True)
    with pytest.raises(DicomError, match=r"Image Position \(Patient\).*accepted: 3 finite numbers"):
        load_slice(tmp_path / "ipp.dcm")
    two = ct()
    two.ImagePositionPatient = [1.0, 2.0]
    with pytest.raises(DicomError, match=r"Image Position \(Patient\)"):
        load_slice(two)


@pytest.mark.parametrize("element", [b"\x28\x00\x02\x00UN\x00\x00\x01\x00\x00\x00\x01",
                                     b"\x28\x00\x02\x00US\x01\x00\x01"], ids=["UN", "US"])
def test_a_one_byte_samples_per_pixel_is_refused(tmp_path, element):
    path = _patched_file(tmp_path, "spp.dcm", b"\x28\x00\x02\x00US\x02\x00\x01\x00", element)
    with pytest.raises(DicomError, match="SamplesPerPixel"):
        load_slice(path)


def _raw(ds: pydicom.Dataset, keyword: str, vr: str, value: bytes) -> None:
    """Put ``value`` in ``ds`` as read from a file, unconverted: pydicom converts it on first access."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    ds._dict[tag] = pydicom.dataelem.RawDataElement(pydicom.tag.Tag(tag), vr, len(value), value, 0, False, True)


@pytest.mark.parametrize("keyword", ["SamplesPerPixel", "Rows", "BitsStored", "NumberOfFrames"])
@pytest.mark.parametrize("vr", ["UN", None])
def test_an_integer_attribute_of_the_wrong_length_is_refused(keyword, vr):
    ds = ct()
    _raw(ds, keyword, vr or pydicom.datadict.dictionary_VR(keyword), b"\x01")
    with pytest.raises(DicomError, match=keyword):
        load_slice(ds)


@pytest.mark.parametrize("vr, value", [("DS", b"1 "), ("UN", b"\x00" * 12), ("DS", b"axial "),
                                       ("DS", b"1\\0\\0\\0\\1 "), ("FD", struct.pack("<5d", 1, 0, 0, 0, 1))])
def test_an_orientation_that_is_not_six_numbers_is_refused(vr, value):
    ds = ct()
    _raw(ds, "ImageOrientationPatient", vr, value)
    with pytest.raises(DicomError, match="Image Orientation"):
        load_slice(ds)


def _special(tmp_path, kind, name):
    if kind == "directory":
        path = tmp_path / name
        path.mkdir()
        return path, "a directory"
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs here")
        path = tmp_path / name
        os.mkfifo(path)
        return path, "a FIFO"
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null here")
    return Path("/dev/null"), "a character device"


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
@pytest.mark.parametrize("name", ["scan.dcm", "scan.nii.gz"])
def test_a_directory_fifo_or_device_is_named_as_such(tmp_path, kind, name):
    path, said = _special(tmp_path, kind, name)
    with pytest.raises(InputError, match=f"is {said}.*not a regular file") as info:
        load_slice(path, index=0)  # a FIFO is never opened: opening would wait for a writer
    assert "no such file" not in str(info.value)


def test_a_missing_file_is_still_no_such_file(tmp_path):
    for name in ("nothing.dcm", "nothing.nii.gz"):
        with pytest.raises(InputError, match="no such file"):
            load_slice(tmp_path / name, index=0)


@pytest.mark.parametrize("sop_class", [
    "1.2.840.10008.5.1.4.1.1.88.33",  # Comprehensive SR
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture
    "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word Secondary Capture
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    None,
])
def test_modality_ct_on_a_class_that_is_not_ct_image_storage_is_refused(sop_class):
    ds = ct()
    if sop_class is None:
        del ds.SOPClassUID
    else:
        ds.SOPClassUID = sop_class
    with pytest.raises(DicomError, match="is not a CT image storage class; accepted: CT Image Storage"):
        load_slice(ds)


# -- through predict ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def threshold(tmp_path_factory):
    from liverlesion import LesionAnalyzer
    from sdk_fixtures import make_threshold_package

    package = make_threshold_package(tmp_path_factory.mktemp("trust-inputs") / "threshold")
    with LesionAnalyzer.load(package, backend="onnxruntime") as analyzer:  # its warm-up slice is plausible HU
        yield analyzer


def test_predict_refuses_raw_stored_values_and_takes_them_when_allowed(threshold):
    ds = ct()
    raw = ds.pixel_array.astype(np.uint16)  # CT_small stores HU + 1024
    with pytest.raises(InputError, match="too little air or fat"):
        threshold.predict(raw, spacing=(0.66, 0.66))
    assert threshold.predict(raw, spacing=(0.66, 0.66), allow_non_hu=True).label_map.shape == raw.shape
    assert threshold.predict(ds).label_map.shape == raw.shape


def test_predict_refuses_bad_geometry_arguments(threshold):
    with pytest.raises(InputError, match="max_tilt_deg"):
        threshold.predict(ct(), max_tilt_deg=float("nan"))
    with pytest.raises(InputError, match="spacing"):
        threshold.predict(body(), spacing="11")


# -- review of issue 11: plausible HU as a share of air or fat -------------------------------------------------
def _circle_padding(raw: np.ndarray, value: int = -2000) -> np.ndarray:
    """``raw`` with ``value`` outside the inscribed circle, as scanners pad outside the reconstruction."""
    rows, cols = raw.shape
    yy, xx = np.mgrid[:rows, :cols]
    out = raw.copy()
    out[(yy - (rows - 1) / 2) ** 2 + (xx - (cols - 1) / 2) ** 2 > (min(rows, cols) / 2) ** 2] = value
    return out


def _raw_values(shape=(128, 128)) -> np.ndarray:
    """Raw int16 stored values (HU + 1024) of a plausible slice: its air is +24, nothing near -1000."""
    return (body(shape) + 1024).astype(np.int16)


NOT_AIR_OR_FAT = {
    "raw values with -2000 padding": _circle_padding(_raw_values()),
    "raw values with -3024 padding": _circle_padding(_raw_values(), -3024),
    "raw values with one pixel of -1024": _raw_values().copy(),
    "soft tissue with padding": _circle_padding(np.full((128, 128), 40, np.int16)),
    "0.5 % fat": np.where(np.arange(128 * 128).reshape(128, 128) % 200 == 0, -100, 40).astype(np.float32),
}
NOT_AIR_OR_FAT["raw values with one pixel of -1024"][64, 64] = -1024


@pytest.mark.parametrize("case", NOT_AIR_OR_FAT)
def test_a_slice_with_almost_no_air_or_fat_is_refused(case):
    hu = NOT_AIR_OR_FAT[case]
    assert hu.min() <= -100  # the old rule (some value at most -100 HU) let each of these through
    with pytest.raises(InputError, match=r"too little air or fat.*\[-1100, -100\] HU.*allow_non_hu=True"):
        load_slice(hu, spacing=(0.7, 0.7))
    assert load_slice(hu, spacing=(0.7, 0.7), allow_non_hu=True).shape == hu.shape


def test_an_all_air_slice_is_accepted_and_a_constant_dicom_slice_is_caught_by_its_rescale():
    air = np.full((64, 64), -1000, np.int16)  # no body on this slice: accepted (the model then finds no liver)
    np.testing.assert_array_equal(load_slice(air, spacing=(0.7, 0.7)).hu, air)
    ds = ct()
    ds.RescaleSlope = 1e-30  # every pixel becomes -1024: plenty of "air", so the rescale bound must catch it
    with pytest.raises(DicomError, match="not those of a CT"):
        load_slice(ds)


def test_the_share_is_sampled_across_every_column():
    """512 x 512 sampled every 64th pixel would see 8 columns only: a band of air between them would be missed."""
    hu = np.full((512, 512), 40.0, np.float32)
    hu[:, 10:50] = -1000.0  # 8 % of the pixels, in columns that a stride of 64 never visits
    assert load_slice(hu, spacing=(0.7, 0.7)).shape == (512, 512)


def _with_hu_rescale_type(ds: pydicom.Dataset) -> pydicom.Dataset:
    """eCT_Supplemental says Rescale Type 'US' although its values are HU: say HU, so the HU checks run."""
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0].RescaleType = "HU"
    return ds


@pytest.mark.parametrize("name, frame", [("CT_small.dcm", None), ("693_UNCR.dcm", None), ("693_J2KR.dcm", None),
                                         ("693_J2KI.dcm", None), ("693_UNCI.dcm", None),
                                         ("explicit_VR-UN.dcm", None), ("eCT_Supplemental.dcm", 0),
                                         ("eCT_Supplemental.dcm", 1)])
def test_real_ct_slices_hold_enough_air_or_fat(name, frame):
    ds = ct(name)
    if frame is not None:
        ds = _with_hu_rescale_type(ds)
    hu = load_slice(ds, frame=frame).hu  # no allow_non_hu: every check runs
    share = np.count_nonzero((hu >= -1100) & (hu <= -100)) / hu.size
    assert share >= 0.25  # far above the 1 % asked: the threshold has room


def test_phantom_slices_hold_enough_air_or_fat():
    from liverlesion.data.phantom import lesion_slice_phantoms, lits_phantom
    from sdk_fixtures import drawn_slice

    volume = lits_phantom(0, 0, slices=8, size=128)
    slices = [*(volume[0] if isinstance(volume, tuple) else volume.hu), drawn_slice(1.0)]
    slices += [np.asarray(x.hu) for x in lesion_slice_phantoms(1, 12, size=128)]
    for hu in slices:
        load_slice(np.asarray(hu), spacing=(0.8, 0.8))


def test_predict_refuses_raw_values_with_padding_that_once_gave_a_confident_diagnosis(threshold):
    from sdk_fixtures import drawn_slice

    raw = _circle_padding(drawn_slice(1.0).astype(np.int32) + 1024).astype(np.int16)
    with pytest.raises(InputError, match="too little air or fat"):
        threshold.predict(raw, spacing=(1.0, 1.0))
    assert threshold.predict(drawn_slice(1.0), spacing=(1.0, 1.0)).liver_area_mm2 > 0


# -- review of issue 11: a NIfTI slice scattered through its file is read in bounded blocks ---------------------
def _layouts(tmp_path, volume: np.ndarray, name: str, *, slope: float = 1.0, inter: float = 0.0):
    """``volume`` (x, y, z) written with z stored as axis 2 (contiguous slices), 1 and 0, z flipped in one."""
    nib = pytest.importorskip("nibabel")
    zooms = np.diag([0.7, 0.8, 2.5, 1.0])
    paths = {}
    for layout, order in (("z last", (0, 1, 2)), ("z middle", (0, 2, 1)), ("z first", (2, 0, 1))):
        affine = np.eye(4)
        affine[:3, :3] = zooms[:3, :3][:, list(order)]
        data = volume.transpose((*order, *range(3, volume.ndim)))
        if layout == "z first":  # also stored feet <- head: the reader must count from the feet anyway
            data = data[::-1]
            affine[:3, 3] = -affine[:3, 0] * (data.shape[0] - 1)
            affine[:3, 0] = -affine[:3, 0]
        image = nib.Nifti1Image(data, affine)
        if slope != 1.0 or inter != 0.0:
            image.header.set_slope_inter(slope, inter)
        path = tmp_path / f"{layout.replace(' ', '_')}_{name}"
        nib.save(image, path)
        paths[layout] = path
    return paths


@pytest.mark.parametrize("budget", [1 << 10, 40 << 10, None], ids=["rows of a plane", "whole planes", "default"])
@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_every_layout_of_a_nifti_gives_the_same_slices(tmp_path, monkeypatch, budget, name):
    from liverlesion import input_limits

    if budget is not None:
        monkeypatch.setattr(input_limits, "NIFTI_READ_BYTES", budget)
    rng = np.random.default_rng(3)
    volume = np.where(rng.random((30, 26, 7)) < 0.3, -1000, rng.integers(-200, 300, (30, 26, 7))).astype(np.int16)
    paths = _layouts(tmp_path, volume, name)
    for index in range(volume.shape[2]):
        expected = load_slice(paths["z last"], index=index).hu
        np.testing.assert_array_equal(expected, volume[::-1, ::-1, index].T)  # radiological view of RAS
        for layout in ("z middle", "z first"):
            np.testing.assert_array_equal(load_slice(paths[layout], index=index).hu, expected, err_msg=layout)


def test_a_scaled_4d_nifti_in_any_layout_gives_the_same_slice(tmp_path, monkeypatch):
    from liverlesion import input_limits

    monkeypatch.setattr(input_limits, "NIFTI_READ_BYTES", 2 << 10)
    volume = np.where(np.indices((20, 18, 5)).sum(axis=0) % 3 == 0, -1000, 60).astype(np.int16)
    paths = _layouts(tmp_path, volume[..., None], "s.nii.gz", slope=0.5, inter=-10.0)
    expected = volume[::-1, ::-1, 2].T * 0.5 - 10.0
    for layout, path in paths.items():
        np.testing.assert_array_equal(load_slice(path, index=2).hu, expected, err_msg=layout)


def test_one_slice_of_a_nifti_whose_slices_are_scattered_costs_a_bounded_read(tmp_path, monkeypatch):
    """Feet-head as the first stored axis: each slice's voxels span the whole file. Peak memory stays near the
    block budget, not the volume (6 MiB here; a 2.3 MB .nii.gz of 64 x 2048 x 2048 once took 612 MB)."""
    from liverlesion import input_limits

    nib = pytest.importorskip("nibabel")
    budget = 256 << 10
    monkeypatch.setattr(input_limits, "NIFTI_READ_BYTES", budget)
    data = np.full((48, 256, 256), -1000, np.int16)  # stored (z, x, y): z runs fastest in the file
    data[:, 60:200, 60:200] = 40
    affine = np.array([[0, 0.8, 0, 0], [0, 0, 0.8, 0], [2.5, 0, 0, 0], [0, 0, 0, 1]], float)
    path = tmp_path / "zfirst.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    load_slice(path, index=0)  # imports and first-use allocations outside the measurement
    tracemalloc.start()
    try:
        hu = load_slice(path, index=20).hu
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(hu, data[20, ::-1, ::-1].T)
    assert peak < 4 * budget + 4 * hu.nbytes, f"peak {peak} bytes for a {data.nbytes}-byte volume"


def test_a_nifti_claiming_more_slices_than_the_limit_is_refused(tmp_path, monkeypatch):
    from liverlesion import input_limits

    path = _nifti(tmp_path, body((6, 7), dtype=np.int16)[:, :, None].repeat(5, axis=2))
    monkeypatch.setattr(input_limits, "MAX_FRAMES", 4)
    with pytest.raises(DataFormatError, match="claims 5 axial slices; accepted: at most 4"):
        load_slice(path, index=0)


def test_a_nifti_of_complex_voxels_is_refused_before_reading(tmp_path):
    path = _nifti(tmp_path, np.zeros((6, 7, 3), np.complex64))
    with pytest.raises(DataFormatError, match="complex64, which is not HU"):
        load_slice(path, index=0)


# -- review of issue 11: a deflated DICOM object is inflated as a stream, with a cap ---------------------------
def _deflated(path: Path, ds: pydicom.Dataset, extra_frames: int = 0) -> Path:
    """``ds`` written as Deflated Explicit VR Little Endian; ``extra_frames`` frames of zeros appended to its
    pixel data and Number of Frames (a bomb: zeros deflate about 1000 to 1)."""
    import zlib

    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = copy.deepcopy(ds)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    pixels = ds.PixelData
    del ds.PixelData
    frame_bytes = len(pixels)
    if extra_frames:
        ds.NumberOfFrames = 1 + extra_frames
    body_ = DicomBytesIO()
    body_.is_little_endian, body_.is_implicit_VR = True, False
    write_dataset(body_, ds)
    total = frame_bytes * (1 + extra_frames)
    header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, total)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunks = [deflate.compress(body_.getvalue() + header + pixels)]
    zeros = bytes(1 << 20)
    left = total - frame_bytes
    while left > 0:
        chunks.append(deflate.compress(zeros[:min(left, len(zeros))]))
        left -= len(zeros)
    chunks.append(deflate.flush())
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    path.write_bytes(b"\0" * 128 + b"DICM" + meta.getvalue() + b"".join(chunks))
    return path


def test_a_deflated_ct_reads_as_the_same_slice(tmp_path):
    path = _deflated(tmp_path / "deflated.dcm", ct())
    s = load_slice(path)
    np.testing.assert_array_equal(s.hu, load_slice(ct()).hu)
    assert s.source["transfer_syntax"] == "Deflated Explicit VR Little Endian"


def test_a_deflated_bomb_is_refused_before_it_is_inflated_whole(tmp_path, monkeypatch):
    import zlib

    from liverlesion import input_limits

    def whole(*args, **kwargs):
        raise AssertionError("the deflated data set was inflated whole (pydicom's reader)")

    path = _deflated(tmp_path / "bomb.dcm", ct(), extra_frames=600)  # 19.7 MB inflated from a few KB
    assert path.stat().st_size < 100_000
    monkeypatch.setattr(zlib, "decompress", whole)
    monkeypatch.setattr(input_limits, "DEFLATE_HEADER_BYTES", 1 << 20)
    with pytest.raises(DicomError, match=r"inflates to more than 1081344 bytes.*dcmconv \+te"):
        load_slice(path, max_side=128)  # cap: 128^2 x 2 bytes + 1 MiB


def test_a_deflated_bomb_costs_at_most_its_cap(tmp_path):
    """512^2 x 128 frames (64 MiB) from a 66 KB file: refused at the default cap, with the memory that cap allows."""
    ds = ct()
    ds.Rows = ds.Columns = 512
    ds.PixelData = bytes(512 * 512 * 2)
    path = _deflated(tmp_path / "bomb.dcm", ds, extra_frames=127)
    from liverlesion.input_limits import deflate_limit

    tracemalloc.start()
    try:
        with pytest.raises(DicomError, match="inflates to more than"):
            load_slice(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < deflate_limit() + (8 << 20) < 512 * 512 * 2 * 128


def test_a_corrupt_deflated_object_is_a_dicom_error(tmp_path):
    path = _deflated(tmp_path / "deflated.dcm", ct())
    data = bytearray(path.read_bytes())
    data[400:420] = b"\xff" * 20
    path.write_bytes(bytes(data))
    with pytest.raises(DicomError, match="cannot be inflated|could not be parsed"):
        load_slice(path)


# -- review of issue 11: one reading of Number of Frames ------------------------------------------------------
@pytest.mark.parametrize("vr", ["UN", "IS"])
def test_frame_count_refuses_a_malformed_number_of_frames(vr):
    from liverlesion.sdk import frame_count

    ds = ct()
    _raw(ds, "NumberOfFrames", vr, b"\x01" if vr == "UN" else b"two ")
    with pytest.raises(DicomError, match="NumberOfFrames"):
        frame_count(ds)
    ds.NumberOfFrames = 0
    with pytest.raises(DicomError, match="Number of Frames is 0"):
        frame_count(ds)
    assert frame_count(ct()) == 1
