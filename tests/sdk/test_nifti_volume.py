"""open_nifti_volume: a NIfTI header checked once, its slices read in any order, a .nii.gz inflated once."""

from __future__ import annotations

import builtins
import dataclasses
import gc
import gzip
import io
import os
import tempfile
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from concurrency import run_together
from liverlesion.errors import DataFormatError, InputError
from liverlesion.sdk.inputs.nifti import NiftiVolume, open_nifti_volume, read_nifti_slice
from liverlesion.sdk.series import SliceReadError, find_series, open_series

nib = pytest.importorskip("nibabel")

SPACING_MM, THICKNESS_MM = 0.8, 2.5


def ct_volume(slices: int, side: int, seed: int = 0) -> np.ndarray:
    """(slices, rows, cols) HU in the radiological view: air on the left, noisy tissue on the right, a marker
    in the top-right corner of slice k (-900 + 7k) so that slices, rows and columns are all told apart."""
    rng = np.random.default_rng(seed)
    hu = np.full((slices, side, side), -1000, np.int16)
    hu[:, :, side // 2:] = rng.integers(-200, 300, (slices, side, side - side // 2), dtype=np.int16)
    hu[:, 0, -1] = np.arange(slices) * 7 - 900
    return hu


def write_lits(path: Path, hu: np.ndarray, ras: bool) -> Path:
    """``hu`` written as the LiTS phantoms are (liverlesion.data.phantom), stored LPS- or RAS-wise."""
    from liverlesion.data.phantom import _nifti

    nib.save(_nifti(nib, hu, SPACING_MM, THICKNESS_MM, ras), str(path))
    return path


def write_layout(path: Path, hu: np.ndarray, layout: str, *, slope: float = 1.0, inter: float = 0.0,
                 four_d: bool = False) -> Path:
    """``hu`` stored RAS+ with the feet-head axis as stored axis 2 ("z last", one read per slice) or scattered
    through the file ("z middle", "z first"; the latter also stored head -> feet), raw values ``hu``."""
    volume = hu[:, ::-1, ::-1].transpose(2, 1, 0)  # (x, y, z): columns and rows reversed, RAS+
    order = {"z last": (0, 1, 2), "z middle": (0, 2, 1), "z first": (2, 0, 1)}[layout]
    zooms = np.diag([SPACING_MM, SPACING_MM, THICKNESS_MM])
    affine = np.eye(4)
    affine[:3, :3] = zooms[:, list(order)]
    data = volume.transpose(order)
    if layout == "z first":
        data = data[::-1]
        affine[:3, 3] = -affine[:3, 0] * (data.shape[0] - 1)
        affine[:3, 0] = -affine[:3, 0]
    image = nib.Nifti1Image(np.ascontiguousarray(data[..., None] if four_d else data), affine)
    if slope != 1.0 or inter != 0.0:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, str(path))
    return path


# -- the same slices as read_nifti_slice, and as written ------------------------------------------------------
@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
@pytest.mark.parametrize("ras", [False, True], ids=["LPS", "RAS"])
def test_every_slice_is_the_one_written_and_the_one_read_nifti_slice_reads(tmp_path, name, ras):
    hu = ct_volume(7, 24)
    path = write_lits(tmp_path / name, hu, ras)
    with open_nifti_volume(path) as volume:
        assert len(volume) == volume.count == 7
        assert volume.shape == (24, 24) and volume.spacing_mm == pytest.approx((SPACING_MM, SPACING_MM))
        # the phantom writer puts the world origin at the volume's centre: slice k at (k - 3) * 2.5 mm (+S)
        assert volume.positions_mm == pytest.approx([(k - 3) * THICKNESS_MM for k in range(7)])
        assert volume.slice_mm == pytest.approx(THICKNESS_MM)
        normal = np.cross(volume.direction_cosines[:3], volume.direction_cosines[3:])
        assert abs(normal[2]) == pytest.approx(1.0)  # axial
        for k in [6, 0, 3, 4, 1, 5, 2]:  # any order
            got = volume.slice(k)
            np.testing.assert_array_equal(got.hu, hu[k])
            alone = read_nifti_slice(path, k)
            np.testing.assert_array_equal(got.hu, alone.hu)
            assert got.spacing_mm == alone.spacing_mm and got.source == alone.source
            assert got.source == {"kind": "nifti", "path": str(path), "index": k, "slices": 7}


