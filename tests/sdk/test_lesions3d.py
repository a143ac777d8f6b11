"""3D lesions of a label volume against phantoms of known geometry: balls, ellipsoids, blocks, mixed types."""

from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest

from liverlesion.errors import InputError
from liverlesion.labels import CYST, HEMANGIOMA, LIVER, METASTASIS
from liverlesion.sdk.series.lesions3d import CONNECTIVITY, SeriesMeasurements, measure_series
from series_files import sphere_volume

SPACING = (0.7, 0.7)
SLICE_MM = 2.5


def positions(slices: int, step: float = SLICE_MM) -> list[float]:
    return [-40.0 + k * step for k in range(slices)]


def ball_series(shape, centre_mm, radius_mm, label=METASTASIS, spacing=SPACING, slice_mm=SLICE_MM):
    """Labels of a liver block holding one ball, and the ball's mask."""
    ball = sphere_volume(shape, centre_mm, radius_mm, spacing, slice_mm)
    labels = np.zeros(shape, np.uint8)
    labels[1:-1, 2:-2, 2:-2] = LIVER
    labels[ball] = label
    return labels, ball


@pytest.mark.parametrize("radius_mm", [6.0, 12.0])
def test_ball_volume_extent_centroid_and_recist_axes(radius_mm):
    shape = (21, 64, 64)
    centre = (10 * SLICE_MM, 32 * SPACING[0], 31 * SPACING[1])  # on a voxel centre: the ball is symmetric
    labels, ball = ball_series(shape, centre, radius_mm)
    result, ids = measure_series(labels, SPACING, positions(shape[0]))
    assert result.connectivity == CONNECTIVITY and "26" in CONNECTIVITY
    assert len(result.lesions) == 1
    lesion = result.lesions[0]
    voxel_ml = SPACING[0] * SPACING[1] * SLICE_MM / 1000
    # Volume: the analytic ball's voxel count, and 4/3 pi r^3 within the discretisation bound (the voxels,
    # as boxes, lie between the ball shrunk and grown by half a voxel diagonal).
    assert lesion.voxels == int(ball.sum())
    assert lesion.volume_ml == pytest.approx(ball.sum() * voxel_ml)
    h = 0.5 * math.sqrt(SPACING[0] ** 2 + SPACING[1] ** 2 + SLICE_MM ** 2)
    ball_ml = [4 / 3 * math.pi * r ** 3 / 1000 for r in (radius_mm - h, radius_mm, radius_mm + h)]
    assert ball_ml[0] <= lesion.volume_ml <= ball_ml[2]
    assert lesion.volume_ml == pytest.approx(ball_ml[1], rel=0.1)  # and close: the error is a thin shell
    # Slices: the ball reaches every slice within r of its centre, and is largest on the centre slice.
    reach = math.floor(radius_mm / SLICE_MM)
    assert (lesion.first_slice, lesion.last_slice, lesion.largest_slice) == (10 - reach, 10 + reach, 10)
    assert lesion.largest_area_mm2 == pytest.approx(ball[10].sum() * SPACING[0] * SPACING[1])
    assert lesion.centroid == pytest.approx((10.0, 32.0, 31.0))
    diag = math.hypot(*SPACING)
    assert abs(lesion.axes.long_mm - 2 * radius_mm) <= diag
    assert abs(lesion.axes.short_mm - 2 * radius_mm) <= diag
    for row, col in (*lesion.axes.long_ends, *lesion.axes.short_ends):  # in the slice's own pixel coordinates
        assert math.hypot((row - 32) * SPACING[0], (col - 31) * SPACING[1]) <= radius_mm + diag / 2 + 1e-9
    assert lesion.label == "metastasis" and lesion.votes == {"metastasis": int(ball.sum())}
    assert math.isnan(lesion.probability)
    assert np.array_equal(ids == 1, ball) and ids.max() == 1


