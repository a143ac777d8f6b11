"""LiTS reader: orientation from any affine, spacing, slice selection, network input, and every refusal."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from liverlesion.data.lits import (
    find_lits_cases,
    iter_lits_slices,
    network_input,
    read_lits_case,
    select_slices,
)
from liverlesion.errors import DataFormatError, InputError
from liverlesion.grid import ModelGrid
from liverlesion.preprocessing import Preprocessing

ROW_MM, COL_MM, SLICE_MM = 0.7, 0.8, 2.5  # all different, so a swapped axis shows


def _display_volume(slices: int = 5, rows: int = 12, cols: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """A volume in the reader's orientation with every voxel distinct, and labels with a liver and a tumor."""
    hu = np.arange(slices * rows * cols, dtype=np.float32).reshape(slices, rows, cols) - 500.0
    labels = np.zeros((slices, rows, cols), np.uint8)
    labels[1:4, 3:9, 1:6] = 1
    labels[2, 5:7, 2:4] = 2
    return hu, labels


def _stored(data: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """``data`` (slices, rows, cols) stored as ``layout`` would store it, with the matching affine."""
    # Columns of the affine: where one step along each stored axis goes in RAS+ mm.
    left, posterior, up = np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.array([0, 0, 1.0])
    if layout == "LPS":  # axes: col (to patient left), row (posterior), slice (up)
        stored, axes = data.transpose(2, 1, 0), (COL_MM * left, ROW_MM * posterior, SLICE_MM * up)
    elif layout == "RAS":
        stored, axes = data.transpose(2, 1, 0)[::-1, ::-1], (-COL_MM * left, -ROW_MM * posterior, SLICE_MM * up)
    elif layout == "rows-first, top-down":  # axes: row, col, slice stored superior to inferior
        stored, axes = data.transpose(1, 2, 0)[:, :, ::-1], (ROW_MM * posterior, COL_MM * left, -SLICE_MM * up)
    else:
        raise AssertionError(layout)
    affine = np.eye(4)
    affine[:3, :3] = np.stack(axes, axis=1)
    affine[:3, 3] = (-100.0, 50.0, 20.0)
    return np.ascontiguousarray(stored), affine


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([COL_MM, ROW_MM, SLICE_MM, 1.0]) if affine is None else affine),
             str(path))
    return path


def _write_case(root: Path, number: int, layout: str = "LPS", suffix: str = ".nii",
                labels_dtype: type = np.uint8) -> tuple[np.ndarray, np.ndarray]:
    hu, labels = _display_volume()
    stored_hu, affine = _stored(hu, layout)
    stored_labels, _ = _stored(labels, layout)
    _write(root / f"volume-{number}{suffix}", stored_hu.astype(np.int16), affine)
    _write(root / f"segmentation-{number}{suffix}", stored_labels.astype(labels_dtype), affine)
    return hu, labels


@pytest.mark.parametrize("layout", ["LPS", "RAS", "rows-first, top-down"])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_any_stored_orientation_reads_the_same(tmp_path, layout, suffix):
    hu, labels = _write_case(tmp_path, 3, layout, suffix)
    (case,) = find_lits_cases(tmp_path)
    volume = read_lits_case(case)
    assert case.case_id == 3
    assert volume.hu.dtype == np.float32 and volume.labels.dtype == np.uint8
    np.testing.assert_array_equal(volume.hu, hu)
    np.testing.assert_array_equal(volume.labels, labels)
    assert volume.spacing_mm == pytest.approx((ROW_MM, COL_MM), abs=1e-6)
    assert volume.slice_thickness_mm == pytest.approx(SLICE_MM, abs=1e-6)


