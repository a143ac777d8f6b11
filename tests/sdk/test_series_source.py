"""A whole series in: discovery, choice, sorting and geometry checks, one slice read at a time.

Series are synthesised on a real CT header (tests/series_files.py); each slice carries its own
HU in a corner (``10 * k`` for volume slice k), so which slice a read returns is known
independently of the code that sorted it.
"""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pydicom
import pytest

from liverlesion.errors import DataFormatError, DicomError, InputError
from liverlesion.sdk.geometry import Orientation
from liverlesion.sdk.series.source import (
    SeriesChoiceError,
    SliceGap,
    SliceReadError,
    find_series,
    open_series,
)
from series_files import ct_series, write_many, write_series

SLICE_MM = 2.5
FIRST_Z = -100.0


def volume(slices: int = 6, side: int = 16) -> np.ndarray:
    """Air on the left half (a CT slice needs some), slice k's own value 10 * k on the right."""
    hu = np.full((slices, side, side), -1000.0)
    for k in range(slices):
        hu[k, :, side // 2:] = 10.0 * k
    return hu


def marker(slice_input) -> float:
    """The value that says which volume slice this is (10 * k)."""
    return float(slice_input.hu[0, -1])


@pytest.fixture()
def series(tmp_path):
    """Six slices in a folder, file names and InstanceNumber shuffled."""
    datasets = ct_series(volume(), slice_mm=SLICE_MM, first_z_mm=FIRST_Z, description="liver")
    order = np.random.default_rng(1).permutation(len(datasets))
    for rank, k in enumerate(order):
        datasets[k].InstanceNumber = rank + 1  # lies: numbers follow the shuffled names, not positions
    names = [f"file_{rank:02d}.dcm" for rank in np.argsort(order)]
    paths = write_series(tmp_path / "ct", datasets, names=names)
    return tmp_path / "ct", datasets, paths


# -- sorting --------------------------------------------------------------------------------------
def test_slices_sort_by_position_not_by_file_name_or_instance_number(series):
    folder, datasets, paths = series
    assert [ds.InstanceNumber for ds in datasets] != list(range(1, 7))  # the test means something
    assert sorted(p.name for p in paths) != [p.name for p in paths]
    s = open_series(folder)
    assert len(s) == 6 and s.info.images == 6 and s.info.description == "liver"
    assert s.positions_mm == pytest.approx([FIRST_Z + k * SLICE_MM for k in range(6)])
    assert list(s.sop_instance_uids) == [ds.SOPInstanceUID for ds in datasets]
    assert [marker(x) for x in s.iter_slices()] == [10.0 * k for k in range(6)]
    assert s.slice_spacing_mm == pytest.approx(SLICE_MM) and s.spacing_mm == pytest.approx((0.7, 0.7))
    assert s.shape == (16, 16) and s.gaps == () and s.warnings == () and s.skipped_files == 0
    assert s.voxel_volume_ml == pytest.approx(SLICE_MM * 0.7 * 0.7 / 1000)


def test_a_series_whose_normal_points_to_the_feet_still_runs_feet_to_head(tmp_path):
    # rows run posterior -> anterior: normal (1,0,0) x (0,-1,0) = (0,0,-1), towards the feet, so volume
    # slice k lies at LPS z = 100 - 2.5 k: the last volume slice is the one nearest the feet
    datasets = ct_series(volume(), slice_mm=SLICE_MM, first_z_mm=FIRST_Z, col_dir=(0.0, -1.0, 0.0))
    s = open_series(write_series(tmp_path / "ct", datasets))
    z = [float(s.header(k).ImagePositionPatient[2]) for k in range(len(s))]
    assert z == pytest.approx([87.5, 90.0, 92.5, 95.0, 97.5, 100.0])  # LPS +z is the head
    assert s.positions_mm == pytest.approx(z)
    assert s.orientation == Orientation(flip_rows=True)
    assert [marker(s.read(k)) for k in range(6)] == [50.0, 40.0, 30.0, 20.0, 10.0, 0.0]


def test_a_list_of_paths_and_a_list_of_datasets_sort_alike(series):
    _, datasets, paths = series
    shuffled = [datasets[k] for k in (3, 0, 5, 1, 4, 2)]
    for source in (paths[::-1], shuffled, tuple(str(p) for p in paths)):
        s = open_series(source)
        assert list(s.sop_instance_uids) == [ds.SOPInstanceUID for ds in datasets]
        assert [marker(s.read(k)) for k in range(6)] == [10.0 * k for k in range(6)]
    s = open_series(shuffled)
    assert s.header(2) is datasets[2]  # the Dataset given, not a copy
    assert open_series(datasets[4]).positions_mm == pytest.approx([FIRST_Z + 4 * SLICE_MM])


def test_read_decodes_one_slice_and_header_reads_no_pixels(series):
    folder, datasets, _ = series
    s = open_series(folder)
    one = s.read(3)
    np.testing.assert_array_equal(one.hu, volume()[3])
    assert one.source["series_index"] == 3 and one.source["position_mm"] == pytest.approx(FIRST_Z + 3 * SLICE_MM)
    assert one.source["sop_instance_uid"] == datasets[3].SOPInstanceUID
    assert all("PixelData" not in ref.header for ref in s.refs)
    full = s.header(3)
    assert "PixelData" not in full and full.PatientName == datasets[3].PatientName
    for bad in (6, -1, 1.0, True):
        with pytest.raises(InputError, match="out of range"):
            s.read(bad)
    assert s.to_dict()["positions_mm"] == list(s.positions_mm)


# -- choosing the series --------------------------------------------------------------------------
def two_series(tmp_path, second_modality="CT", second_dirs=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))):
    a = ct_series(volume(4), description="portal venous", series_uid="1.2.3.4.1")
    b = ct_series(volume(3), description="arterial", series_uid="1.2.3.4.2", modality=second_modality,
                  row_dir=second_dirs[0], col_dir=second_dirs[1])
    write_series(tmp_path / "study" / "a", a)
    write_series(tmp_path / "study" / "b", b)  # in a subfolder: the walk is recursive
    return tmp_path / "study", a, b