def test_ellipsoid_recist_axes_at_its_equator():
    # Semi-axes 20 mm (rows), 9 mm (cols), 7.5 mm (slices), centred on slice 6: the equator is slice 6.
    shape, spacing, slice_mm = (13, 80, 60), (0.6, 0.6), 1.25
    z, r, c = np.ogrid[:shape[0], :shape[1], :shape[2]]
    body = ((z * slice_mm - 7.5) / 7.5) ** 2 + ((r * spacing[0] - 24.0) / 20.0) ** 2 \
        + ((c * spacing[1] - 18.0) / 9.0) ** 2 <= 1
    labels = np.where(body, np.uint8(HEMANGIOMA), np.uint8(LIVER))
    result, _ = measure_series(labels, spacing, positions(shape[0], slice_mm))
    (lesion,) = result.lesions
    assert lesion.largest_slice == 6 and lesion.label == "hemangioma"
    diag = math.hypot(*spacing)
    assert abs(lesion.axes.long_mm - 40.0) <= diag
    assert abs(lesion.axes.short_mm - 18.0) <= diag
    (r0, _), (r1, _) = lesion.axes.long_ends
    assert abs(r1 - r0) * spacing[0] >= 40.0 - 2 * diag  # along the rows, where the long semi-axis lies


def test_balls_touching_only_by_a_corner_are_one_lesion():
    labels = np.full((8, 12, 12), LIVER, np.uint8)
    labels[1:4, 1:4, 1:4] = CYST
    labels[4:7, 4:7, 4:7] = CYST  # touches the first block at one corner voxel pair only
    result, _ = measure_series(labels, SPACING, positions(8))
    assert len(result.lesions) == 1 and result.lesions[0].voxels == 54
    assert (result.lesions[0].first_slice, result.lesions[0].last_slice) == (1, 6)
    labels[4:7, 4:7, 4:7] = LIVER
    labels[4:7, 5:8, 5:8] = CYST  # one voxel further: no longer touching
    result, _ = measure_series(labels, SPACING, positions(8))
    assert [x.voxels for x in result.lesions] == [27, 27]


def test_separate_balls_are_numbered_in_raster_order_and_the_id_volume_matches_them():
    shape = (24, 60, 60)
    labels = np.full(shape, LIVER, np.uint8)
    late = sphere_volume(shape, (16 * SLICE_MM, 15 * 0.7, 15 * 0.7), 5.0, SPACING, SLICE_MM)
    early = sphere_volume(shape, (5 * SLICE_MM, 40 * 0.7, 40 * 0.7), 7.0, SPACING, SLICE_MM)
    labels[late], labels[early] = CYST, METASTASIS
    result, ids = measure_series(labels, SPACING, positions(shape[0]))
    assert [x.id for x in result.lesions] == [1, 2]
    assert [x.label for x in result.lesions] == ["metastasis", "cyst"]  # the earlier slice first
    assert np.array_equal(ids == 1, early) and np.array_equal(ids == 2, late)
    assert ids.dtype == np.uint8
    total = (early.sum() + late.sum()) * SPACING[0] * SPACING[1] * SLICE_MM / 1000
    assert result.lesion_volume_ml == pytest.approx(total)


def test_a_lesion_of_mixed_types_takes_the_voxel_vote():
    labels = np.full((6, 10, 10), LIVER, np.uint8)
    labels[1:5, 2:8, 2:8] = METASTASIS  # 144 voxels
    labels[1:3, 2:8, 2:4] = CYST  # 24 of them cyst: 120 metastasis
    labels[4, 2:8, 7] = HEMANGIOMA  # 6 hemangioma: 114 metastasis
    result, _ = measure_series(labels, SPACING, positions(6))
    (lesion,) = result.lesions
    assert lesion.label == "metastasis"
    assert lesion.votes == {"cyst": 24, "hemangioma": 6, "metastasis": 114}
    assert lesion.voxels == 144


def test_a_tied_vote_goes_to_the_lower_label():
    labels = np.full((4, 6, 6), LIVER, np.uint8)
    labels[1, 1:3, 1:3] = HEMANGIOMA
    labels[2, 1:3, 1:3] = CYST
    result, _ = measure_series(labels, SPACING, positions(4))
    (lesion,) = result.lesions
    assert lesion.label == "cyst" and lesion.votes == {"cyst": 4, "hemangioma": 4}