def test_orientation_is_the_radiological_view(tmp_path):
    # Stored canonically (RAS+): axis 0 runs to the patient's right, axis 1 anterior, axis 2 superior.
    data = np.zeros((6, 7, 4), np.int16)
    data[-1, -1, -1] = 1000  # the most right, anterior, superior voxel
    data[0, 0, 0] = -900  # the most left, posterior, inferior voxel
    _write(tmp_path / "volume-0.nii", data, np.diag([0.9, 0.9, 3.0, 1.0]))
    _write(tmp_path / "segmentation-0.nii", np.zeros_like(data, np.uint8), np.diag([0.9, 0.9, 3.0, 1.0]))
    volume = read_lits_case(find_lits_cases(tmp_path)[0])
    assert volume.hu.shape == (4, 7, 6)  # (slices, rows, cols)
    # Image top-left is anterior and patient right; the last slice is superior.
    assert volume.hu[-1, 0, 0] == 1000
    assert volume.hu[0, -1, -1] == -900


def test_cases_sorted_found_below_root_and_hidden_folders_skipped(tmp_path):
    for batch, number in (("Training Batch 2", 10), ("Training Batch 1", 2)):
        (tmp_path / batch).mkdir()
        _write_case(tmp_path / batch, number, suffix=".nii.gz")
    (tmp_path / ".tmp-half-written").mkdir()
    (tmp_path / ".tmp-half-written" / "volume-5.nii").write_bytes(b"partial")
    assert [case.case_id for case in find_lits_cases(tmp_path)] == [2, 10]


def test_integral_float_segmentation_is_accepted(tmp_path):
    _, labels = _write_case(tmp_path, 0, labels_dtype=np.float32)
    np.testing.assert_array_equal(read_lits_case(find_lits_cases(tmp_path)[0]).labels, labels)


def test_select_slices_and_iteration(tmp_path):
    _, labels = _write_case(tmp_path, 0)
    volume = read_lits_case(find_lits_cases(tmp_path)[0])
    np.testing.assert_array_equal(select_slices(volume), np.arange(5))
    np.testing.assert_array_equal(select_slices(volume, require="liver"), [1, 2, 3])
    np.testing.assert_array_equal(select_slices(volume, require="tumor"), [2])
    np.testing.assert_array_equal(select_slices(volume, require="any", every=2), [0, 2, 4])
    slices = list(iter_lits_slices(tmp_path, require="liver", every=2))
    assert [(s.case_id, s.index) for s in slices] == [(0, 1), (0, 3)]
    np.testing.assert_array_equal(slices[1].labels, labels[3])
    assert slices[0].hu.base is None  # a copy: keeping a slice does not keep the volume
    with pytest.raises(InputError, match="require"):
        select_slices(volume, require="lesion")
    with pytest.raises(InputError, match="every"):
        select_slices(volume, every=0)


def test_network_input_resamples_and_windows():
    grid, prep = ModelGrid(size=(64, 48), spacing_mm=(1.6, 1.6)), Preprocessing()
    hu = np.full((100, 80), 40.0, np.float32)
    hu[:, :40] = -300.0  # image left (patient right) in fat/air
    x = network_input(hu, (0.8, 0.8), grid, prep)
    assert x.shape == (prep.channels, 64, 48) and x.dtype == np.float32
    for channel, (lo, hi) in enumerate(prep.windows):
        # A 40 HU region maps to its place in each window; -300 is below every window: -1.
        assert x[channel, 32, 40] == pytest.approx(2 * (np.clip(40, lo, hi) - lo) / (hi - lo) - 1, abs=1e-5)
        assert x[channel, 32, 8] == pytest.approx(-1.0)