def test_several_series_and_none_chosen_lists_each_of_them(tmp_path):
    folder, _, _ = two_series(tmp_path, second_dirs=((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)))  # coronal
    with pytest.raises(SeriesChoiceError, match="2 CT image series and none was chosen") as info:
        open_series(folder)
    message = str(info.value)
    for expected in ("1.2.3.4.1", "'portal venous'", "4 image(s)", "axial", "1.2.3.4.2", "'arterial'",
                     "3 image(s)", "coronal", "CT"):
        assert expected in message
    assert [(i.series_uid, i.images, i.orientation) for i in info.value.series] == [
        ("1.2.3.4.1", 4, "axial"), ("1.2.3.4.2", 3, "coronal")]
    assert [(i.series_uid, i.orientation) for i in find_series(folder)] == [("1.2.3.4.1", "axial"),
                                                                           ("1.2.3.4.2", "coronal")]


def test_series_uid_picks_one_and_an_unknown_one_lists_those_present(tmp_path):
    folder, _, b = two_series(tmp_path)
    s = open_series(folder, series_uid="1.2.3.4.2")
    assert s.info.series_uid == "1.2.3.4.2" and list(s.sop_instance_uids) == [ds.SOPInstanceUID for ds in b]
    with pytest.raises(SeriesChoiceError, match="no series '9.9.9'") as info:
        open_series(folder, series_uid="9.9.9")
    assert "1.2.3.4.1" in str(info.value) and "1.2.3.4.2" in str(info.value) and len(info.value.series) == 2
    with pytest.raises(InputError, match="series_uid"):
        open_series(folder, series_uid=12)


def test_an_mr_series_alongside_is_skipped_with_a_warning(tmp_path):
    folder, a, _ = two_series(tmp_path, second_modality="MR")
    s = open_series(folder)
    assert list(s.sop_instance_uids) == [ds.SOPInstanceUID for ds in a]
    assert any("skipped" in w and "1.2.3.4.2" in w and "MR" in w for w in s.warnings)
    with pytest.raises(DicomError, match="Modality MR"):
        open_series(folder, series_uid="1.2.3.4.2")  # asked for by its UID: refused, from its headers