def test_probability_is_the_mean_of_the_winning_type_over_its_voxels():
    labels = np.full((5, 8, 8), LIVER, np.uint8)
    labels[1:4, 2:6, 2:6] = METASTASIS  # 48 voxels
    labels[1, 2:6, 2:6] = CYST  # 16 cyst, 32 metastasis: metastasis wins
    probability = np.full(labels.shape, 255, np.uint8)  # background and liver: ignored
    probability[labels == CYST] = 30  # the losing type: ignored
    probability[2, 2:6, 2:6] = 200  # 16 metastasis voxels at 200/255 ...
    probability[3, 2:6, 2:6] = 100  # ... and 16 at 100/255
    result, _ = measure_series(labels, SPACING, positions(5), probability)
    assert result.lesions[0].probability == pytest.approx(150 / 255)
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["lesions"][0]["probability"] == \
        pytest.approx(150 / 255)


def test_lesion_voxel_probabilities_alone_give_what_the_whole_volume_gives():
    from liverlesion.sdk.series.lesions3d import LesionProbabilities

    rng = np.random.default_rng(4)
    labels = np.full((6, 20, 20), LIVER, np.uint8)
    labels[rng.random(labels.shape) < 0.15] = METASTASIS
    labels[rng.random(labels.shape) < 0.05] = CYST
    probability = rng.integers(0, 256, labels.shape).astype(np.uint8)
    dense, dense_ids = measure_series(labels, SPACING, positions(6), probability)
    index = np.flatnonzero(labels.ravel() >= CYST)
    sparse, sparse_ids = measure_series(labels, SPACING, positions(6),
                                        LesionProbabilities(index, probability.ravel()[index]))
    assert len(dense.lesions) > 3 and np.array_equal(dense_ids, sparse_ids)
    for a, b in zip(dense.lesions, sparse.lesions):
        assert b.probability == pytest.approx(a.probability, rel=1e-12)
    with pytest.raises(InputError, match="indices must lie in the label volume"):
        measure_series(labels, SPACING, positions(6),
                       LesionProbabilities(index + labels.size, probability.ravel()[index]))


def test_without_probabilities_the_probability_is_nan_and_null_in_json():
    labels = np.full((3, 5, 5), LIVER, np.uint8)
    labels[1, 2, 2] = CYST
    result, _ = measure_series(labels, SPACING, positions(3))
    assert math.isnan(result.lesions[0].probability)
    assert json.loads(json.dumps(result.to_dict(), allow_nan=False))["lesions"][0]["probability"] is None


def test_liver_volume_counts_its_lesions_and_burden_is_their_share():
    labels = np.zeros((10, 20, 20), np.uint8)
    labels[2:8, 4:14, 4:16] = LIVER  # 6 * 10 * 12 = 720 voxels
    labels[3:5, 6:9, 6:10] = METASTASIS  # 24 of them
    labels[6, 10:12, 10:12] = CYST  # 4 more
    result, _ = measure_series(labels, (0.8, 0.5), positions(10, 3.0))
    voxel_ml = 0.8 * 0.5 * 3.0 / 1000
    assert result.liver_volume_ml == pytest.approx(720 * voxel_ml)
    assert result.lesion_volume_ml == pytest.approx(28 * voxel_ml)
    assert result.burden == pytest.approx(28 / 720)
    assert result.slice_thickness_mm == pytest.approx(3.0)


def test_slice_thickness_is_the_median_spacing_and_a_gap_still_joins_a_lesion():
    labels = np.full((5, 6, 6), LIVER, np.uint8)
    labels[1:4, 2:4, 2:4] = CYST  # crosses the 10 mm gap between slices 2 and 3
    result, _ = measure_series(labels, SPACING, [0.0, 2.0, 4.0, 14.0, 16.0])
    assert result.slice_thickness_mm == pytest.approx(2.0)  # median of 2, 2, 10, 2
    assert len(result.lesions) == 1
    assert result.lesions[0].volume_ml == pytest.approx(12 * SPACING[0] * SPACING[1] * 2.0 / 1000)
    descending, _ = measure_series(labels, SPACING, [16.0, 14.0, 4.0, 2.0, 0.0])
    assert descending.slice_thickness_mm == pytest.approx(2.0)


