"""predict_series: a DICOM series of drawn balls through the HU-threshold package, pipelined and streaming.

The threshold graph (tests/sdk_fixtures.py) labels each pixel by the nearest HU of THRESHOLD_HU,
and the slices lie on its model grid (128 x 128 at 2 mm), so every voxel's label is known from
the HU drawn: the balls' volumes and axes are checked against their radii, not against the code.
"""

from __future__ import annotations

import json
import math
import threading
import tracemalloc

import nibabel as nib
import numpy as np
import pytest

from liverlesion.errors import BackendError, DataFormatError, InputError
from liverlesion.labels import TARGET_LABELS
from liverlesion.sdk import LesionAnalyzer
from liverlesion.sdk.series.pipeline import default_readers, predict_series
from liverlesion.sdk.series.source import SliceReadError, open_series
from sdk_fixtures import THRESHOLD_GRID, THRESHOLD_HU, make_threshold_package
from series_files import ct_series, sphere_volume, write_many, write_series

PIXEL_MM = THRESHOLD_GRID.spacing_mm[0]  # 2 mm: the slices are the model grid, so labels come back unchanged
SIDE = THRESHOLD_GRID.size[0]
SLICE_MM = 2.5
SLICES = 36
LIVER_SLICES = range(3, 33)
#: (label, centre (slice mm, row mm, col mm) from the first voxel's centre, radius mm); centres on voxel centres
BALLS = (("metastasis", (50.0, 100.0, 100.0), 9.0), ("cyst", (30.0, 160.0, 150.0), 6.0),
         ("hemangioma", (60.0, 150.0, 80.0), 12.0))
VOXEL_ML = SLICE_MM * PIXEL_MM * PIXEL_MM / 1000.0