def test_an_mr_image_inside_a_ct_series_is_refused_naming_it(tmp_path):
    datasets = ct_series(volume(4))
    datasets[2].Modality = "MR"
    paths = write_series(tmp_path / "ct", datasets)
    with pytest.raises(DicomError, match="Modality MR") as info:
        open_series(tmp_path / "ct")
    assert str(paths[2]) in str(info.value)


def test_a_folder_without_dicom_is_refused_and_non_dicom_files_are_counted(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="holds no DICOM image.*empty"):
        open_series(tmp_path / "empty")
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    (notes / "fake.dcm").write_bytes(b"\0" * 300)
    with pytest.raises(InputError, match="2 file.*none a DICOM image"):
        open_series(notes)
    write_series(notes / "ct", ct_series(volume(3)))
    s = open_series(notes)
    assert len(s) == 3 and s.skipped_files == 2
    assert any("2 file(s)" in w and "readme.txt" in w and "fake.dcm" in w for w in s.warnings)
    with pytest.raises(DicomError, match="not a DICOM image"):
        open_series([notes / "readme.txt"])  # a list names its files: each must be one


# -- geometry -------------------------------------------------------------------------------------
def test_two_slices_at_one_position_are_refused_naming_both_files(tmp_path):
    datasets = ct_series(volume(5), slice_mm=SLICE_MM, first_z_mm=FIRST_Z)
    datasets[3].ImagePositionPatient = list(datasets[1].ImagePositionPatient)
    paths = write_series(tmp_path / "ct", datasets)
    with pytest.raises(DicomError, match="both at") as info:
        open_series(tmp_path / "ct")
    assert str(paths[1]) in str(info.value) and str(paths[3]) in str(info.value)


def test_slices_of_different_size_or_orientation_are_refused(tmp_path):
    small = ct_series(volume(2, side=12))[0]
    datasets = ct_series(volume(4))
    small.SeriesInstanceUID, small.FrameOfReferenceUID = datasets[0].SeriesInstanceUID, datasets[0].FrameOfReferenceUID
    small.ImagePositionPatient = [0.0, 0.0, 50.0]
    with pytest.raises(DicomError, match="12 x 12 pixels but .* 16 x 16"):
        open_series([*datasets, small])
    turned = copy.deepcopy(datasets[2])
    turned.ImageOrientationPatient = [0.9962, 0.0872, 0.0, -0.0872, 0.9962, 0.0]  # 5 degrees in plane
    turned.ImagePositionPatient = [0.0, 0.0, 60.0]
    with pytest.raises(DicomError, match="one orientation for every slice"):
        open_series([*datasets, turned])
    finer = copy.deepcopy(datasets[2])
    finer.PixelSpacing, finer.ImagePositionPatient = [0.5, 0.5], [0.0, 0.0, 70.0]
    with pytest.raises(DicomError, match="one pixel spacing"):
        open_series([*datasets, finer])


def test_a_non_axial_series_is_refused(tmp_path):
    coronal = ct_series(volume(4), row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 0.0, -1.0))
    with pytest.raises(DicomError, match="coronal"):
        open_series(write_series(tmp_path / "cor", coronal))
    tilted = ct_series(volume(4), row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, np.cos(0.35), -np.sin(0.35)))  # 20 deg
    with pytest.raises(DicomError, match="oblique.*raise max_tilt_deg"):
        open_series(tilted)
    assert len(open_series(tilted, max_tilt_deg=25)) == 4


def test_a_gap_is_reported_not_interpolated(tmp_path):
    datasets = ct_series(volume(8), slice_mm=SLICE_MM, first_z_mm=FIRST_Z)
    kept = datasets[:3] + datasets[5:]  # slices 3 and 4 missing
    s = open_series(write_series(tmp_path / "ct", kept))
    assert len(s) == 6 and s.slice_spacing_mm == pytest.approx(SLICE_MM)
    assert s.gaps == (SliceGap(after=2, spacing_mm=pytest.approx(3 * SLICE_MM), missing=2),)
    assert any("gap" in w and "after slice 2" in w for w in s.warnings)
    assert [marker(s.read(k)) for k in range(6)] == [0.0, 10.0, 20.0, 50.0, 60.0, 70.0]