@pytest.mark.parametrize("layout", ["z last", "z middle", "z first"])
def test_slices_scattered_through_a_gzip_file_are_read_from_its_one_copy(tmp_path, layout):
    hu = ct_volume(6, 20, seed=1)
    path = write_layout(tmp_path / "v.nii.gz", hu, layout)
    with open_nifti_volume(path) as volume:
        for k in [5, 2, 0, 4, 1, 3]:
            np.testing.assert_array_equal(volume.slice(k).hu, hu[k], err_msg=layout)


def test_a_scaled_4d_gzip_volume_gives_the_scaled_slices(tmp_path):
    hu = ct_volume(4, 16)
    path = write_layout(tmp_path / "s.nii.gz", hu, "z middle", slope=0.5, inter=-10.0, four_d=True)
    assert nib.load(str(path)).shape == (16, 4, 16, 1)
    with open_nifti_volume(path) as volume:
        for k in range(4):
            np.testing.assert_array_equal(volume.slice(k).hu, hu[k] * 0.5 - 10.0)


# -- a .nii.gz is inflated once, whatever the order ----------------------------------------------------
class _Counted(io.BufferedReader):
    """A file whose reads are added up in ``counts`` (bytes handed to the reader, e.g. gzip)."""

    counts: list[int]

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.counts.append(len(data))
        return data

    def read1(self, size: int = -1) -> bytes:
        data = super().read1(size)
        self.counts.append(len(data))
        return data

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = super().readinto(buffer)
        self.counts.append(n)
        return n


@pytest.fixture
def compressed_reads(monkeypatch):
    """``reads(path, work)``: the bytes of ``path`` that every open() of it read while ``work()`` ran."""
    real_open = builtins.open

    def reads(path: Path, work) -> int:
        counts: list[int] = []

        def counting_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and Path(file) == path and mode == "rb":
                handle = _Counted(io.FileIO(os.fspath(file), "rb"))
                handle.counts = counts
                return handle
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", counting_open)
        try:
            work()
        finally:
            monkeypatch.setattr(builtins, "open", real_open)
        return sum(counts)

    return reads


def test_reading_every_slice_of_a_gzip_volume_inflates_it_once_in_any_order(tmp_path, compressed_reads):
    count = 40
    hu = ct_volume(count, 256)
    path = write_lits(tmp_path / "v.nii.gz", hu, ras=False)
    size = path.stat().st_size
    assert size > 1 << 20  # a buffer or two of slack is small beside it

    def every(order):
        def work():
            with open_nifti_volume(path) as volume:
                for k in order:
                    volume.slice(k)
        return work

    last_only = compressed_reads(path, every([count - 1]))  # the whole stream, inflated once, and the header
    in_order = compressed_reads(path, every(range(count)))
    reverse = compressed_reads(path, every(range(count - 1, -1, -1)))
    shuffled = compressed_reads(path, every(np.random.default_rng(0).permutation(count).tolist()))
    assert last_only >= size
    for total in (in_order, reverse, shuffled):
        assert total <= last_only + size // 8, (total, last_only, size)
    # the check can fail: one read_nifti_slice per slice inflates the stream up to each slice again
    alone = compressed_reads(path, lambda: [read_nifti_slice(path, k) for k in range(0, count, 4)])
    assert alone > 3 * size


def test_an_opened_series_reads_a_gzip_volume_from_reader_threads_inflating_it_once(tmp_path, compressed_reads):
    count = 40
    hu = ct_volume(count, 160, seed=2)
    path = write_lits(tmp_path / "v.nii.gz", hu, ras=True)
    got: dict[int, np.ndarray] = {}

    def work():
        with open_series(path) as series, ThreadPoolExecutor(max_workers=4) as pool:
            for k, s in zip(range(count), pool.map(series.read, range(count))):
                got[k] = s.hu

    total = compressed_reads(path, work)
    assert total <= path.stat().st_size * 9 // 8 + (1 << 20)
    for k in range(count):
        np.testing.assert_array_equal(got[k], hu[k])