def test_missing_partner_files_are_named(tmp_path):
    _write_case(tmp_path, 0)
    (tmp_path / "segmentation-0.nii").unlink()
    with pytest.raises(DataFormatError, match=r"volume-0\.nii has no segmentation-0"):
        find_lits_cases(tmp_path)
    (tmp_path / "volume-0.nii").unlink()
    _write(tmp_path / "segmentation-4.nii.gz", np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(DataFormatError, match=r"segmentation-4\.nii\.gz has no volume-4"):
        find_lits_cases(tmp_path)


def test_empty_missing_and_duplicate(tmp_path):
    with pytest.raises(DataFormatError, match="no LiTS cases"):
        find_lits_cases(tmp_path)
    with pytest.raises(DataFormatError, match="does not exist"):
        find_lits_cases(tmp_path / "nope")
    _write_case(tmp_path, 1, suffix=".nii")
    _write_case(tmp_path, 1, suffix=".nii.gz")
    with pytest.raises(DataFormatError, match=r"two (volume|segmentation) files for case 1"):
        find_lits_cases(tmp_path)


def test_shape_mismatch_names_the_file(tmp_path):
    _write_case(tmp_path, 0)
    _write(tmp_path / "segmentation-0.nii", np.zeros((10, 12, 4), np.uint8))
    with pytest.raises(DataFormatError, match=r"segmentation-0\.nii has shape"):
        read_lits_case(find_lits_cases(tmp_path)[0])


@pytest.mark.parametrize("value, message", [(3, r"label values \[3"), (-1, r"label values \[-1"),
                                            (1.5, "non-integer label values"), (np.nan, "label values")])
def test_bad_labels_name_the_file(tmp_path, value, message):
    _write_case(tmp_path, 0)
    labels = np.zeros((10, 12, 5), np.float32)
    labels[2, 3, 1] = value
    _write(tmp_path / "segmentation-0.nii", labels)
    with pytest.raises(DataFormatError, match=rf"segmentation-0\.nii has {message}"):
        read_lits_case(find_lits_cases(tmp_path)[0])


@pytest.mark.parametrize("shape", [(10, 12), (10, 12, 5, 2)])
def test_non_3d_is_refused(tmp_path, shape):
    _write_case(tmp_path, 0)
    _write(tmp_path / "volume-0.nii", np.zeros(shape, np.int16))
    with pytest.raises(DataFormatError, match=r"volume-0\.nii has shape .* expected a 3D volume"):
        read_lits_case(find_lits_cases(tmp_path)[0])


def test_trailing_singleton_axis_is_one_volume(tmp_path):
    hu, _ = _write_case(tmp_path, 0)
    stored, affine = _stored(hu, "LPS")
    _write(tmp_path / "volume-0.nii", stored[..., None].astype(np.int16), affine)
    np.testing.assert_array_equal(read_lits_case(find_lits_cases(tmp_path)[0]).hu, hu)


def test_corrupt_and_truncated_files_are_named(tmp_path):
    _write_case(tmp_path, 0, suffix=".nii.gz")
    (tmp_path / "volume-0.nii.gz").write_bytes(b"this is not gzip at all" * 20)
    with pytest.raises(DataFormatError, match=r"volume-0\.nii\.gz"):
        read_lits_case(find_lits_cases(tmp_path)[0])
    _write_case(tmp_path, 0, suffix=".nii.gz")
    whole = gzip.decompress((tmp_path / "segmentation-0.nii.gz").read_bytes())
    (tmp_path / "segmentation-0.nii.gz").write_bytes(gzip.compress(whole[: len(whole) - 200]))
    with pytest.raises(DataFormatError, match=r"segmentation-0\.nii\.gz: pixel data cannot be read"):
        read_lits_case(find_lits_cases(tmp_path)[0])


def test_implausible_spacing_is_refused(tmp_path):
    hu, labels = _display_volume()
    affine = np.diag([40.0, 40.0, 2.0, 1.0])  # 40 mm pixels: not a CT slice
    _write(tmp_path / "volume-0.nii", hu.transpose(2, 1, 0).astype(np.int16), affine)
    _write(tmp_path / "segmentation-0.nii", labels.transpose(2, 1, 0), affine)
    with pytest.raises(DataFormatError, match=r"volume-0\.nii: pixel spacing"):
        read_lits_case(find_lits_cases(tmp_path)[0])