def test_varying_spacing_is_reported(tmp_path):
    z = [0.0, 2.5, 5.0, 7.0, 9.0, 11.0]
    s = open_series(ct_series(volume(6), positions_mm=z))
    assert s.gaps == () and s.positions_mm == pytest.approx(z) and s.slice_spacing_mm == pytest.approx(2.0)
    assert any("varies from 2.000 to 2.500 mm" in w for w in s.warnings)


def test_a_one_slice_series_is_read_with_its_thickness(tmp_path):
    one = ct_series(volume(1), slice_mm=3.0)
    s = open_series(write_series(tmp_path / "one", one))
    assert len(s) == 1 and s.slice_spacing_mm == pytest.approx(3.0)
    assert any("one slice" in w for w in s.warnings)
    del one[0].SliceThickness, one[0].SpacingBetweenSlices
    with pytest.raises(DicomError, match="neither Spacing Between Slices nor Slice Thickness"):
        open_series(one)


def test_a_truncated_file_is_named_when_its_slice_is_read(tmp_path):
    datasets = ct_series(volume(5))
    paths = write_series(tmp_path / "ct", datasets)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-400])  # the pixel data cut short (after it: 138 bytes of padding)
    s = open_series(tmp_path / "ct")
    assert len(s) == 5
    assert marker(s.read(1)) == 10.0 and marker(s.read(3)) == 30.0  # the others still read
    with pytest.raises(SliceReadError, match="slice 2 of 5") as info:
        s.read(2)
    assert str(paths[2]) in str(info.value) and info.value.index == 2 and info.value.name == str(paths[2])
    assert isinstance(info.value, DataFormatError)


def test_a_file_replaced_after_opening_is_refused_on_read(tmp_path):
    datasets = ct_series(volume(3))
    paths = write_series(tmp_path / "ct", datasets)
    s = open_series(tmp_path / "ct")
    other = ct_series(volume(3))[1]
    other.save_as(paths[1], enforce_file_format=True)
    with pytest.raises(SliceReadError, match="open the series again"):
        s.read(1)


# -- volumes --------------------------------------------------------------------------------------
def test_a_3d_array_needs_its_spacing_and_reads_slice_by_slice():
    hu = volume(5)
    with pytest.raises(InputError, match=r"spacing=\(slice_mm, row_mm, col_mm\)"):
        open_series(hu)
    for bad in ((0.7, 0.7), "2.5", (2.5, 0.7, float("nan")), (0.0, 0.7, 0.7), (True, 0.7, 0.7)):
        with pytest.raises(InputError):
            open_series(hu, spacing=bad)
    with pytest.raises(InputError, match="3-D"):
        open_series(hu[0], spacing=(1, 1, 1))
    s = open_series(hu, spacing=(3.0, 0.8, 0.9))
    assert len(s) == 5 and s.voxel_mm == pytest.approx((3.0, 0.8, 0.9)) and s.info.kind == "array"
    assert s.positions_mm == pytest.approx([0, 3, 6, 9, 12])
    np.testing.assert_array_equal(s.read(4).hu, hu[4])
    assert s.refs[0].source is hu  # referenced, never copied whole
    assert [(i.kind, i.images) for i in find_series(hu)] == [("array", 5)]
    with pytest.raises(InputError, match="spacing= is for a 3-D array"):
        open_series(ct_series(volume(2)), spacing=(1, 1, 1))