def test_reading_every_slice_never_holds_the_volume(tmp_path):
    hu = ct_volume(64, 256)
    path = write_lits(tmp_path / "v.nii.gz", hu, ras=False)
    with open_nifti_volume(path) as volume:
        volume.slice(0)  # imports and first-use allocations outside the measurement
        tracemalloc.start()
        try:
            for k in range(63, 0, -1):
                volume.slice(k)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    as_float32 = hu.size * 4
    assert peak < as_float32 / 4, f"peak {peak} bytes for a volume of {as_float32} bytes as float32"


def test_many_threads_read_one_volume_at_once(tmp_path):
    hu = ct_volume(12, 32, seed=3)
    path = write_lits(tmp_path / "v.nii.gz", hu, ras=True)
    with open_nifti_volume(path) as volume:

        def work(t: int) -> None:
            for k in np.random.default_rng(t).permutation(12):
                np.testing.assert_array_equal(volume.slice(int(k)).hu, hu[k])

        assert run_together(8, work) == []


# -- the temporary copy ----------------------------------------------------------------------------------
@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_the_copy_lives_in_the_temporary_folder_until_the_volume_is_closed(tmp_path, private_tmp):
    hu = ct_volume(5, 16)
    path = write_lits(tmp_path / "v.nii.gz", hu, ras=False)
    volume = open_nifti_volume(path)
    assert list(private_tmp.iterdir()) == []  # opening reads the header only
    volume.slice(4)
    copies = [p for p in private_tmp.rglob("*") if p.is_file()]
    assert len(copies) == 1 and copies[0].stat().st_size == len(gzip.decompress(path.read_bytes()))
    volume.close()
    assert list(private_tmp.iterdir()) == [] and volume.closed
    volume.close()  # twice is harmless
    dropped = open_nifti_volume(path)
    dropped.slice(2)
    assert list(private_tmp.iterdir()) != []
    del dropped
    gc.collect()
    assert list(private_tmp.iterdir()) == []  # a volume dropped unclosed deletes its copy too


def test_a_plain_nii_is_read_in_place(tmp_path, private_tmp):
    path = write_lits(tmp_path / "v.nii", ct_volume(5, 16), ras=False)
    with open_nifti_volume(path) as volume:
        volume.slice(3)
        assert list(private_tmp.iterdir()) == []


def test_a_temporary_folder_that_cannot_hold_the_copy_is_named(tmp_path, monkeypatch):
    path = write_lits(tmp_path / "v.nii.gz", ct_volume(5, 16), ras=False)
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")
    monkeypatch.setattr(tempfile, "tempdir", str(blocked))
    with open_nifti_volume(path) as volume:
        with pytest.raises(InputError, match="temporary copy in .*not-a-folder.*TMPDIR"):
            volume.slice(0)
        with pytest.raises(InputError, match="TMPDIR"):  # and it stays refused
            volume.slice(1)


# -- closed volumes and series -------------------------------------------------------------------------
def test_a_closed_volume_refuses_to_read(tmp_path):
    path = write_lits(tmp_path / "v.nii.gz", ct_volume(5, 16), ras=False)
    with open_nifti_volume(path) as volume:
        volume.slice(0)
    assert isinstance(volume, NiftiVolume) and "closed" in repr(volume)
    with pytest.raises(InputError, match="is closed"):
        volume.slice(1)
    with open_series(path) as series:
        np.testing.assert_array_equal(series.read(1).hu, ct_volume(5, 16)[1])
    with pytest.raises(SliceReadError, match="is closed"):
        series.read(1)