def phantom() -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(HU, the labels the threshold graph must give, each ball's mask): body, a liver cylinder, three balls."""
    rows, cols = np.mgrid[:SIDE, :SIDE] * PIXEL_MM
    radius = np.hypot(rows - 128.0, cols - 128.0)
    hu = np.full((SLICES, SIDE, SIDE), THRESHOLD_HU["background"][0])
    hu[:, radius > 120.0] = THRESHOLD_HU["background"][1]  # air around the body
    truth = np.zeros(hu.shape, np.uint8)
    liver = np.zeros(hu.shape, bool)
    liver[LIVER_SLICES.start:LIVER_SLICES.stop, radius <= 90.0] = True
    hu[liver] = THRESHOLD_HU["liver"]
    truth[liver] = TARGET_LABELS.index("liver")
    masks = []
    for label, centre, r in BALLS:
        ball = sphere_volume(hu.shape, centre, r, (PIXEL_MM, PIXEL_MM), SLICE_MM)
        hu[ball] = THRESHOLD_HU[label]
        truth[ball] = TARGET_LABELS.index(label)
        masks.append(ball)
    return hu, truth, masks


@pytest.fixture(scope="module")
def analyzer(tmp_path_factory):
    # make_threshold_package is sdk_world's threshold package, built here without sdk_world's training run
    package = make_threshold_package(tmp_path_factory.mktemp("threshold") / "package")
    with LesionAnalyzer.load(package, "onnxruntime") as loaded:
        yield loaded


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The phantom written as a DICOM series in volume order (slice k at z = k * 2.5 mm)."""
    hu, truth, masks = phantom()
    datasets = ct_series(hu, (PIXEL_MM, PIXEL_MM), SLICE_MM, first_z_mm=0.0)
    paths = write_series(tmp_path_factory.mktemp("drawn") / "ct", datasets)
    return paths[0].parent, paths, datasets, hu, truth, masks


@pytest.fixture(scope="module")
def result(analyzer, drawn):
    return analyzer.predict_series(drawn[0])


# -- what comes out ---------------------------------------------------------------------------------
def test_the_label_volume_is_the_drawn_one(result, drawn):
    truth = drawn[4]
    assert result.labels.dtype == np.uint8 and result.labels.shape == truth.shape
    np.testing.assert_array_equal(result.labels, truth)


def test_3d_lesions_are_the_balls_drawn(result, drawn):
    masks = drawn[5]
    assert len(result.lesions) == len(BALLS)
    by_label = {lesion.label: lesion for lesion in result.lesions}
    assert sorted(by_label) == sorted(label for label, _, _ in BALLS)
    diagonal = math.hypot(PIXEL_MM, PIXEL_MM)
    for (label, (z, _, _), r), mask in zip(BALLS, masks):
        lesion = by_label[label]
        assert lesion.voxels == int(mask.sum())  # every voxel of the ball, no other
        np.testing.assert_array_equal(result.lesion_ids == lesion.id, mask)
        shell_ml = 4 * math.pi * r ** 2 * 0.5 * math.sqrt(2 * PIXEL_MM ** 2 + SLICE_MM ** 2) / 1000.0
        assert abs(lesion.volume_ml - 4 / 3 * math.pi * r ** 3 / 1000.0) <= shell_ml  # within a voxel of the ball
        assert lesion.volume_ml == pytest.approx(mask.sum() * VOXEL_ML)
        assert lesion.largest_slice == round(z / SLICE_MM)  # the slice through the centre
        assert lesion.first_slice == math.ceil((z - r) / SLICE_MM)
        assert lesion.last_slice == math.floor((z + r) / SLICE_MM)
        # RECIST axes of the disc through the centre: its diameter, within a pixel's diagonal
        assert abs(lesion.axes.long_mm - 2 * r) <= diagonal and abs(lesion.axes.short_mm - 2 * r) <= diagonal
        assert lesion.axes.short_mm <= lesion.axes.long_mm + 1e-9
        assert 0.9 < lesion.probability <= 1.0
    liver_voxels = np.count_nonzero(drawn[4])
    assert result.measurements.liver_volume_ml == pytest.approx(liver_voxels * VOXEL_ML)
    lesion_voxels = sum(int(m.sum()) for m in masks)
    assert result.measurements.burden == pytest.approx(lesion_voxels / liver_voxels)


def test_per_slice_summaries_keep_the_2d_lesions_and_drop_the_pixels(result, drawn):
    datasets, truth = drawn[2], drawn[4]
    assert [s.index for s in result.slices] == list(range(SLICES))
    assert [s.sop_instance_uid for s in result.slices] == [ds.SOPInstanceUID for ds in datasets]
    assert [s.position_mm for s in result.slices] == pytest.approx([k * SLICE_MM for k in range(SLICES)])
    for summary, labels in zip(result.slices, truth):
        assert summary.lesion_pixels == np.count_nonzero(labels >= 2)
        assert sum(x["pixels"] for x in summary.lesions) == summary.lesion_pixels
        assert (summary.slice_class is None) == (summary.lesion_pixels == 0)
        # a disc's two axes are equal; the short one may come out an ulp longer
        assert all(x["axes"]["long_mm"] + 1e-9 >= x["axes"]["short_mm"] > 0 for x in summary.lesions)
    assert not any(hasattr(s, "label_map") for s in result.slices)


def test_the_label_volume_is_what_predict_gives_each_slice(analyzer, drawn):
    paths = drawn[1]
    series = analyzer.predict_series(paths[::-1], batch_size=5, readers=2)  # a list, reversed; 5 does not divide 36
    for k, path in enumerate(paths):
        np.testing.assert_array_equal(series.labels[k], analyzer.predict(path).label_map)
    assert series.timings["batch_size"] == 5 and series.timings["readers"] == 2


def test_shuffled_files_and_lying_instance_numbers_give_the_same_result(analyzer, drawn, result, tmp_path):
    datasets = drawn[2]
    order = np.random.default_rng(4).permutation(SLICES)
    for rank, k in enumerate(order):
        datasets[k].InstanceNumber = rank + 1
    names = [f"im{rank:03d}" for rank in np.argsort(order)]
    write_series(tmp_path / "ct", datasets, names=names)
    for k, ds in enumerate(datasets):
        ds.InstanceNumber = k + 1  # the module's datasets as they were
    shuffled = analyzer.predict_series(tmp_path / "ct")
    np.testing.assert_array_equal(shuffled.labels, result.labels)
    np.testing.assert_array_equal(shuffled.lesion_ids, result.lesion_ids)
    assert shuffled.lesions == result.lesions


def test_a_3d_array_with_its_spacing_gives_the_same_lesions(analyzer, drawn, result):
    hu = drawn[3]
    volume = analyzer.predict_series(hu, spacing=(SLICE_MM, PIXEL_MM, PIXEL_MM))
    np.testing.assert_array_equal(volume.labels, result.labels)
    assert volume.lesions == result.lesions
    with pytest.raises(InputError, match="spacing"):
        analyzer.predict_series(hu)


def test_to_dict_is_json_without_nan(result):
    text = json.dumps(result.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert len(back["measurements"]["lesions"]) == len(BALLS) and len(back["slices"]) == SLICES
    assert back["series"]["info"]["kind"] == "dicom" and back["shape"] == [SLICES, SIDE, SIDE]
    for key in ("read_ms", "inference_ms", "postprocess_ms", "wall_s", "slices_per_s", "batch_size"):
        assert back["timings"][key] > 0
    assert back["backend"] == "onnxruntime" and back["model"]["name"] == "threshold"


def test_seg_and_sr_reference_every_instance_of_the_series(result, drawn):
    datasets = drawn[2]
    seg = result.to_dicom_seg()
    referenced = {item.ReferencedSOPInstanceUID for series in seg.ReferencedSeriesSequence
                  for item in series.ReferencedInstanceSequence}
    assert referenced == {ds.SOPInstanceUID for ds in datasets}
    assert len(seg.SegmentSequence) == 1 + len(BALLS)
    sr = result.to_dicom_sr(seg)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert all("PixelData" not in source for source in result.sources())  # headers, not pixel-holding slices


# -- NIfTI out ------------------------------------------------------------------------------------
def test_nifti_of_a_dicom_series_lies_on_its_voxels(result, drawn, tmp_path):
    datasets, truth = drawn[2], drawn[4]
    path = result.to_nifti(tmp_path / "labels.nii.gz")
    image = nib.load(str(path))
    np.testing.assert_array_equal(np.asarray(image.dataobj), truth.transpose(2, 1, 0))
    for k, row, col in ((0, 0, 0), (7, 3, 100), (SLICES - 1, SIDE - 1, 5)):
        lps = np.asarray(datasets[k].ImagePositionPatient, float) + np.array([col, row, 0.0]) * PIXEL_MM
        ras = image.affine @ np.array([col, row, k, 1.0])
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-6)
    with pytest.raises(InputError, match=".nii"):
        result.to_nifti(tmp_path / "labels.png")


@pytest.mark.parametrize("signs", [(-1, -1, 1), (1, 1, 1), (1, -1, -1)], ids=["LPS", "RAS", "flipped"])
def test_nifti_of_a_nifti_volume_is_on_its_own_voxels_and_affine(analyzer, drawn, tmp_path, signs):
    hu, truth = drawn[3], drawn[4]
    # stored (x, y, z): columns, rows, slices, each flipped where its sign is negative
    stored = hu.transpose(2, 1, 0)[::signs[0], ::signs[1], ::signs[2]].astype(np.int16)
    expected = truth.transpose(2, 1, 0)[::signs[0], ::signs[1], ::signs[2]]
    affine = np.diag([signs[0] * PIXEL_MM, signs[1] * PIXEL_MM, signs[2] * SLICE_MM, 1.0])
    nib.save(nib.Nifti1Image(np.ascontiguousarray(stored), affine), str(tmp_path / "ct.nii"))
    series = analyzer.predict_series(tmp_path / "ct.nii")
    image = nib.load(str(series.to_nifti(tmp_path / "labels.nii")))
    np.testing.assert_array_equal(np.asarray(image.dataobj), expected)  # label = threshold of the same voxel
    np.testing.assert_allclose(image.affine, affine)
    assert len(series.lesions) == len(BALLS)


def test_a_gzipped_nifti_leaves_no_inflated_copy_behind(analyzer, drawn, tmp_path, monkeypatch):
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    hu, truth = drawn[3], drawn[4]
    affine = np.diag([-PIXEL_MM, -PIXEL_MM, SLICE_MM, 1.0])
    stored = np.ascontiguousarray(hu.transpose(2, 1, 0).astype(np.int16))
    nib.save(nib.Nifti1Image(stored, affine), str(tmp_path / "ct.nii.gz"))
    series = analyzer.predict_series(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(series.labels, truth)
    assert [p for p in scratch.rglob("*") if p.is_file()] == []  # predict_series opened it, so it closed it


# -- errors and threads ---------------------------------------------------------------------------
def test_a_truncated_file_names_itself_and_leaves_no_thread(analyzer, drawn, tmp_path):
    paths = drawn[1]
    write_series(tmp_path / "ct", drawn[2])
    broken = tmp_path / "ct" / paths[20].name
    broken.write_bytes(broken.read_bytes()[:-5000])  # the pixel data cut short
    before = set(threading.enumerate())
    with pytest.raises(SliceReadError, match=broken.name) as info:
        analyzer.predict_series(tmp_path / "ct")
    assert isinstance(info.value, DataFormatError) and info.value.index == 20
    assert set(threading.enumerate()) <= before  # none left behind (one that existed may have ended)


@pytest.mark.parametrize("stage", ["_prepare", "_infer", "_decode", "progress"])
def test_an_error_in_any_stage_reaches_the_caller_and_no_thread_remains(analyzer, drawn, monkeypatch, stage):
    calls = {"n": 0}
    original = getattr(analyzer, stage, None)

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 11:  # the 11th slice read, or the 11th batch / progress report
            raise BackendError(f"{stage} failed on purpose")
        return None if original is None else original(*args, **kwargs)

    options = {}
    if stage == "progress":
        options["progress"] = failing
    else:
        monkeypatch.setattr(analyzer, stage, failing)
    before = set(threading.enumerate())
    with pytest.raises(BackendError, match=f"{stage} failed on purpose") as info:
        analyzer.predict_series(drawn[0], batch_size=2, readers=1, **options)  # one reader: reads in order
    if stage == "_prepare":
        assert "slice 10 of 36" in str(info.value)  # reads run in order: the 11th is slice 10
    elif stage in ("_infer", "_decode"):
        assert "slices 20..21 of 36" in str(info.value)
    assert set(threading.enumerate()) <= before  # none left behind (one that existed may have ended)


def test_arguments_are_checked(analyzer, drawn):
    series = open_series(drawn[0])
    with pytest.raises(InputError, match="already opened"):
        predict_series(analyzer, series, series_uid="1.2.3")
    for bad in ({"readers": 3}, {"readers": 0}, {"batch_size": 0}, {"progress": "yes"}):
        with pytest.raises(InputError):
            predict_series(analyzer, series, **bad)
    assert default_readers(2) == 1 and default_readers(16) == 2
    done = []
    opened = predict_series(analyzer, series, progress=lambda k, n: done.append((k, n)))
    assert done[0] == (0, SLICES) and done[-1] == (SLICES, SLICES)
    assert [k for k, _ in done] == sorted(k for k, _ in done)
    assert opened.series is series


# -- streaming --------------------------------------------------------------------------------------
def test_memory_grows_with_the_labels_not_with_the_hu(analyzer, tmp_path):
    count = 300

    def peak(side: int) -> int:
        write_many(tmp_path / str(side), count, side=side)
        series = open_series(tmp_path / str(side))
        tracemalloc.start()
        try:
            run = predict_series(analyzer, series, batch_size=8, readers=1)
            _, top = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert run.labels.shape == (count, side, side)
        return top

    small, big = peak(64), peak(128)
    voxels = count * (128 * 128 - 64 * 64)
    # held: the uint8 label volume, then measure_series' lesion mask and id volume (lesion probabilities are kept
    # for lesion pixels only: none here): 1 to 3 bytes a voxel; holding the series' HU as well would add 4 (float32)
    # + 2 (the stored int16 pixels) bytes a voxel
    assert voxels <= big - small < 3 * voxels