def nifti_volume(path, hu: np.ndarray, spacing: float, thickness: float, ras: bool):
    """Write ``hu`` (slices, rows, cols; radiological view, slice 0 at the feet) as the LiTS phantoms are."""
    import nibabel as nib

    stored = hu.transpose(2, 1, 0)  # columns (to the patient's left), rows (posterior), slices (up)
    scale = np.array([-spacing, -spacing, thickness])
    if ras:
        stored, scale = stored[::-1, ::-1, :], scale * [-1, -1, 1]
    affine = np.diag([*scale, 1.0])
    affine[:3, 3] = [10.0, 20.0, -50.0]
    image = nib.Nifti1Image(np.ascontiguousarray(stored).astype(np.int16), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    nib.save(image, str(path))
    return path


@pytest.mark.parametrize("ras", [False, True])
def test_a_nifti_volume_reads_slice_by_slice_feet_to_head(tmp_path, ras):
    hu = volume(5, side=16)
    hu[:, 0, 0] = np.arange(5) * 7 - 900  # rows and columns told apart: the corner pixel, not a symmetric image
    path = nifti_volume(tmp_path / "volume-0.nii.gz", hu, 0.8, 2.0, ras)
    s = open_series(path)
    assert len(s) == 5 and s.info.kind == "nifti" and s.info.orientation == "axial"
    assert s.slice_spacing_mm == pytest.approx(2.0) and s.spacing_mm == pytest.approx((0.8, 0.8))
    assert s.positions_mm == pytest.approx([-50.0 + 2.0 * k for k in range(5)])  # world S of each slice
    for k in range(5):
        np.testing.assert_array_equal(s.read(k).hu, hu[k])
    assert find_series(path)[0].images == 5
    with pytest.raises(InputError, match="series_uid"):
        open_series(path, series_uid="1.2.3")


# -- long series ----------------------------------------------------------------------------------
def test_a_2000_slice_series_is_found_and_sorted_from_headers(tmp_path):
    paths, uids = write_many(tmp_path / "long", 2000)
    assert [p.name for p in paths] != sorted(p.name for p in paths)
    s = open_series(tmp_path / "long")
    assert len(s) == 2000 and list(s.sop_instance_uids) == uids
    steps = np.diff(s.positions_mm)
    assert steps == pytest.approx(np.full(1999, SLICE_MM)) and s.gaps == () and s.warnings == ()
    assert s.read(1999).source["sop_instance_uid"] == uids[1999]


def test_opening_a_series_costs_headers_not_pixels(tmp_path):
    def peak(side: int) -> tuple[int, int]:
        write_many(tmp_path / str(side), 40, side=side)
        tracemalloc.start()
        s = open_series(tmp_path / str(side))
        held, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert len(s) == 40
        return held, top

    small_held, small_peak = peak(8)
    big_held, big_peak = peak(256)
    pixel_bytes = 40 * 256 * 256 * 2  # 5.2 MB in the files
    assert big_peak - small_peak < 0.02 * pixel_bytes  # not one slice's pixels more (131 KB)
    assert big_held - small_held < 0.02 * pixel_bytes
    assert big_held < 40 * 30_000  # a few KB of header per slice


def test_sources_that_are_not_series_are_refused(tmp_path):
    with pytest.raises(InputError, match="cannot read a series from a int"):
        open_series(3)
    with pytest.raises(InputError, match="empty"):
        open_series([])
    with pytest.raises(InputError, match="not mixed"):
        open_series([pydicom.Dataset(), "x.dcm"])
    with pytest.raises(InputError, match="no such file"):
        open_series(tmp_path / "missing.dcm")
    with pytest.raises(InputError, match="allow_non_hu"):
        open_series(volume(2), spacing=(1, 1, 1), allow_non_hu="yes")
    with pytest.raises(DicomError, match="exceeds the limit of 8 pixels"):
        open_series(ct_series(volume(2)), max_side=8)  # from the headers, before any pixel is decoded


def test_a_gantry_tilt_is_read_along_the_normal_and_its_shift_reported():
    tilt = np.radians(10.0)
    datasets = ct_series(volume(4), col_dir=(0.0, np.cos(tilt), -np.sin(tilt)))
    for k, ds in enumerate(datasets):  # the table moves along z, not along the tilted normal
        ds.ImagePositionPatient = [0.0, 0.0, FIRST_Z + k * SLICE_MM]
    s = open_series(datasets)
    assert s.slice_spacing_mm == pytest.approx(SLICE_MM * np.cos(tilt))  # the step projected on the normal
    assert any("shifted in-plane by up to 1.30 mm" in w for w in s.warnings)  # 3 steps x 2.5 mm x sin 10 deg


def test_a_dicomdir_is_ignored(tmp_path):
    write_series(tmp_path / "media", ct_series(volume(3)))
    index = ct_series(volume(1))[0]
    index.file_meta.MediaStorageSOPClassUID = index.SOPClassUID = "1.2.840.10008.1.3.10"
    index.save_as(tmp_path / "media" / "DICOMDIR", enforce_file_format=True)
    s = open_series(tmp_path / "media")
    assert len(s) == 3 and s.skipped_files == 1 and any("DICOMDIR" in w for w in s.warnings)