def test_empty_volumes():
    nothing, ids = measure_series(np.zeros((4, 8, 8), np.uint8), SPACING, positions(4))
    assert nothing == SeriesMeasurements(lesions=(), liver_volume_ml=0.0, lesion_volume_ml=0.0, burden=0.0,
                                         connectivity=CONNECTIVITY, slice_thickness_mm=SLICE_MM)
    assert ids.dtype == np.uint8 and ids.shape == (4, 8, 8) and not ids.any()
    liver_only, _ = measure_series(np.ones((4, 8, 8), np.uint8), SPACING, positions(4))
    assert liver_only.lesions == () and liver_only.burden == 0.0
    assert liver_only.liver_volume_ml == pytest.approx(256 * SPACING[0] * SPACING[1] * SLICE_MM / 1000)


@pytest.mark.parametrize(("count", "dtype"), [(255, np.uint8), (256, np.uint16)])
def test_the_id_volume_has_the_smallest_dtype_for_the_count(count, dtype):
    labels = np.full((2, 40, 40), LIVER, np.uint8)
    spots = [(r, c) for r in range(0, 40, 2) for c in range(0, 40, 2)][:count]  # one empty voxel between
    for r, c in spots:
        labels[0, r, c] = CYST
    result, ids = measure_series(labels, SPACING, positions(2))
    assert len(result.lesions) == count
    assert ids.dtype == dtype and int(ids.max()) == count
    assert ids[0, 0, 0] == 1 and ids[0, 0, 2] == 2  # raster order


def test_a_large_volume_is_measured_without_float_volume_copies():
    shape = (64, 256, 256)
    labels = np.zeros(shape, np.uint8)
    labels[8:56, 40:220, 40:220] = LIVER
    labels[sphere_volume(shape, (30 * SLICE_MM, 100 * 0.7, 100 * 0.7), 15.0, SPACING, SLICE_MM)] = METASTASIS
    labels[sphere_volume(shape, (40 * SLICE_MM, 160 * 0.7, 150 * 0.7), 8.0, SPACING, SLICE_MM)] = CYST
    probability = np.full(shape, 240, np.uint8)
    tracemalloc.start()
    try:
        result, _ = measure_series(labels, SPACING, positions(shape[0]), probability)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(result.lesions) == 2
    # The lesion mask and the id volume (1 byte a voxel each) plus crops; one float64 copy would be 8 bytes.
    assert peak < 2 * labels.nbytes


@pytest.mark.parametrize(("labels", "where", "match"), [
    (np.zeros((8, 8), np.uint8), None, "slices, rows, cols"),
    (np.zeros((2, 8, 8), np.float32), None, "integer"),
    (np.full((2, 8, 8), 5, np.uint8), None, "0..4"),
    (np.zeros((2, 8, 8), np.uint8), [0.0], "one finite position per slice"),
    (np.zeros((3, 8, 8), np.uint8), [0.0, 2.0, 2.0], "no two the same"),
    (np.zeros((3, 8, 8), np.uint8), [0.0, 4.0, 2.0], "sorted"),
    (np.zeros((1, 8, 8), np.uint8), [0.0], "slice_thickness_mm"),
])
def test_bad_volumes_are_refused_with_what_is_accepted(labels, where, match):
    with pytest.raises(InputError, match=match):
        measure_series(labels, SPACING, where if where is not None else positions(labels.shape[0]))


def test_bad_spacing_probability_and_thickness_are_refused():
    labels = np.zeros((2, 4, 4), np.uint8)
    with pytest.raises(InputError, match="spacing"):
        measure_series(labels, (0.7,), positions(2))
    with pytest.raises(InputError, match="uint8"):
        measure_series(labels, SPACING, positions(2), np.zeros((2, 4, 4), np.float32))
    with pytest.raises(InputError, match="shaped like"):
        measure_series(labels, SPACING, positions(2), np.zeros((2, 4, 5), np.uint8))
    with pytest.raises(InputError, match="slice_thickness_mm"):
        measure_series(labels, SPACING, positions(2), slice_thickness_mm=-1.0)


def test_one_slice_with_a_given_thickness():
    labels = np.zeros((1, 6, 6), np.uint8)
    labels[0, 1:3, 1:4] = CYST
    result, _ = measure_series(labels, SPACING, [12.0], slice_thickness_mm=5.0)
    assert result.lesions[0].volume_ml == pytest.approx(6 * SPACING[0] * SPACING[1] * 5.0 / 1000)