def test_a_series_and_its_listing_describe_the_volume(tmp_path):
    path = write_lits(tmp_path / "v.nii.gz", ct_volume(5, 16), ras=True)
    (info,) = find_series(path)
    assert (info.images, info.orientation, info.kind) == (5, "axial", "nifti")
    hu = ct_volume(5, 16)
    with open_series(path) as series:
        assert series.positions_mm == pytest.approx([(k - 2) * THICKNESS_MM for k in range(5)])
        assert series.slice_spacing_mm == pytest.approx(THICKNESS_MM) and series.shape == (16, 16)
        unopened = dataclasses.replace(series, volume=None)  # built without its volume: read through the file
        for k in range(5):
            np.testing.assert_array_equal(unopened.read(k).hu, hu[k])


# -- bad headers and indices, as read_nifti_slice refuses them --------------------------------------------
def test_bad_volumes_are_refused_when_opened(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a nifti volume at all")
    with pytest.raises(DataFormatError, match="broken.nii.gz is not a readable NIfTI volume"):
        open_nifti_volume(broken)
    flat = tmp_path / "flat.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 7), np.int16), np.eye(4)), str(flat))
    with pytest.raises(DataFormatError, match="not 3D"):
        open_nifti_volume(flat)
    complex_ = tmp_path / "complex.nii"
    nib.save(nib.Nifti1Image(np.zeros((6, 7, 3), np.complex64), np.eye(4)), str(complex_))
    with pytest.raises(DataFormatError, match="complex64, which is not HU"):
        open_nifti_volume(complex_)
    with pytest.raises(InputError, match="no such file"):
        open_nifti_volume(tmp_path / "absent.nii.gz")


def test_a_header_claiming_a_huge_slice_is_refused_before_any_voxel_is_read(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((30000, 30000, 1))
    header.set_data_dtype(np.int16)
    header.set_zooms((0.7, 0.7, 2.5))
    header.set_qform(np.diag([0.7, 0.7, 2.5, 1.0]), code=1)
    path = tmp_path / "huge.nii.gz"
    path.write_bytes(gzip.compress(header.binaryblock + bytes(4) + bytes(1 << 16)))  # 64 KB of the 1.8 GB
    with pytest.raises(DataFormatError, match="30000 x 30000 exceeds the limit of 4096"):
        open_nifti_volume(path)
    with open_nifti_volume(path, max_side=30000) as volume:  # a raised limit opens it, and a read finds it short
        with pytest.raises(DataFormatError, match="truncated"):
            volume.slice(0)


def test_a_truncated_gzip_volume_reads_its_first_slices_and_refuses_the_rest(tmp_path):
    hu = ct_volume(6, 64)
    whole = write_lits(tmp_path / "whole.nii", hu, ras=False)
    data = whole.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(gzip.compress(data[: len(data) - 64 * 64 * 2 - 10]))  # slice 5 lost, slice 4 cut short
    with open_nifti_volume(cut) as volume:
        np.testing.assert_array_equal(volume.slice(3).hu, hu[3])
        for k in (5, 4):
            with pytest.raises(DataFormatError, match="cut.nii.gz: slice .* may be truncated"):
                volume.slice(k)
        np.testing.assert_array_equal(volume.slice(0).hu, hu[0])


def test_an_oblique_volume_is_refused_unless_only_described(tmp_path):
    angle = np.radians(30)
    affine = np.eye(4)
    affine[1:3, 1:3] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    path = tmp_path / "oblique.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 3), -1000, np.int16), affine), str(path))
    with pytest.raises(DataFormatError, match="30.0 degrees"):
        open_nifti_volume(path)
    with open_nifti_volume(path, max_tilt_deg=None) as volume:
        assert len(volume) == 3
    assert find_series(path)[0].orientation == "oblique"


@pytest.mark.parametrize("index", [5, -1, True, 1.0, "1", None])
def test_a_slice_index_outside_the_volume_is_refused(tmp_path, index):
    path = write_lits(tmp_path / "v.nii.gz", ct_volume(5, 16), ras=False)
    with open_nifti_volume(path) as volume:
        with pytest.raises(InputError, match=r"slice index .* out of range; accepted: an integer 0\.\.4"):
            volume.slice(index)
